"""The compression space of a teacher: which sub-networks a search may propose.

Per stage, depth and width each take one of a few *levels*, never above the teacher so the weights
can always be inherited, and the block is basic or robust. Two grids: the eighths of the teacher
(depth round(D*j/8), width j/8 of its channels, j = 1..8: what `rcnas search` explores) and the
tabular benchmarks' coarser grid (`SearchSpace.relative`). A *state* is the level index per stage.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from rcnas.cost import arch_cost
from rcnas.errors import BadInput
from rcnas.space.arch import BLOCKS, ROBUST_MIN_PLANES, Arch

State = tuple[tuple[int, int, int], ...]  # per stage: (depth level, width level, block index)


@lru_cache(maxsize=1 << 20)
def _state_macs(space: SearchSpace, state: State) -> int:
    # searches ask for the same states over and over: skip building the Arch each time
    return arch_cost(space.arch(state), space.input_size, space.in_channels, space.num_classes).macs


@lru_cache(maxsize=1 << 20)
def _state_arch(space: SearchSpace, state: State) -> Arch:
    return space._build(state)


@dataclass(frozen=True)
class SearchSpace:
    teacher: Arch
    depth_levels: tuple[tuple[int, ...], ...]   # per stage, ascending
    width_levels: tuple[tuple[int, ...], ...]   # per stage, channels, ascending
    blocks: tuple[str, ...] = BLOCKS
    input_size: int = 32
    in_channels: int = 3
    num_classes: int = 10

    @classmethod
    def eighths(cls, teacher: Arch, input_size: int = 32, in_channels: int = 3, num_classes: int = 10,
                blocks: tuple[str, ...] = BLOCKS) -> SearchSpace:
        depth = tuple(tuple(sorted({max(1, round(d * j / 8)) for j in range(1, 9)})) for d in teacher.depths)
        width = tuple(tuple(sorted({max(1, round(c * j / 8)) for j in range(1, 9)})) for c in teacher.channels)
        return cls(teacher, depth, width, blocks, input_size, in_channels, num_classes)

    @classmethod
    def relative(cls, teacher: Arch, input_size: int = 32, in_channels: int = 3, num_classes: int = 10,
                 width_fractions: tuple[float, ...] = (0.5, 0.75, 1.0),
                 blocks: tuple[str, ...] = ("basic",)) -> SearchSpace:
        """The tabular benchmark's grid, defined relative to the teacher so that it means the same on
        every teacher: per stage depth {1, ceil(D/2), D} and width fractions of the teacher's channels."""
        depth = tuple(tuple(sorted({1, -(-d // 2), d})) for d in teacher.depths)
        width = tuple(tuple(sorted({max(1, round(c * f)) for f in width_fractions})) for c in teacher.channels)
        return cls(teacher, depth, width, blocks, input_size, in_channels, num_classes)

    @classmethod
    def for_task(cls, task) -> SearchSpace:  # task: rcnas.tasks.ResolvedTask
        return cls.eighths(task.teacher_arch, task.input_size, task.in_channels, task.num_classes)

    # --- states and architectures --------------------------------------------------------------
    def initial(self) -> State:
        """The teacher itself (top level of every stage, the teacher's block)."""
        return tuple((len(d) - 1, len(w) - 1, self.blocks.index(b) if b in self.blocks else 0)
                     for d, w, b in zip(self.depth_levels, self.width_levels, self.teacher.blocks))

    def arch(self, state: State) -> Arch:
        return _state_arch(self, state)

    def _build(self, state: State) -> Arch:
        return Arch(tuple(self.depth_levels[i][s[0]] for i, s in enumerate(state)),
                    tuple(self.width_levels[i][s[1]] for i, s in enumerate(state)),
                    tuple(self.blocks[s[2]] for s in state))

    def state_of(self, arch: Arch) -> State:
        """The state of `arch` in this space (a BadInput if the space does not hold it)."""
        try:
            return tuple((self.depth_levels[i].index(arch.depths[i]), self.width_levels[i].index(arch.channels[i]),
                          self.blocks.index(arch.blocks[i])) for i in range(3))
        except ValueError:
            raise BadInput(f"{arch} is not in this search space (depths {self.depth_levels}, "
                           f"channels {self.width_levels}, blocks {self.blocks})") from None

    def fractions(self, state: State) -> tuple[tuple[float, float, float], ...]:
        """Per stage (depth / teacher's, channels / teacher's, robust flag): the state described
        relative to the teacher, the same on every teacher and grid."""
        arch, t = self.arch(state), self.teacher
        return tuple((arch.depths[i] / t.depths[i], arch.channels[i] / t.channels[i],
                      float(arch.blocks[i] == "robust")) for i in range(3))

    def valid(self, state: State) -> bool:
        return all(self.blocks[b] != "robust" or self.width_levels[i][w] >= ROBUST_MIN_PLANES
                   for i, (_, w, b) in enumerate(state))

    def macs(self, state: State) -> int:
        return _state_macs(self, state)

    def size(self) -> int:
        """How many states the space has (valid or not): the product of its levels and blocks."""
        n = 1
        for d, w in zip(self.depth_levels, self.width_levels):
            n *= len(d) * len(w) * len(self.blocks)
        return n

    def all_states(self) -> list[State]:
        per_stage = [list(itertools.product(range(len(d)), range(len(w)), range(len(self.blocks))))
                     for d, w in zip(self.depth_levels, self.width_levels)]
        return [s for s in itertools.product(*per_stage) if self.valid(s)]

    def smallest_macs(self) -> int:
        """The cheapest valid network of the space (the lowest level everywhere, any block)."""
        return min(self.macs(s) for s in itertools.product(
            *[[(0, 0, b) for b in range(len(self.blocks))]] * 3) if self.valid(s))
