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


def test_build_table_extends_a_table_with_seeds_only_after_it_reproduces(tmp_path) -> None:
    """A second build with more seeds evaluates only the new seeds (seed 0 comes from the table, not
    from its store, which is gone), and refuses a table whose recorded seed 0 this code cannot repeat."""
    from rcnas.bench.table_builder import build_table
    from rcnas.errors import RunFailure
    from rcnas.search.evaluator import ProxyConfig
    from rcnas.search.store import Store
    from rcnas.space.arch import Arch
    tiny = ProxyConfig(teacher_epochs=1, train_samples=64, epochs=1, batch_size=32, val_samples=32,
                       val_steps=2, attack_steps=1, lips_samples=8)
    out = tmp_path / "table.json.gz"
    build_table(out, seeds=1, workers=1, proxy=tiny, progress=False, limit=3, check=1)
    first = load_table(out)
    assert first["seeds"] == 1 and [len(r["seeds"]) for r in first["rows"]] == [1, 1, 1]
    (tmp_path / "table.sqlite").unlink()

    build_table(out, seeds=2, workers=1, proxy=tiny, progress=False, limit=3, check=1)
    second = load_table(out)
    assert second["seeds"] == 2 and second["version"].endswith("-s2")
    assert [r["seeds"][0] for r in second["rows"]] == [r["seeds"][0] for r in first["rows"]]
    store, task = Store(tmp_path / "table.sqlite"), resolve(Task("digits", "pgd", "wrn-28-2", "1.0x"))
    for row in second["rows"]:
        arch = Arch.from_dict(row["arch_dict"])
        assert store.get(task.eval_key, arch, f"train:{tiny.key()}", 0) is None  # never evaluated again
        assert store.get(task.eval_key, arch, f"train:{tiny.key()}", 1) is not None

    tampered = json.loads(json.dumps(second))
    tampered["rows"][0]["seeds"][0]["pgd"] += 0.5
    with gzip.open(out, "wt") as f:
        json.dump(tampered, f)
    with pytest.raises(RunFailure, match="at seed 0 now scores"):
        build_table(out, seeds=3, workers=1, proxy=tiny, progress=False, limit=3, check=1)
    assert load_table(out) == tampered  # nothing written
    with pytest.raises(BadInput, match="another proxy"):
        build_table(out, seeds=3, workers=1, proxy=ProxyConfig(), progress=False, limit=3)
