"""The search episode as a `gymnasium.Env`, for any policy that wants the standard interface.

An action is one whole candidate, per stage (depth level, width level, block) on the task's grid —
a `MultiDiscrete([D1, W1, B1, D2, W2, B2, D3, W3, B3])` of the space's level counts. A candidate
that does not fit the budget ends the episode with reward -1 (an invalid network); one already
evaluated costs nothing and returns 0 (the episode is truncated after 4x `evaluations` steps, so a
policy that only repeats itself still ends). Otherwise it is evaluated and the step reward is the
improvement of the best reward so far: the return is the best the search found. The episode itself
is `rcnas.env.episode.SearchEpisode`, the same one the agent's searches run.

The observation: the task's features, progress, the best reward so far, and the last candidate
(per-stage fractions of the teacher, MACs / budget) with its reward.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from rcnas.env.episode import SearchEpisode
from rcnas.env.features import TASK_FEATURES, task_features
from rcnas.search.driver import SearchContext
from rcnas.search.space import SearchSpace, State
from rcnas.errors import BadInput

OBS_DIM = TASK_FEATURES + 2 + 11


class CompressionEnv(gym.Env):
    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, ctx: SearchContext, evaluations: int = 10) -> None:
        super().__init__()
        self.ctx, self.evaluations = ctx, evaluations
        self.space: SearchSpace = ctx.space
        sp = self.space
        self.action_space = gym.spaces.MultiDiscrete(
            [n for i in range(3) for n in (len(sp.depth_levels[i]), len(sp.width_levels[i]), len(sp.blocks))])
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(OBS_DIM,), dtype=np.float32)
        self.episode = SearchEpisode(ctx, [], evaluations)
        self.steps = 0
        self._last: tuple[State, float] | None = None

    def _obs(self) -> np.ndarray:
        ep = self.episode
        last = np.zeros(11, dtype=np.float32)  # per-stage fractions (9), MACs / budget, reward
        if self._last is not None:
            state, reward = self._last
            fr = [f for stage in self.space.fractions(state) for f in stage]
            last = np.array(fr + [self.space.macs(state) / self.ctx.task.budget_macs, reward], dtype=np.float32)
        progress = np.array([ep.n / self.evaluations, ep.best if ep.observed else 0.0], dtype=np.float32)
        return np.clip(np.concatenate([task_features(self.ctx), progress, last]), -10, 10).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode = SearchEpisode(self.ctx, [], self.evaluations)
        self.steps, self._last = 0, None
        return self._obs(), {}

    def step(self, action):
        state: State = tuple(tuple(int(a) for a in action[3 * i: 3 * i + 3]) for i in range(3))  # type: ignore[assignment]
        self.steps += 1
        try:
            arch = self.space.arch(state)
        except BadInput:  # a combination the space cannot build (e.g. a robust block too narrow): invalid
            return self._obs(), -1.0, True, False, {"invalid": True, "arch": None}
        if not self.ctx.fits(state):
            return self._obs(), -1.0, True, False, {"invalid": True, "arch": arch}
        record = self.ctx.evaluate_many([arch])[0]
        reward = self.ctx.reward(record)
        before = self.episode.n
        gain = self.episode.observe(arch, reward)
        self._last = (state, reward)
        info = {"arch": arch, "record": record, "new": self.episode.n > before}
        return self._obs(), gain, self.episode.done, self.steps >= 4 * self.evaluations, info


__all__ = ["OBS_DIM", "CompressionEnv"]
