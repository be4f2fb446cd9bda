"""The search: space and masks, store, driver, searchers, environment and agent (toy evaluator)."""
from __future__ import annotations

import multiprocessing as mp
import random

import pytest

from rcnas.errors import BadInput
from rcnas.search.driver import run_search
import rcnas.agent  # noqa: F401  (registers the agent's searcher)
from rcnas.search.searchers import SEARCHERS, make_searcher
from rcnas.search.table import load_tables
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


def test_the_relative_grid_means_the_same_on_every_teacher() -> None:
    for teacher, depths in (("wrn-16-1", (1, 2)), ("wrn-22-1", (1, 2, 3)), ("wrn-28-2", (1, 2, 4)), ("wrn-10-2", (1,))):
        t = resolve(Task("digits", "pgd", teacher, "1.0x"))
        space = SearchSpace.relative(t.teacher_arch, 8, 1, 10)
        assert space.depth_levels == (depths,) * 3
        for i, c in enumerate(t.teacher_arch.channels):
            assert space.width_levels[i] == (c // 2, 3 * c // 4, c)
        assert space.arch(space.initial()) == t.teacher_arch
        assert space.fractions(space.initial()) == ((1.0, 1.0, 0.0),) * 3
        assert space.state_of(space.arch(space.initial())) == space.initial()


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(BadInput, match="below the smallest sub-network"):
        resolve(Task("digits", "pgd", "wrn-28-2", "1k"))


def _searcher(name: str, ctx, seed: int):
    if name == "transferred":  # a ranking carried over from another table
        return make_searcher(name, ctx, seed, tables=[load_tables()["digits_wrn-28-2_eps0.15"]])
    return make_searcher(name, ctx, seed)


@pytest.mark.parametrize("name", SEARCHERS.names())
@pytest.mark.parametrize("floor", [0.0, 0.8])
def test_every_searcher_respects_the_budget_and_the_floor(name: str, floor: float) -> None:
    ctx = toy_context(Task("digits", "cw", "wrn-16-4", "0.3x"))
    ctx.min_macs = int(floor * ctx.task.budget_macs)
    result = run_search(_searcher(name, ctx, 1), 12, progress=False)
    assert all(t.arch.is_within(ctx.task.teacher_arch) for t in result.trials)
    assert all(ctx.min_macs <= t.record.macs <= ctx.task.budget_macs for t in result.trials)
    assert result.evaluations <= 12


def _table_context(attack: str = "pgd", budget: str = "0.5x", floor: float = 0.0):
    from rcnas.search.driver import SearchContext
    from rcnas.search.table import TableEvaluator
    task = resolve(Task("digits", attack, "wrn-28-2", budget))
    ev = TableEvaluator()
    return SearchContext(task, ev.space(task), ev, Store(":memory:"), reward_name="accuracy",
                         min_macs=int(floor * task.budget_macs))


@pytest.mark.parametrize("name", ["random", "evolution", "tpe", "largest", "transferred", "rcnas"])
def test_searchers_never_repeat_and_stop_once_every_network_is_scored(name: str) -> None:
    """Distinct evaluations are what counts; a search asked for more than the space holds ends after
    scoring all of it (it once ran for hours)."""
    ctx = _table_context(budget="0.12x")
    feasible = ctx.feasible_states()
    assert 5 <= len(feasible) < 40
    result = run_search(_searcher(name, ctx, 0), 1000, progress=False)
    assert result.evaluations == len({t.arch for t in result.trials}) <= len(feasible)
    if name != "evolution":  # evolution may re-propose (never more than 50 asks per evaluation)
        assert all(t.new for t in result.trials) and result.evaluations == len(feasible)


def test_largest_first_and_the_transferred_ranking() -> None:
    ctx = _table_context(attack="cw", budget="0.5x")
    trials = run_search(_searcher("largest", ctx, 0), 10, progress=False).trials
    assert [t.record.macs for t in trials] == sorted((t.record.macs for t in trials), reverse=True)
    assert trials[0].record.macs == max(ctx.space.macs(s) for s in ctx.feasible_states())
    # ranked by the task's own table, the first proposal is that table's optimum for the task
    ctx = _table_context(attack="cw", budget="0.5x")
    first = run_search(_searcher("transferred", ctx, 0), 1, progress=False).best
    best = max(ctx.feasible_states(), key=lambda s: ctx.evaluator.evaluate(ctx.task, ctx.space.arch(s), 0).metrics["cw"])
    assert first.arch == ctx.space.arch(best)


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




def test_search_flags_override_the_task_file_and_the_trial_log_survives_a_resume(tmp_path, capsys) -> None:
    import json
    from rcnas.cli import main
    task = tmp_path / "task.yaml"
    task.write_text("dataset: digits\nattack: pgd\nbudget: 0.5x\n")
    out = tmp_path / "s"
    argv = ["search", "--task", str(task), "--budget", "0.3x", "--attack", "fgsm", "--evaluator", "toy",
            "--searcher", "random", "--evaluations", "5", "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["task"]["attack"], summary["task"]["budget"]) == ("fgsm", "0.3x")  # the flags, not the file
    assert summary["task"]["dataset"] == "digits"  # what no flag named still comes from the file
    first = (out / "trials.jsonl").read_text().splitlines()
    assert [json.loads(line)["trial"] for line in first] == list(range(5))
    assert main(argv[:-4] + ["8", "--out", str(out)]) == 0  # resumed with more evaluations: replayed, not repeated
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in rows] == list(range(8)) and (out / "trials.jsonl").read_text().startswith(first[0])


def test_resolve_says_in_one_line_what_it_assumed(tmp_path, caplog) -> None:
    """Own data gets an eps it never asked for, and a budget above the teacher constrains nothing:
    both are said once, in one line; a built-in dataset inside the budget says nothing."""
    import logging

    import numpy as np

    from rcnas import tasks
    tasks._say_once.cache_clear()
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 3)
    with caplog.at_level(logging.WARNING, logger="rcnas.tasks"):
        resolve(Task("digits"))
        assert not caplog.records
        for _ in range(2):
            resolve(Task(str(path)))
            resolve(Task("digits", budget="2x"))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("\n" not in m for m in said)
    assert "no eps given, assuming 0.03137 (8/255)" in said[0] and "give --eps" in said[0]
    assert "above the teacher" in said[1] and "constrains nothing" in said[1]


def test_a_candidate_at_chance_is_flagged(monkeypatch, caplog) -> None:
    """A shrunken proxy can leave a network predicting one class; its robust scores then rank nothing."""
    import dataclasses
    import logging

    import torch

    import rcnas.evaluate
    from rcnas.search.evaluator import ProxyConfig, TrainEvaluator, at_chance
    balanced = torch.arange(400) % 10  # chance 10%, two standard errors 3 points
    assert at_chance(0.10, balanced) and at_chance(0.12, balanced) and not at_chance(0.14, balanced)
    skewed = torch.tensor([0] * 300 + [1] * 100)
    assert at_chance(0.75, skewed) and not at_chance(0.90, skewed)  # always "0" already scores 75%

    real = rcnas.evaluate.evaluate_robustness
    monkeypatch.setattr(rcnas.evaluate, "evaluate_robustness",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), clean=0.1))
    tiny = ProxyConfig(teacher_epochs=1, train_samples=64, epochs=1, batch_size=32, val_samples=40,
                       val_steps=2, attack_steps=1)
    task = resolve(Task("digits", teacher="wrn-10-1"))
    arch = Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5], ["basic"] * 3)
    with caplog.at_level(logging.WARNING, logger="rcnas.search.evaluator"):
        record = TrainEvaluator(tiny).evaluate(task, arch, seed=0)
    assert record.metrics["clean"] == 0.1
    assert any("10.0% clean after the proxy training, which is chance" in r.getMessage() for r in caplog.records)
