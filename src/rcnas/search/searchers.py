"""Search baselines, all behind the same ask/tell driver as the RL agent (`rcnas`, which registers
itself from `rcnas.agent`): `random` (without replacement), `evolution`, `tpe`, the trivial
`largest` (largest MACs first) and `transferred` (a fixed ranking carried over from other tables),
and heuristic rules scaled to the budget (`uniform`, `last-stage`, `compound`)."""
from __future__ import annotations

import random
from collections import deque

from rcnas.errors import BadInput
from rcnas.registry import Registry
from rcnas.search.driver import SearchContext, Searcher
from rcnas.search.space import State
from rcnas.search.store import Record
from rcnas.space.arch import Arch

SEARCHERS: Registry = Registry("searcher")


def _random_state(ctx: SearchContext, rng: random.Random, tries: int = 20000) -> State:
    """Uniform over the states that fit (rejection sampling on the closed-form cost)."""
    sp = ctx.space
    for _ in range(tries):
        state = tuple((rng.randrange(len(sp.depth_levels[i])), rng.randrange(len(sp.width_levels[i])),
                       rng.randrange(len(sp.blocks))) for i in range(3))
        if ctx.fits(state):
            return state
    raise BadInput(f"could not sample a network within the budget of {ctx.task.budget_macs} MACs; raise --budget")


def candidate_states(ctx: SearchContext, seed: int, size: int = 4096) -> list[State]:
    """What a searcher that ranks candidates chooses from: every state that fits, when the space is
    small enough to enumerate, else `size` distinct ones drawn uniformly (seeded)."""
    feasible = ctx.feasible_states()
    if feasible is not None:
        return list(feasible)
    rng, seen = random.Random(seed), set()
    for _ in range(20 * size):
        seen.add(_random_state(ctx, rng))
        if len(seen) == size:
            break
    return sorted(seen)


class OrderedSearcher(Searcher):
    """Proposes candidates in a fixed order, each once; finished when the order is used up."""

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        self._order: list[State] | None = None
        self._next = 0

    def order(self) -> list[State]:
        raise NotImplementedError

    def ask(self) -> Arch:
        if self._order is None:
            self._order = self.order()
        state = self._order[self._next]
        self._next += 1
        return self.ctx.space.arch(state)

    def finished(self) -> bool:
        if self._order is None:
            self._order = self.order()
        return self._next >= len(self._order)


@SEARCHERS.register("random")
class RandomSearcher(Searcher):
    """Uniform random search without replacement over the networks that fit the budget."""
    name = "random"
    batch = 8

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        self.rng = random.Random(seed)
        feasible = ctx.feasible_states()
        self.order = None if feasible is None else self.rng.sample(feasible, len(feasible))
        self.proposed: set[State] = set()

    def ask(self) -> Arch:
        if self.order is not None:
            return self.ctx.space.arch(self.order.pop())
        for _ in range(1000):  # a large space: rejection sampling, skipping what was proposed
            state = _random_state(self.ctx, self.rng)
            if state not in self.proposed:
                break
        self.proposed.add(state)
        return self.ctx.space.arch(state)

    def finished(self) -> bool:
        return self.order is not None and not self.order


@SEARCHERS.register("largest")
class LargestFirst(OrderedSearcher):
    """The trivial baseline a budget-filling objective must beat: the largest networks first (by
    MACs; ties in a seeded random order)."""
    name = "largest"

    def order(self) -> list[State]:
        rng, sp = random.Random(self.seed), self.ctx.space
        states = candidate_states(self.ctx, self.seed)
        keys = {s: (sp.macs(s), rng.random()) for s in states}
        return sorted(states, key=keys.__getitem__, reverse=True)


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
        self.proposed: set[State] = set()

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
            if child != state and child not in self.proposed and self.ctx.fits(child):  # type: ignore[arg-type]
                return child  # type: ignore[return-value]
        return self._fresh()

    def _fresh(self) -> State:
        """A random state not proposed yet (any random state once none is left)."""
        for _ in range(1000):
            state = _random_state(self.ctx, self.rng)
            if state not in self.proposed:
                return state
        return state

    def ask(self) -> Arch:
        if len(self.population) < self.size:
            state = self._fresh()
        else:
            contenders = self.rng.sample(list(self.population), self.sample)
            state = self._mutate(max(contenders, key=lambda p: p[1])[0])
        arch = self.ctx.space.arch(state)
        self.pending[arch] = state
        self.proposed.add(state)
        return arch

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        self.population.append((self.pending.pop(arch), reward))


@SEARCHERS.register("tpe")
class TPESearcher(Searcher):
    """Optuna's TPE through its ask/tell interface, without replacement: an over-budget proposal is told
    -1 unevaluated, a proposal already scored is told its known reward and TPE asked again; after 100
    such proposals in a row, a random network not yet scored is enqueued (a space nearly used up)."""
    name = "tpe"

    def __init__(self, ctx: SearchContext, seed: int = 0) -> None:
        super().__init__(ctx, seed)
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="maximize",
                                         sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
        self.rng = random.Random(seed)
        self.pending: dict[Arch, list] = {}

    def _unscored(self) -> State:
        feasible = self.ctx.feasible_states()
        left = [s for s in feasible if self.ctx.space.arch(s) not in self.ctx.seen] if feasible is not None else []
        return self.rng.choice(left) if left else _random_state(self.ctx, self.rng)

    def ask(self) -> Arch:
        sp = self.ctx.space
        for attempt in range(10000):
            if attempt and attempt % 100 == 0:
                state = self._unscored()
                self.study.enqueue_trial({f"{k}{i}": v for i in range(3) for k, v in zip("dwb", state[i])})
            trial = self.study.ask()
            state = tuple((trial.suggest_int(f"d{i}", 0, len(sp.depth_levels[i]) - 1),
                           trial.suggest_int(f"w{i}", 0, len(sp.width_levels[i]) - 1),
                           trial.suggest_int(f"b{i}", 0, len(sp.blocks) - 1)) for i in range(3))
            if not self.ctx.fits(state):
                self.study.tell(trial, -1.0)
                continue
            arch = sp.arch(state)
            if arch in self.ctx.seen:
                self.study.tell(trial, self.ctx.reward(self.ctx.seen[arch]))
                continue
            self.pending.setdefault(arch, []).append(trial)
            return arch
        raise BadInput("TPE found no network within the budget; raise --budget")

    def tell(self, arch: Arch, reward: float, record: Record) -> None:
        for trial in self.pending.pop(arch, []):
            self.study.tell(trial, reward)


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
        ok = [s for s in self.candidates() if self.ctx.fits(s)]
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


@SEARCHERS.register("transferred")
class TransferredRanking(OrderedSearcher):
    """The fixed ranking a meta-learnt agent must beat, or it learnt nothing beyond one: candidates in
    the order of their mean percentile rank on other tables (the training tables). On each table, the
    networks within the same fraction of its teacher's MACs are ranked by the task's metric; a candidate
    takes the rank of its nearest network there (per-stage depth and width relative to the teacher).
    Ties are broken in a seeded random order. `tables`: default, every shipped table of another dataset."""
    name = "transferred"

    def __init__(self, ctx: SearchContext, seed: int = 0, tables=None) -> None:
        super().__init__(ctx, seed)
        self.tables = tables

    def order(self) -> list[State]:
        import numpy as np

        from rcnas.search.table import load_tables
        task, sp = self.ctx.task, self.ctx.space
        tables = self.tables if self.tables is not None else [
            t for t in load_tables().values() if t.dataset != task.dataset]
        if not tables:
            raise BadInput("the transferred ranking needs tables of other task settings; none is given")
        states = candidate_states(self.ctx, self.seed)
        mine = np.array([[f for stage in sp.fractions(s) for f in stage[:2]] for s in states])
        fraction = task.budget_macs / task.teacher_macs
        floor = self.ctx.min_macs / task.teacher_macs
        score = np.zeros(len(states))
        for table in tables:
            keys = [k for k, r in table.rows.items() if floor <= r["macs"] / table.teacher_macs <= fraction]
            keys = keys or list(table.rows)
            values = np.array([table.means[k][self.ctx.metric] for k in keys])
            pct = values.argsort().argsort() / max(1, len(keys) - 1)
            theirs = np.array([table.shapes[k] for k in keys])
            nearest = ((mine[:, None, :] - theirs[None, :, :]) ** 2).sum(-1).argmin(1)
            score += pct[nearest]
        rng = random.Random(self.seed)
        keys = {s: (score[i], rng.random()) for i, s in enumerate(states)}
        return sorted(states, key=keys.__getitem__, reverse=True)


def make_searcher(name: str, ctx: SearchContext, seed: int = 0, **kwargs) -> Searcher:
    return SEARCHERS.get(name)(ctx, seed=seed, **kwargs)
