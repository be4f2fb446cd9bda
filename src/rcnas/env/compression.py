"""The compression episode as a `gymnasium.Env`.

An episode starts at the teacher. Each of `steps` steps applies one action per stage (move depth
down 0-2 levels, width down 0-3 levels, pick the block type) — a `MultiDiscrete([3, 4, 2] * 3)`.
After the last step the network is evaluated and the reward returned; earlier steps return 0.
The observation re-encodes the current network per stage [stride, depth and width relative to the
teacher, robust flag] plus LIPS, cost (MACs relative to budget and to the teacher), progress and
a small task embedding. `action_mask(prefix)` gives the masks (no choice that can never meet the
budget); an action outside the masks ends the episode with reward -1 (an invalid network).
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from rcnas.search.driver import SearchContext
from rcnas.search.space import HEAD_SIZES, SearchSpace, State
from rcnas.tasks import ATTACK_KINDS, attack_kind

STAGE_FEATURES = 4
GLOBAL_FEATURES = 5 + len(ATTACK_KINDS) + 4
OBS_DIM = 3 * STAGE_FEATURES + GLOBAL_FEATURES
STRIDES = (1, 2, 2)


def observation(ctx: SearchContext, state: State, t: int, steps: int) -> np.ndarray:
    space, task = ctx.space, ctx.task
    arch = space.arch(state)
    stages = []
    for i in range(3):
        stages += [STRIDES[i] / 2, arch.depths[i] / space.teacher.depths[i],
                   arch.channels[i] / space.teacher.channels[i], float(arch.blocks[i] == "robust")]
    macs = ctx.macs(arch)
    kind = attack_kind(task.attack)
    task_embedding = [float(kind == k) for k in ATTACK_KINDS] + [
        task.eps * 10, task.input_size / 64, task.in_channels / 3, math.log(task.num_classes) / math.log(200)]
    glob = [math.log1p(ctx.lips(arch)) / 5, macs / task.budget_macs, macs / task.teacher_macs,
            task.budget_macs / task.teacher_macs, t / steps]
    return np.clip(np.asarray(stages + glob + task_embedding, dtype=np.float32), -10, 10)


class CompressionEnv(gym.Env):
    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, ctx: SearchContext, steps: int = 3) -> None:
        super().__init__()
        self.ctx, self.steps = ctx, steps
        self.space: SearchSpace = ctx.space
        self.action_space = gym.spaces.MultiDiscrete(list(HEAD_SIZES) * 3)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(OBS_DIM,), dtype=np.float32)
        self.state: State = self.space.initial()
        self.t = 0

    def _obs(self) -> np.ndarray:
        return observation(self.ctx, self.state, self.t, self.steps)

    def action_mask(self, prefix: tuple[int, ...] = ()) -> np.ndarray:
        """Allowed choices of the next head, given this step's choices so far."""
        steps_left = self.steps - self.t - 1
        return np.array(self.space.mask(self.state, prefix, steps_left, self.ctx.task.budget_macs))

    def legal(self, action: tuple[int, ...]) -> bool:
        return all(self.action_mask(action[:i])[action[i]] for i in range(len(action)))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state, self.t = self.space.initial(), 0
        return self._obs(), {"arch": self.space.arch(self.state)}

    def step(self, action):
        action = tuple(int(a) for a in action)
        if not self.legal(action):
            return self._obs(), -1.0, True, False, {"invalid": True, "arch": self.space.arch(self.state)}
        self.state = self.space.apply(self.state, action)
        self.t += 1
        arch = self.space.arch(self.state)
        if self.t < self.steps:
            return self._obs(), 0.0, False, False, {"arch": arch}
        record = self.ctx.evaluate_many([arch])[0]
        return self._obs(), self.ctx.reward(record), True, False, {"arch": arch, "record": record}
