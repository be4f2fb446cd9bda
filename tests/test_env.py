"""The episode (one whole search) as a gymnasium environment, and what the agent sees."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rcnas.env import CompressionEnv, SearchEpisode
from rcnas.env.features import GLOBAL_FEATURES, KERNEL_FEATURES, STAGE_FEATURES, candidate_features, kernel_features
from rcnas.tasks import Task
from rcnas.testing import toy_context


def test_env_passes_gymnasium_checker() -> None:
    env = CompressionEnv(toy_context(), evaluations=5)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    # any action is answered: one the space cannot build (here a robust block narrower than it allows)
    # ends the episode with -1, like one over the budget, instead of raising
    env.reset(seed=0)
    env.action_space.seed(0)
    unbuildable = 0
    for action in (env.action_space.sample() for _ in range(300)):
        _, reward, terminated, _, info = env.step(action)
        assert np.isfinite(reward)
        unbuildable += info.get("arch", 0) is None
        if terminated:
            env.reset()
    assert unbuildable > 0  # the sampled actions did reach the case


def _state_of(env: CompressionEnv, arch) -> np.ndarray:
    return np.array([x for stage in env.space.state_of(arch) for x in stage])


def test_an_episode_returns_the_best_it_found_and_repeats_cost_nothing() -> None:
    ctx = toy_context(Task("digits", "pgd", "wrn-28-2", "0.5x"))
    env = CompressionEnv(ctx, evaluations=3)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    sp = ctx.space
    draws = (tuple((int(rng.integers(len(sp.depth_levels[i]))), int(rng.integers(len(sp.width_levels[i]))),
                    int(rng.integers(len(sp.blocks)))) for i in range(3)) for _ in range(2000))
    fitting = list(dict.fromkeys(s for s in draws if ctx.fits(s)))
    first = np.array([x for stage in fitting[0] for x in stage])
    _, r1, done, _, info = env.step(first)
    assert info["new"] and not done and r1 == pytest.approx(ctx.reward(info["record"]))
    calls = ctx.evaluator.calls
    _, r_repeat, done, _, info = env.step(first)
    assert r_repeat == 0.0 and not info["new"] and ctx.evaluator.calls == calls and not done
    total, rewards = r1, [r1]
    for state in fitting[1:3]:
        _, r, done, _, info = env.step(np.array([x for stage in state for x in stage]))
        total += r
        rewards.append(ctx.reward(info["record"]))
    assert done and total == pytest.approx(max(rewards)) and env.episode.curve()[-1] == pytest.approx(max(rewards))


def test_an_over_budget_candidate_ends_the_episode_with_minus_one() -> None:
    env = CompressionEnv(toy_context(Task("digits", "pgd", "wrn-28-2", "0.1x")), evaluations=3)
    env.reset(seed=0)
    teacher = _state_of(env, env.ctx.task.teacher_arch)
    _, reward, done, _, info = env.step(teacher)
    assert done and reward == -1.0 and info["invalid"]


def test_the_features_describe_candidates_relative_to_teacher_and_budget() -> None:
    ctx = toy_context(Task("digits", "cw", "wrn-28-2", "0.5x"))
    teacher = ctx.space.initial()
    ep = SearchEpisode(ctx, [teacher], 1)
    stages, glob = candidate_features(ctx, [teacher])
    assert stages.shape == (1, 3, STAGE_FEATURES) and glob.shape == (1, GLOBAL_FEATURES)
    assert stages[0, :, 1].tolist() == [1.0, 1.0, 1.0] and stages[0, :, 2].tolist() == [1.0, 1.0, 1.0]
    assert glob[0, 0] == pytest.approx(2.0) and glob[0, 1] == pytest.approx(1.0)  # MACs / budget, / teacher
    assert kernel_features(ctx, [teacher]).shape == (1, KERNEL_FEATURES)
    assert ep.features[0] is candidate_features(ctx, [teacher])[0]  # cached: searches share the arrays
