"""The tabular evaluator and the benchmark harness, on a table made from the toy evaluator."""
from __future__ import annotations

import gzip
import json

import pytest

from rcnas.errors import BadInput
from rcnas.search.table import METRICS, TableEvaluator, load_table, table_space
from rcnas.tasks import Task, resolve
from rcnas.testing import ToyEvaluator


@pytest.fixture(scope="module")
def toy_table(tmp_path_factory):
    """The table's grid scored by the toy evaluator, in the shipped file format."""
    task = resolve(Task("digits", "pgd", "wrn-28-2", "1.0x"))
    toy = ToyEvaluator()
    rows = []
    for state in table_space(task).all_states():
        arch = table_space(task).arch(state)
        seeds = [{m: toy.evaluate(task, arch, s).metrics[m] for m in METRICS} for s in range(2)]
        rows.append({"arch": arch.key(), "arch_dict": arch.to_dict(), "lips": toy.lips(task, arch),
                     "seeds": seeds, "seconds": 0.0})
    path = tmp_path_factory.mktemp("table") / "table.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"format": 1, "version": "toy", "dataset": "digits", "teacher": "wrn-28-2", "eps": 0.15,
                   "seeds": 2, "metrics": list(METRICS), "rows": rows}, f)
    return path


def test_table_serves_means_and_its_space(toy_table) -> None:
    ev = TableEvaluator(toy_table)
    task = resolve(Task("digits", "cw", "wrn-28-2", "0.4x"))
    space = ev.space(task)
    assert len(space.all_states()) == len(load_table(toy_table)["rows"]) == 216
    arch = space.arch(space.initial())
    rec = ev.evaluate(task, arch, 0)
    seeds = rec.extra["seeds"]
    assert rec.metrics["cw"] == pytest.approx(sum(s["cw"] for s in seeds) / 2)
    best, value = ev.optimum(task, "cw")
    all_in_budget = [ev.evaluate(task, space.arch(s), 0) for s in space.all_states()]
    assert value == max(r.metrics["cw"] for r in all_in_budget if r.macs <= task.budget_macs)
    best_record = ev.evaluate(task, best, 0)
    assert best_record.metrics["cw"] == value and best_record.macs <= task.budget_macs
    with pytest.raises(BadInput, match="covers digits"):
        ev.space(resolve(Task("digits", "pgd", "wrn-16-2", "0.5x")))


def test_missing_or_bad_table_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BadInput, match="build-table"):
        load_table(tmp_path / "none.json.gz")
    (tmp_path / "bad.json.gz").write_bytes(b"nope")
    with pytest.raises(BadInput, match="not a readable table"):
        load_table(tmp_path / "bad.json.gz")


def test_search_bench_regret_is_zero_at_the_optimum_and_decreases(toy_table, tmp_path, monkeypatch) -> None:
    from rcnas.bench import suites
    monkeypatch.setitem(suites._TABLE, "ev", TableEvaluator(toy_table))
    monkeypatch.setattr(suites, "SEARCH_METHODS", ("random", "evolution"))
    md = suites.bench_search(out=str(tmp_path), seeds=3, quick=True)
    result = json.loads((tmp_path / "search.json").read_text())
    for method, curve in result["curves"].items():
        assert all(a >= b - 1e-12 for a, b in zip(curve["mean"], curve["mean"][1:])), method  # best-so-far
        assert min(curve["mean"]) >= -1e-12  # nobody beats the exact optimum
    assert "regret@5" in md.read_text() and (tmp_path / "search_regret.png").stat().st_size > 1000


def test_an_agent_meta_trained_on_the_table_is_benchmarked_under_its_own_name(tmp_path, monkeypatch) -> None:
    """meta-train on the shipped table's clean settings (seconds), then the adaptation bench with it:
    its results get their own files and the held-out PGD settings are marked as such."""
    from rcnas import api
    from rcnas.bench import suites
    from rcnas.tasks import Buffers
    held_out = Task("digits", "pgd", "wrn-28-2", "0.5x")
    buffers = Buffers(datasets=("digits",), attacks=("clean",), eps_scales=(1.0,), teachers=("digits:wrn-28-2",),
                      budgets=("0.5x",), held_out=(held_out,))
    agent_dir = tmp_path / "agent-clean"
    api.meta_train(buffers, agent_dir, episodes=8, evaluator="table", progress=False)
    agent, _ = api.load_agent(str(agent_dir))
    assert suites._full_key(Task("digits", "clean", "wrn-28-2", "0.5x")) in agent.baselines
    assert suites._full_key(held_out) not in agent.baselines
    monkeypatch.setattr(suites, "ADAPTATION_TASKS", (held_out, Task("digits", "clean", "wrn-28-2", "0.5x")))
    md = suites.bench_adaptation(out=str(tmp_path), seeds=1, quick=True, agent=str(agent_dir))
    assert md.name == "adaptation-agent-clean.md"
    rows = json.loads((tmp_path / "adaptation-agent-clean.json").read_text())["rows"]
    assert [r["in_meta_training"] for r in rows] == ["no (held out)", "yes"]
    assert not (tmp_path / "adaptation.md").exists()
