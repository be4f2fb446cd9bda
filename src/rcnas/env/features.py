"""What the agent sees of a task setting and of a candidate, described relative to the teacher and the
budget so that it means the same on every dataset, teacher and grid.

- Per stage (the BiLSTM's sequence): [stride, depth / teacher's, channels / teacher's, robust flag,
  the teacher's depth and widen factor of the stage] (the last two say how coarse a fraction is).
- Per candidate: [MACs / budget, MACs / teacher] and the task: [budget / teacher, the floor, the
  teacher's LIPS under the task's attack (the paper's LIPS: how the attack and data reach the agent),
  attack kind, eps, input size, channels, classes].
- For the within-search model (a Gaussian process): per stage depth and width fractions and the
  robust flag, and MACs / budget, all in [0, 1].
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from rcnas.search.driver import SearchContext
from rcnas.search.space import SearchSpace, State
from rcnas.space.arch import STAGE_BASE
from rcnas.tasks import ATTACK_KINDS, ResolvedTask, attack_kind

STRIDES = (1, 2, 2)
STAGE_FEATURES = 6
TASK_FEATURES = 3 + len(ATTACK_KINDS) + 4
GLOBAL_FEATURES = 2 + TASK_FEATURES
KERNEL_FEATURES = 10


def task_features(ctx: SearchContext) -> np.ndarray:
    task = ctx.task
    kind = attack_kind(task.attack)
    lips = ctx.lips(task.teacher_arch)
    return np.array([task.budget_macs / task.teacher_macs, ctx.min_macs / task.budget_macs,
                     math.log1p(max(lips, 0.0)) / 5, *(float(kind == k) for k in ATTACK_KINDS),
                     task.eps * 10 / 3, task.input_size / 32, task.in_channels / 3,
                     math.log(task.num_classes) / math.log(200)], dtype=np.float32)


def candidate_features(ctx: SearchContext, states: list[State]) -> tuple[np.ndarray, np.ndarray]:
    """(per-stage features (N, 3, STAGE_FEATURES), global features (N, GLOBAL_FEATURES)), float32.
    Cached: the searches of one task setting share the arrays (treat them as read-only)."""
    return _candidate_features(ctx.space, ctx.task, tuple(task_features(ctx)), tuple(states))


@lru_cache(maxsize=64)
def _candidate_features(sp: SearchSpace, task: ResolvedTask, task_row: tuple[float, ...],
                        states: tuple[State, ...]) -> tuple[np.ndarray, np.ndarray]:
    t = sp.teacher
    teacher_stage = [(t.depths[i] / 4, t.channels[i] / STAGE_BASE[i] / 4) for i in range(3)]
    stages = np.empty((len(states), 3, STAGE_FEATURES), dtype=np.float32)
    macs = np.empty(len(states), dtype=np.float64)
    for n, state in enumerate(states):
        for i, (d, c, robust) in enumerate(sp.fractions(state)):
            stages[n, i] = (STRIDES[i] / 2, d, c, robust, *teacher_stage[i])
        macs[n] = sp.macs(state)
    glob = np.concatenate([np.stack([macs / task.budget_macs, macs / task.teacher_macs], 1),
                           np.broadcast_to(np.array(task_row), (len(states), TASK_FEATURES))], 1)
    return stages, np.clip(glob, -10, 10).astype(np.float32)


def kernel_features(ctx: SearchContext, states: list[State]) -> np.ndarray:
    """(N, KERNEL_FEATURES) in [0, 1]: where the within-search model measures similarity (cached)."""
    return _kernel_features(ctx.space, ctx.task.budget_macs, tuple(states))


@lru_cache(maxsize=64)
def _kernel_features(sp: SearchSpace, budget: int, states: tuple[State, ...]) -> np.ndarray:
    return np.array([[f for stage in sp.fractions(s) for f in stage] + [sp.macs(s) / budget] for s in states])


__all__ = ["GLOBAL_FEATURES", "KERNEL_FEATURES", "STAGE_FEATURES", "TASK_FEATURES", "candidate_features",
           "kernel_features", "task_features"]
