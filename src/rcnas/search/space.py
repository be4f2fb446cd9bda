"""The compression space of a teacher and the agent's action masks.

Per stage, depth and width each take one of a few *levels*: by default the eighths of the teacher
(depth round(D*j/8), width j/8 of the teacher's channels, j = 1..8 — fine enough to matter, never
above the teacher so inheritance is always possible). A compression step moves each stage down by a
few levels and picks its block type. Masks (AMC's "action wall") forbid any choice after which no
completion of the episode can meet the budget: MACs grow monotonically with every stage's depth and
width, so a prefix is feasible iff the cheapest configuration still reachable is within budget.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from rcnas.cost import arch_cost
from rcnas.space.arch import BLOCKS, ROBUST_MIN_PLANES, Arch

DEPTH_MOVES = 3   # move down 0, 1 or 2 depth levels per step
WIDTH_MOVES = 4   # move down 0..3 width levels per step
HEADS = ("depth", "width", "block")
HEAD_SIZES = (DEPTH_MOVES, WIDTH_MOVES, len(BLOCKS))

State = tuple[tuple[int, int, int], ...]  # per stage: (depth level, width level, block index)


@lru_cache(maxsize=1 << 20)
def _state_macs(space: SearchSpace, state: State) -> int:
    # masks ask for the same few hundred states over and over: skip building the Arch each time
    return arch_cost(space.arch(state), space.input_size, space.in_channels, space.num_classes).macs


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
    def for_task(cls, task) -> SearchSpace:  # task: rcnas.tasks.ResolvedTask
        return cls.eighths(task.teacher_arch, task.input_size, task.in_channels, task.num_classes)

    # --- states and architectures --------------------------------------------------------------
    def initial(self) -> State:
        """The teacher itself (top level of every stage, the teacher's block)."""
        return tuple((len(d) - 1, len(w) - 1, self.blocks.index(b) if b in self.blocks else 0)
                     for d, w, b in zip(self.depth_levels, self.width_levels, self.teacher.blocks))

    def arch(self, state: State) -> Arch:
        return Arch(tuple(self.depth_levels[i][s[0]] for i, s in enumerate(state)),
                    tuple(self.width_levels[i][s[1]] for i, s in enumerate(state)),
                    tuple(self.blocks[s[2]] for s in state))

    def valid(self, state: State) -> bool:
        return all(self.blocks[b] != "robust" or self.width_levels[i][w] >= ROBUST_MIN_PLANES
                   for i, (_, w, b) in enumerate(state))

    def macs(self, state: State) -> int:
        return _state_macs(self, state)

    def all_states(self) -> list[State]:
        per_stage = [list(itertools.product(range(len(d)), range(len(w)), range(len(self.blocks))))
                     for d, w in zip(self.depth_levels, self.width_levels)]
        return [s for s in itertools.product(*per_stage) if self.valid(s)]

    def smallest_macs(self) -> int:
        return min(self.macs(s) for s in self._block_variants(((0, 0, 0),) * 3, None))

    # --- one compression step ------------------------------------------------------------------
    @staticmethod
    def apply(state: State, action: tuple[int, ...]) -> State:
        """Apply a flat action [d1, w1, b1, d2, w2, b2, d3, w3, b3] (moves down, block index)."""
        return tuple((max(0, d - action[3 * i]), max(0, w - action[3 * i + 1]), action[3 * i + 2])
                     for i, (d, w, _) in enumerate(state))

    def _block_variants(self, state: State, fixed_blocks: tuple[int | None, ...] | None):
        choices = [range(len(self.blocks)) if fixed_blocks is None or fixed_blocks[i] is None
                   else [fixed_blocks[i]] for i in range(3)]
        for blocks in itertools.product(*choices):
            s = tuple((d, w, b) for (d, w, _), b in zip(state, blocks))
            if self.valid(s):
                yield s

    def feasible(self, state: State, prefix: tuple[int, ...], steps_left: int, budget: int) -> bool:
        """Can the step being decided (its first len(prefix) choices fixed) and `steps_left` further
        steps still end within `budget`? Free moves go as far down as they can."""
        cheapest, blocks = [], []
        for i, (d, w, _) in enumerate(state):
            chosen = prefix[3 * i: 3 * i + 3]
            d_move = chosen[0] if len(chosen) > 0 else DEPTH_MOVES - 1
            w_move = chosen[1] if len(chosen) > 1 else WIDTH_MOVES - 1
            d_min = max(0, d - d_move - (DEPTH_MOVES - 1) * steps_left)
            w_min = max(0, w - w_move - (WIDTH_MOVES - 1) * steps_left)
            cheapest.append((d_min, w_min, 0))
            blocks.append(chosen[2] if len(chosen) > 2 and steps_left == 0 else None)
        return any(self.macs(s) <= budget for s in self._block_variants(tuple(cheapest), tuple(blocks)))

    def mask(self, state: State, prefix: tuple[int, ...], steps_left: int, budget: int) -> list[bool]:
        """Which choices of the next head (after `prefix`) keep the episode feasible and valid."""
        head = len(prefix) % 3
        out = []
        for choice in range(HEAD_SIZES[head]):
            if head == 2 and choice >= len(self.blocks):  # a space with fewer block types
                out.append(False)
                continue
            ok = self.feasible(state, prefix + (choice,), steps_left, budget)
            if ok and head == 2 and self.blocks[choice] == "robust":
                # every intermediate network must be buildable: a robust block needs >= 16 channels
                i = len(prefix) // 3
                w = max(0, state[i][1] - prefix[-1])
                ok = self.width_levels[i][w] >= ROBUST_MIN_PLANES
            out.append(ok)
        return out
