"""One ask/tell loop for every searcher (the RL agent and all baselines), over one cached and
budgeted evaluator, so that comparisons count exactly the same evaluations."""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from rcnas.search.rewards import REWARDS, RewardInput
from rcnas.errors import BadInput, RunFailure
from rcnas.search.evaluator import Evaluator, metric_for, safe_evaluate
from rcnas.search.space import SearchSpace, State
from rcnas.search.store import Record, Store
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask

logger = logging.getLogger(__name__)


ENUMERABLE = 50_000  # spaces up to this many states are enumerated (exhaustion is then detected exactly)


class LocalExecutor:
    """Evaluates candidates one after another in this process."""
    name = "local"

    def map(self, evaluator: Evaluator, task: ResolvedTask, archs: Sequence[Arch], seed: int) -> list[Record]:
        return [safe_evaluate(evaluator, task, a, seed) for a in archs]


@dataclass
class SearchContext:
    """Everything a searcher may know about its task, and the budgeted evaluation service."""
    task: ResolvedTask
    space: SearchSpace
    evaluator: Evaluator
    store: Store
    seed: int = 0
    reward_name: str = "budget"
    executor: object = field(default_factory=LocalExecutor)
    seen: dict[Arch, Record] = field(default_factory=dict)
    new_evaluations: int = 0
    min_macs: int = 0   # a floor on the candidates' MACs (benchmarks' ">= 80% of the budget" view)

    def __post_init__(self) -> None:
        self.reward_fn = REWARDS.get(self.reward_name)
        self.metric = metric_for(self.task.attack)
        self._teacher_accuracy: float | None = None
        self._feasible: list[State] | None = None

    @property
    def evaluations(self) -> int:
        return len(self.seen)

    def fits(self, state: State) -> bool:
        """The one test of a candidate: buildable, within the budget (and above the floor)."""
        sp = self.space
        return sp.valid(state) and self.min_macs <= sp.macs(state) <= self.task.budget_macs

    def feasible_states(self) -> list[State] | None:
        """Every state that fits, in the space's order, when the space is small enough to enumerate
        (a tabular grid); None for a large space (the teacher's eighths: millions of states)."""
        if self._feasible is None and self.space.size() <= ENUMERABLE:
            self._feasible = [s for s in self.space.all_states() if self.fits(s)]
        return self._feasible

    def macs(self, arch: Arch) -> int:
        from rcnas.cost import arch_cost
        t = self.task
        return arch_cost(arch, t.input_size, t.in_channels, t.num_classes).macs

    def evaluate_many(self, archs: Sequence[Arch]) -> list[Record]:
        """Store first; the misses are computed (through the executor) and stored."""
        key, proxy = self.task.eval_key, self.evaluator.proxy_key
        found = {a: self.seen.get(a) or self.store.get(key, a, proxy, self.seed) for a in dict.fromkeys(archs)}
        missing = [a for a, r in found.items() if r is None]
        if missing:
            for arch, record in zip(missing, self.executor.map(self.evaluator, self.task, missing, self.seed)):
                self.store.put(key, proxy, self.seed, record)
                found[arch] = self.store.get(key, arch, proxy, self.seed) or record
                self.new_evaluations += 1
        self.seen.update(found)  # type: ignore[arg-type]
        return [found[a] for a in archs]  # type: ignore[misc]

    def teacher_accuracy(self) -> float:
        """The teacher's proxy accuracy under the task's metric: the reward's reference. Stored like
        any candidate but not counted toward the search's evaluations."""
        if self._teacher_accuracy is None:
            arch = self.task.teacher_arch
            key, proxy = self.task.eval_key, self.evaluator.proxy_key
            record = self.store.get(key, arch, proxy, self.seed)
            if record is None:
                record = safe_evaluate(self.evaluator, self.task, arch, self.seed)
                self.store.put(key, proxy, self.seed, record)
            self._teacher_accuracy = record.metrics.get(self.metric, 0.0) if record.status == "ok" else 0.0
        return self._teacher_accuracy

    def reward(self, record: Record) -> float:
        return float(self.reward_fn(RewardInput(
            accuracy=record.metrics.get(self.metric, 0.0), teacher_accuracy=self.teacher_accuracy(),
            macs=record.macs, budget_macs=self.task.budget_macs, teacher_macs=self.task.teacher_macs,
            ok=record.status == "ok")))

    def lips(self, arch: Arch) -> float:
        """The agent's LIPS state feature, kept in the store: a resumed search reads it back instead of
        attacking the inherited network again (seconds per state on a CPU), on any device alike."""
        key, name = f"{self.task.eval_key}|attack={self.task.attack}", f"lips|{self.evaluator.proxy_key}"
        value = self.store.get_feature(key, arch, name)
        if value is None:  # the first writer wins: a process that lost the race reads its value back
            self.store.put_feature(key, arch, name, self.evaluator.lips(self.task, arch))
            value = self.store.get_feature(key, arch, name)
        return value


class Searcher(ABC):
    """Proposes architectures (`ask`) and learns from their rewards (`tell`)."""
    name = "base"
    batch = 1  # how many asks may be evaluated together (by a parallel executor)

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        self.ctx, self.seed = ctx, seed

    @abstractmethod
    def ask(self) -> Arch: ...

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        """Default: learn nothing."""

    def finished(self) -> bool:
        """A searcher with nothing more to propose (a heuristic rule) returns True."""
        return False


@dataclass(frozen=True)
class Trial:
    index: int
    arch: Arch
    reward: float
    record: Record
    new: bool = True   # the first time this search scored `arch` (False: a re-proposal, no evaluation)


@dataclass
class SearchResult:
    best: Trial
    trials: list[Trial]
    evaluations: int
    new_evaluations: int
    task: ResolvedTask
    extra: dict = field(default_factory=dict)   # what the caller adds (searcher, seed, timings...)

    def summary(self) -> dict:
        t = self.task
        return self.extra | {"arch": self.best.arch.to_dict(), "macs": self.best.record.macs, "budget_macs": t.budget_macs,
                "teacher_macs": t.teacher_macs, "reward": self.best.reward,
                "metrics": self.best.record.metrics, "evaluations": self.evaluations,
                "new_evaluations": self.new_evaluations}


def run_search(searcher: Searcher, max_evaluations: int, *, progress: bool = True,
               on_trial: Callable[[Trial], None] | None = None) -> SearchResult:
    """Ask, evaluate (store first), tell, until `max_evaluations` distinct candidates were scored."""
    ctx = searcher.ctx
    if max_evaluations < 1:
        raise BadInput(f"--evaluations must be >= 1, got {max_evaluations}")
    ctx.teacher_accuracy()
    trials: list[Trial] = []
    scored: set[Arch] = set()
    asks, max_asks = 0, 50 * max_evaluations  # a searcher that only repeats itself must still stop
    feasible = ctx.feasible_states()
    if feasible == []:
        raise BadInput(f"no network of this search space fits between {ctx.min_macs} and {ctx.task.budget_macs} "
                       "MACs; raise --budget")
    limit = min(max_evaluations, len(feasible)) if feasible is not None else max_evaluations
    if feasible is not None and len(feasible) < max_evaluations:
        logger.info("only %d architectures fit the budget: the search ends after scoring them all", len(feasible))
    bar = tqdm(total=limit, desc=f"search[{searcher.name}]", disable=not progress, leave=False)
    while ctx.evaluations < limit and asks < max_asks and not searcher.finished():
        k = max(1, min(searcher.batch, limit - ctx.evaluations))
        archs = [searcher.ask() for _ in range(k)]
        asks += k
        before = ctx.evaluations
        for arch, record in zip(archs, ctx.evaluate_many(archs)):
            reward = ctx.reward(record)
            searcher.tell(arch, reward, record)
            trial = Trial(len(trials), arch, reward, record, new=arch not in scored)
            scored.add(arch)
            trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
        bar.update(ctx.evaluations - before)
        best = max(t.reward for t in trials)
        bar.set_postfix(best=f"{best:.3f}", new=ctx.new_evaluations)
    bar.close()
    valid = [t for t in trials if t.record.status == "ok" and t.record.macs <= ctx.task.budget_macs]
    if not valid:
        raise RunFailure("the search found no candidate within budget that evaluated successfully")
    best = max(valid, key=lambda t: (t.reward, -t.index))
    assert best.record.macs <= ctx.task.budget_macs and math.isfinite(best.reward)
    return SearchResult(best, trials, ctx.evaluations, ctx.new_evaluations, ctx.task)
