"""The episode: one whole search of `evaluations` distinct candidate evaluations on one task setting.

A searcher (the agent, through the ask/tell driver) or a gymnasium policy (`CompressionEnv`) proposes
complete candidates; the episode keeps which candidates are left (a search never proposes one twice),
what each evaluation returned, and the best-so-far curve a search is judged by. Its step reward is
the improvement of the best reward so far, so an episode's return is the best it found.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from rcnas.env.features import candidate_features, kernel_features
from rcnas.search.driver import SearchContext
from rcnas.search.space import State
from rcnas.space.arch import Arch


class SearchEpisode:
    def __init__(self, ctx: SearchContext, states: list[State], evaluations: int) -> None:
        self.ctx, self.states, self.evaluations = ctx, list(states), evaluations
        self.archs = [ctx.space.arch(s) for s in self.states]
        self.position = {a: i for i, a in enumerate(self.archs)}
        self.available = np.ones(len(self.states), dtype=bool)
        self.observed: list[tuple[State, float]] = []   # every evaluation, in order
        self.best = float("-inf")

    # --- what a policy sees ------------------------------------------------------------------
    @cached_property
    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """The candidates' (per-stage, global) features (see rcnas.env.features)."""
        return candidate_features(self.ctx, self.states)

    @cached_property
    def kernel(self) -> np.ndarray:
        return kernel_features(self.ctx, self.states)

    @property
    def n(self) -> int:
        return len(self.observed)

    @property
    def done(self) -> bool:
        """`evaluations` made, or every candidate of the pool (when there is one) evaluated."""
        return self.n >= self.evaluations or (len(self.states) > 0 and not self.available.any())

    def evaluated(self) -> tuple[np.ndarray, np.ndarray]:
        """(pool positions (n,), rewards (n,)) of the evaluations so far, in order (pool candidates only:
        what the agent learns from)."""
        seen = np.array([self.position[self.ctx.space.arch(s)] for s, _ in self.observed], dtype=np.int64)
        return seen, np.array([r for _, r in self.observed], dtype=np.float64)

    # --- what happens ------------------------------------------------------------------------
    def observe(self, arch: Arch, reward: float) -> float:
        """Record an evaluation (a repeat records nothing); return the step reward (the improvement
        of the best reward so far; the first evaluation's reward itself)."""
        i = self.position.get(arch)
        if i is not None:
            if not self.available[i]:
                return 0.0
            self.available[i] = False
            state = self.states[i]
        else:  # a candidate from outside the pool (a gymnasium policy may propose any state)
            state = self.ctx.space.state_of(arch)
            if any(s == state for s, _ in self.observed):
                return 0.0
        self.observed.append((state, reward))
        gain = reward if self.best == float("-inf") else max(0.0, reward - self.best)
        self.best = max(self.best, reward)
        return gain

    def curve(self) -> list[float]:
        """Best reward so far after each evaluation."""
        return list(np.maximum.accumulate([r for _, r in self.observed])) if self.observed else []


__all__ = ["SearchEpisode"]
