"""Searchers, all behind the same ask/tell driver: the RL agent (`rcnas`), search baselines
(`random`, `evolution`, `tpe`) and heuristic rules scaled to the budget (`uniform`, `last-stage`,
`compound`)."""
from __future__ import annotations

import random
from collections import deque

import torch

from rcnas.errors import BadInput
from rcnas.registry import Registry
from rcnas.search.driver import SearchContext, Searcher
from rcnas.search.space import State
from rcnas.search.store import Record
from rcnas.space.arch import Arch

SEARCHERS: Registry = Registry("searcher")


def _random_state(ctx: SearchContext, rng: random.Random, tries: int = 20000) -> State:
    """Uniform over the valid states within budget (rejection sampling on the closed-form cost)."""
    sp, budget = ctx.space, ctx.task.budget_macs
    for _ in range(tries):
        state = tuple((rng.randrange(len(sp.depth_levels[i])), rng.randrange(len(sp.width_levels[i])),
                       rng.randrange(len(sp.blocks))) for i in range(3))
        if sp.valid(state) and sp.macs(state) <= budget:
            return state
    raise BadInput(f"could not sample a network within the budget of {budget} MACs; raise --budget")


@SEARCHERS.register("random")
class RandomSearcher(Searcher):
    name = "random"
    batch = 8

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        self.rng = random.Random(seed)

    def ask(self) -> Arch:
        return self.ctx.space.arch(_random_state(self.ctx, self.rng))


@SEARCHERS.register("evolution")
class EvolutionSearcher(Searcher):
    """Regularized evolution (Real et al. 2019): tournament selection, one mutation, oldest dies."""
    name = "evolution"

    def __init__(self, ctx: SearchContext, seed: int = 0, population: int = 10, sample: int = 3) -> None:
        super().__init__(ctx, seed)
        self.rng = random.Random(seed)
        self.population: deque[tuple[State, float]] = deque(maxlen=population)
        self.size, self.sample = population, sample
        self.pending: dict[Arch, State] = {}

    def _mutate(self, state: State) -> State:
        sp = self.ctx.space
        for _ in range(1000):
            i, field = self.rng.randrange(3), self.rng.randrange(3)
            stage = list(state[i])
            if field == 2:
                stage[2] = 1 - stage[2] if len(sp.blocks) == 2 else stage[2]
            else:
                n = len(sp.depth_levels[i] if field == 0 else sp.width_levels[i])
                stage[field] = min(n - 1, max(0, stage[field] + self.rng.choice((-1, 1))))
            child = tuple(tuple(stage) if j == i else s for j, s in enumerate(state))
            if child != state and sp.valid(child) and sp.macs(child) <= self.ctx.task.budget_macs:
                return child  # type: ignore[return-value]
        return _random_state(self.ctx, self.rng)

    def ask(self) -> Arch:
        if len(self.population) < self.size:
            state = _random_state(self.ctx, self.rng)
        else:
            contenders = self.rng.sample(list(self.population), self.sample)
            state = self._mutate(max(contenders, key=lambda p: p[1])[0])
        arch = self.ctx.space.arch(state)
        self.pending[arch] = state
        return arch

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        self.population.append((self.pending.pop(arch), reward))


@SEARCHERS.register("tpe")
class TPESearcher(Searcher):
    """Optuna's TPE through its ask/tell interface; an over-budget proposal is told -1 unevaluated."""
    name = "tpe"

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.study = optuna.create_study(direction="maximize",
                                         sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
        self.pending: dict[Arch, list] = {}

    def ask(self) -> Arch:
        sp = self.ctx.space
        for _ in range(10000):
            trial = self.study.ask()
            state = tuple((trial.suggest_int(f"d{i}", 0, len(sp.depth_levels[i]) - 1),
                           trial.suggest_int(f"w{i}", 0, len(sp.width_levels[i]) - 1),
                           trial.suggest_int(f"b{i}", 0, len(sp.blocks) - 1)) for i in range(3))
            if sp.valid(state) and sp.macs(state) <= self.ctx.task.budget_macs:
                arch = sp.arch(state)
                self.pending.setdefault(arch, []).append(trial)
                return arch
            self.study.tell(trial, -1.0)
        raise BadInput("TPE found no network within the budget; raise --budget")

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        self.study.tell(self.pending[arch].pop(0), reward)


class RuleSearcher(Searcher):
    """A heuristic: one network, the largest its rule allows within the budget."""
    batch = 1

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        self.done = False

    def candidates(self) -> list[State]:
        raise NotImplementedError

    def ask(self) -> Arch:
        sp, budget = self.ctx.space, self.ctx.task.budget_macs
        ok = [s for s in self.candidates() if sp.valid(s) and sp.macs(s) <= budget]
        if not ok:
            raise BadInput(f"the {self.name} rule has no network within {budget} MACs; raise --budget")
        self.done = True
        return sp.arch(max(ok, key=self.preference))

    def preference(self, state: State) -> tuple:
        """Among the rule's networks within budget, the one it prefers (default: the largest)."""
        return (self.ctx.space.macs(state), state)

    def finished(self) -> bool:
        return self.done


def _level_at(levels: tuple[int, ...], value: float) -> int:
    """Index of the largest level <= value (at least the first)."""
    return max([i for i, v in enumerate(levels) if v <= value + 1e-9] or [0])


@SEARCHERS.register("uniform")
class UniformRule(RuleSearcher):
    """Shrink every stage by the same fraction of the teacher's depth and width."""
    name = "uniform"

    def candidates(self) -> list[State]:
        sp, t = self.ctx.space, self.ctx.space.teacher
        block = [sp.blocks.index(b) for b in t.blocks]
        out = []
        for jd in range(1, 9):
            for jw in range(1, 9):
                out.append(tuple((_level_at(sp.depth_levels[i], t.depths[i] * jd / 8),
                                  _level_at(sp.width_levels[i], t.channels[i] * jw / 8), block[i])
                                 for i in range(3)))
        return out


@SEARCHERS.register("last-stage")
class LastStageRule(RuleSearcher):
    """WRN-34-R (Huang et al. 2021): keep stages 1-2, shrink stage 3. Where even the smallest stage 3
    leaves the network over budget (small inputs make stage 3 cheap), stages 1-2 shrink uniformly, as
    little as possible, and stage 3 takes what remains."""
    name = "last-stage"

    def candidates(self) -> list[State]:
        sp, t = self.ctx.space, self.ctx.space.teacher
        out = []
        for j in range(1, 9):
            first = [(_level_at(sp.depth_levels[i], t.depths[i] * j / 8),
                      _level_at(sp.width_levels[i], t.channels[i] * j / 8), sp.blocks.index(t.blocks[i]))
                     for i in range(2)]
            out += [tuple(first) + ((d, w, sp.blocks.index(t.blocks[2])),)
                    for d in range(len(sp.depth_levels[2])) for w in range(len(sp.width_levels[2]))]
        return out

    def preference(self, state: State) -> tuple:
        # stages 1-2 as large as possible first, then stage 3
        sp = self.ctx.space
        return (sp.width_levels[0][state[0][1]], sp.depth_levels[0][state[0][0]], sp.macs(state), state)


@SEARCHERS.register("compound")
class CompoundRule(RuleSearcher):
    """RobustResNet compound scaling (Huang et al. 2023): depths in ratio 2:2:1, widths in ratio
    2:2.5:1, total depth : total widen factor = 7:3, scaled to the budget (capped at the teacher)."""
    name = "compound"

    def candidates(self) -> list[State]:
        sp, t = self.ctx.space, self.ctx.space.teacher
        out = []
        for k in range(1, 400):
            a = k / 20                                   # depth scale
            b = 5 * a * 3 / (7 * 5.5)                    # width scale: sum depths / sum widths = 7 / 3
            depths = [min(t.depths[i], max(1, round(a * r))) for i, r in enumerate((2, 2, 1))]
            widths = [min(t.widths[i], b * r) for i, r in enumerate((2, 2.5, 1))]
            out.append(tuple((_level_at(sp.depth_levels[i], depths[i]),
                              _level_at(sp.width_levels[i], widths[i] * (16, 32, 64)[i]),
                              sp.blocks.index(t.blocks[i])) for i in range(3)))
        return out


@SEARCHERS.register("rcnas")
class AgentSearcher(Searcher):
    """The RL agent: each ask samples one masked compression episode; every `episodes_per_update`
    tells, one policy-gradient update (fine-tuning a meta-trained agent, or training from scratch)."""
    name = "rcnas"

    def __init__(self, ctx: SearchContext, seed: int = 0, agent=None, learn: bool = True) -> None:
        super().__init__(ctx, seed)
        from rcnas.agent.agent import Agent
        self.agent = agent if agent is not None else Agent(seed=seed)
        self.batch = self.agent.cfg.episodes_per_update
        self.learn = learn
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list = []
        self.done: list[tuple] = []
        self.history: list[dict[str, float]] = []

    def ask(self) -> Arch:
        episode = self.agent.sample_episode(self.ctx, self.generator)
        self.pending.append(episode)
        return episode.arch

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        i = next(i for i, e in enumerate(self.pending) if e.arch == arch)
        self.done.append((self.pending.pop(i), reward))
        if len(self.done) == self.batch and not self.pending:
            if self.learn:
                stats = self.agent.update([e for e, _ in self.done], [r for _, r in self.done],
                                          self.ctx.task.task.key())
                self.history.append(stats)
            self.done = []


def make_searcher(name: str, ctx: SearchContext, seed: int = 0, **kwargs) -> Searcher:
    return SEARCHERS.get(name)(ctx, seed=seed, **kwargs)
