"""The search: space and masks, store, driver, searchers, environment and agent (toy evaluator)."""
from __future__ import annotations

import multiprocessing as mp
import random

import numpy as np
import pytest
import torch

from rcnas.errors import BadInput
from rcnas.search.driver import run_search
from rcnas.search.searchers import SEARCHERS, make_searcher
from rcnas.search.space import SearchSpace
from rcnas.search.store import Record, Store
from rcnas.space.arch import Arch
from rcnas.tasks import Buffers, Task, resolve
from rcnas.testing import ToyEvaluator, toy_context


def test_eighths_space_never_exceeds_teacher_and_is_fine_enough() -> None:
    t = resolve(Task("digits", "pgd", "wrn-28-2", "0.5x"))
    space = SearchSpace.for_task(t)
    assert space.width_levels[0] == (4, 8, 12, 16, 20, 24, 28, 32)  # steps of 1/8 of the teacher
    assert space.depth_levels == ((1, 2, 3, 4),) * 3
    assert space.arch(space.initial()) == t.teacher_arch
    for s in random.Random(0).sample(space.all_states(), 200):
        assert space.arch(s).is_within(t.teacher_arch)


@pytest.mark.parametrize("budget", ["0.1x", "0.3x", "0.5x", "0.8x"])
def test_masks_always_leave_a_feasible_path_that_meets_the_budget(budget: str) -> None:
    ctx = toy_context(Task("digits", "pgd", "wrn-28-2", budget))
    space, b = ctx.space, ctx.task.budget_macs
    rng = random.Random(0)
    for _ in range(30):
        state = space.initial()
        for t in range(3):
            action: tuple[int, ...] = ()
            for _head in range(9):
                mask = space.mask(state, action, 2 - t, b)
                assert any(mask)
                action += (rng.choice([i for i, ok in enumerate(mask) if ok]),)
            state = space.apply(state, action)
            assert space.valid(state)
        assert space.macs(state) <= b


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(BadInput, match="below the smallest sub-network"):
        resolve(Task("digits", "pgd", "wrn-28-2", "1k"))


@pytest.mark.parametrize("name", SEARCHERS.names())
def test_every_searcher_respects_the_budget(name: str) -> None:
    ctx = toy_context(Task("digits", "cw", "wrn-16-4", "0.3x"))
    result = run_search(make_searcher(name, ctx, seed=1), 12, progress=False)
    assert all(t.arch.is_within(ctx.task.teacher_arch) for t in result.trials)
    assert result.best.record.macs <= ctx.task.budget_macs
    assert result.evaluations <= 12


@pytest.mark.parametrize("name", ["random", "evolution", "tpe", "rcnas"])
def test_resumed_search_repeats_no_evaluation_and_ends_the_same(tmp_path, name: str) -> None:
    store = tmp_path / "store.sqlite"
    first = run_search(make_searcher(name, toy_context(store_path=store), seed=3), 10, progress=False)
    assert first.new_evaluations == first.evaluations == 10
    ctx = toy_context(store_path=store)
    again = run_search(make_searcher(name, ctx, seed=3), 10, progress=False)
    assert again.new_evaluations == 0 and ctx.evaluator.calls == 0
    assert [t.arch for t in again.trials] == [t.arch for t in first.trials]
    assert again.best.arch == first.best.arch


def test_a_resumed_agent_search_reads_its_state_features_back(tmp_path, monkeypatch) -> None:
    """The agent's LIPS feature (an attack on the inherited network) is kept in the store with the
    evaluations: replaying a finished search computes none of it again."""
    store = tmp_path / "store.sqlite"
    ctx = toy_context(store_path=store)
    computed: list[Arch] = []
    real = ctx.evaluator.lips
    monkeypatch.setattr(ctx.evaluator, "lips", lambda task, arch: computed.append(arch) or real(task, arch))
    first = run_search(make_searcher("rcnas", ctx, seed=3), 6, progress=False)
    assert computed and len(computed) == len(set(computed))  # each state's feature computed once
    ctx = toy_context(store_path=store)
    monkeypatch.setattr(ctx.evaluator, "lips", lambda task, arch: pytest.fail(f"LIPS computed again for {arch}"))
    again = run_search(make_searcher("rcnas", ctx, seed=3), 6, progress=False)
    assert [t.arch for t in again.trials] == [t.arch for t in first.trials]
    assert Store(store).get_feature(f"{ctx.task.eval_key}|attack=pgd", computed[0], "lips|toy:v1") == \
        real(ctx.task, computed[0])


def test_search_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    runs = [run_search(make_searcher("rcnas", toy_context(), seed=s), 8, progress=False) for s in (0, 0, 1)]
    assert [t.arch for t in runs[0].trials] == [t.arch for t in runs[1].trials]
    assert [t.arch for t in runs[0].trials] != [t.arch for t in runs[2].trials]


def test_store_keys_and_schema(tmp_path) -> None:
    st = Store(tmp_path / "s.sqlite")
    arch = Arch((1, 1, 1), (8, 16, 32))
    rec = Record(arch, {"pgd": 0.5}, 100, 10)
    assert st.put("k", "p", 0, rec) and not st.put("k", "p", 0, rec)
    assert st.get("k", arch, "p", 0) == rec and st.get("k", arch, "p", 1) is None
    (tmp_path / "bad.sqlite").write_text("not a database at all" * 100)
    with pytest.raises(BadInput, match="not a usable rcnas store"):
        Store(tmp_path / "bad.sqlite")


def _writer(path: str, offset: int, n: int) -> None:
    st = Store(path)
    for i in range(n):
        arch = Arch((1, 1, 1), (1 + (i + offset) % 40, 16, 32))
        st.put("k", "p", i // 40, Record(arch, {"pgd": float(i)}, i, i))


def test_two_processes_write_one_store(tmp_path) -> None:
    path = str(tmp_path / "shared.sqlite")
    Store(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, o, 80)) for o in (0, 7)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    st = Store(path)
    assert len(st) == 80  # the same 80 keys from both writers, each stored once, none corrupted
    assert all(r.status == "ok" for r in st.records("k"))


def test_env_passes_gymnasium_checker() -> None:
    from gymnasium.utils.env_checker import check_env

    from rcnas.env import CompressionEnv
    env = CompressionEnv(toy_context())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    total, done = 0.0, False
    while not done:
        action = tuple(int(np.flatnonzero(env.action_mask(()))[0]) for _ in range(0))
        prefix: tuple[int, ...] = ()
        for _ in range(9):
            prefix += (int(np.flatnonzero(env.action_mask(prefix))[-1]),)
        obs, reward, done, _, info = env.step(np.array(prefix))
        total += reward
        del action
    assert info["record"].macs <= env.ctx.task.budget_macs and total > 0


def test_illegal_action_ends_with_minus_one() -> None:
    from rcnas.env import CompressionEnv
    env = CompressionEnv(toy_context(Task("digits", "pgd", "wrn-28-2", "0.1x")))
    env.reset(seed=0)
    _, reward, done, _, info = env.step(np.zeros(9, dtype=int))  # keep the teacher for 3 steps: never fits
    for _ in range(2):
        if not done:
            _, reward, done, _, info = env.step(np.zeros(9, dtype=int))
    assert done and reward == -1.0 and info.get("invalid")


def test_agent_learns_on_the_toy_task() -> None:
    """REINFORCE from scratch improves the mean reward of its episodes on a fixed task."""
    from rcnas.agent.agent import Agent, AgentConfig
    ctx = toy_context(Task("digits", "pgd", "wrn-28-2", "0.5x"))
    agent = Agent(AgentConfig(lr=1e-2, episodes_per_update=8), seed=0)
    gen = torch.Generator().manual_seed(0)
    means = []
    for _ in range(25):
        eps = [agent.sample_episode(ctx, gen) for _ in range(8)]
        rewards = [ctx.reward(r) for r in ctx.evaluate_many([e.arch for e in eps])]
        agent.update(eps, rewards, "t")
        means.append(float(np.mean(rewards)))
    assert np.mean(means[-5:]) > np.mean(means[:5]) + 0.02


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_agent_save_load_round_trip(tmp_path, algo: str) -> None:
    from rcnas.agent.agent import Agent, AgentConfig
    ctx = toy_context()
    agent = Agent(AgentConfig(algo=algo, episodes_per_update=2), seed=0)
    gen = torch.Generator().manual_seed(0)
    eps = [agent.sample_episode(ctx, gen) for _ in range(2)]
    agent.update(eps, [0.5, 0.7], "t")
    agent.save(tmp_path / "a")
    loaded, _ = Agent.load(tmp_path / "a")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert agent.sample_episode(ctx, g1).arch == loaded.sample_episode(ctx, g2).arch
    assert loaded.updates == 1 and loaded.baselines == agent.baselines
    (tmp_path / "a" / "agent.safetensors").write_bytes(b"garbage")
    with pytest.raises(BadInput, match="missing or corrupt"):
        Agent.load(tmp_path / "a")


def test_buffers_never_sample_a_held_out_task() -> None:
    b = Buffers(teachers=("wrn-28-2",), attacks=("pgd",), budgets=("0.5x", "0.4x"), eps_scales=(1.0,),
                held_out=(Task("digits", "pgd", "wrn-28-2", "0.5x"),))
    rng = random.Random(0)
    seen = {b.sample(rng, {"digits": 0.15}).budget for _ in range(50)}
    assert seen == {"0.4x"}
    with pytest.raises(BadInput, match="held out"):
        Buffers(teachers=("wrn-28-2",), attacks=("pgd",), budgets=("0.5x",), eps_scales=(1.0,),
                held_out=(Task("digits", "pgd", "wrn-28-2", "0.5x"),)).sample(rng, {"digits": 0.15})


def test_toy_evaluator_counts_calls() -> None:
    ev = ToyEvaluator()
    ctx = toy_context()
    ctx.evaluator = ev
    ctx.evaluate_many([ctx.task.teacher_arch] * 3)
    assert ev.calls == 1


def test_agent_searches_a_space_with_one_block_type() -> None:
    """The tabular space has basic blocks only: the block head is masked to it."""
    from rcnas.search.space import SearchSpace
    ctx = toy_context()
    ctx.space = SearchSpace(ctx.task.teacher_arch, ((1, 2, 4),) * 3, ((16, 32), (32, 64), (64, 128)), ("basic",),
                            ctx.task.input_size, ctx.task.in_channels, ctx.task.num_classes)
    result = run_search(make_searcher("rcnas", ctx, seed=0), 6, progress=False)
    assert all(b == "basic" for t in result.trials for b in t.arch.blocks)
    assert result.best.record.macs <= ctx.task.budget_macs
