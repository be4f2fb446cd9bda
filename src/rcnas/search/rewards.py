"""Rewards: named and swappable. The paper says only that the reward balances accuracy,
compression and budget; these are our candidates (compare them with `rcnas bench`).

Every reward sees the candidate's accuracy under the task's attack relative to the teacher's
(`ratio`, which makes rewards comparable across tasks), its MACs, the budget and the teacher's MACs.
A failed candidate, or one over budget, gets -1.
"""
from __future__ import annotations

from dataclasses import dataclass

from rcnas.registry import Registry

REWARDS: Registry = Registry("reward")


@dataclass(frozen=True)
class RewardInput:
    accuracy: float        # candidate's accuracy under the task's attack (validation split)
    teacher_accuracy: float
    macs: int
    budget_macs: int
    teacher_macs: int
    ok: bool = True

    @property
    def ratio(self) -> float:
        return self.accuracy / max(self.teacher_accuracy, 1e-3)


def _guard(fn):
    def reward(x: RewardInput) -> float:
        if not x.ok or x.macs > x.budget_macs:
            return -1.0
        return fn(x)
    reward.__doc__ = fn.__doc__
    return reward


@REWARDS.register("n2n")
@_guard
def n2n(x: RewardInput) -> float:
    """N2N (Ashok et al. 2018): (A / A_teacher) * C (2 - C), C = fraction of the teacher's MACs saved."""
    c = 1.0 - x.macs / x.teacher_macs
    return x.ratio * c * (2.0 - c)


@REWARDS.register("budget")
@_guard
def budget(x: RewardInput) -> float:
    """[choice, default] A / A_teacher + 0.1 (MACs / budget - 1): accuracy first, and a small push to
    use the budget, because inherited short proxies over-rate very small networks."""
    return x.ratio + 0.1 * (x.macs / x.budget_macs - 1.0)


@REWARDS.register("accuracy")
@_guard
def accuracy(x: RewardInput) -> float:
    """A / A_teacher within the budget."""
    return x.ratio
