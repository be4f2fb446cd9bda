"""The tabular benchmarks (format, serving, regret, the builder) and the search/adaptation harness."""
from __future__ import annotations

import gzip
import itertools
import json
import math

import pytest

from rcnas.errors import BadInput
from rcnas.search.table import TableEvaluator, load_table, load_tables
from rcnas.tasks import Task, resolve
from rcnas.testing import write_toy_table


@pytest.fixture(scope="module")
def toy_tables(tmp_path_factory):
    """Two toy tables of different teachers (grids of 216 and 729 networks) in one directory."""
    d = tmp_path_factory.mktemp("tables")
    write_toy_table(d, "digits", "wrn-16-1", 0.15)
    write_toy_table(d, "digits", "wrn-22-1", 0.15)
    return d


def test_a_table_serves_means_its_grid_and_only_its_setting(toy_tables) -> None:
    ev = TableEvaluator(toy_tables)
    task = resolve(Task("digits", "cw", "wrn-22-1", "0.4x", 0.15))
    space = ev.space(task)
    assert space.depth_levels == ((1, 2, 3),) * 3 and space.width_levels[2] == (32, 48, 64)
    assert len(space.all_states()) == len(ev.table_for(task).rows) == 729
    rec = ev.evaluate(task, space.arch(space.initial()), 0)
    assert rec.metrics["cw"] == pytest.approx(sum(s["cw"] for s in rec.extra["seeds"]) / 2)
    with pytest.raises(BadInput, match="no table covers digits / wrn-16-2"):
        ev.space(resolve(Task("digits", "pgd", "wrn-16-2", "0.5x")))
    with pytest.raises(BadInput, match="no table covers"):  # same teacher, another eps
        ev.space(resolve(Task("digits", "pgd", "wrn-22-1", "0.5x", 0.1)))


def test_the_format_1_table_is_read_with_its_grid_and_costs() -> None:
    from rcnas.cost import arch_cost
    from rcnas.space.arch import Arch
    table = load_tables()["digits_wrn-28-2_eps0.15"]
    assert table.data["format"] == 2 and table.data["grid"]["channels"][0] == [16, 32]
    row = next(iter(table.rows.values()))
    assert row["macs"] == arch_cost(Arch.from_dict(row["arch_dict"]), 8, 1, 10).macs
    assert table.teacher_macs == arch_cost(Arch.wrn(28, 2), 8, 1, 10).macs


def test_every_shipped_table_is_complete_and_its_teacher_is_in_it() -> None:
    for name, table in load_tables().items():
        task = resolve(Task(table.dataset, "pgd", table.teacher, "1.0x", table.eps))
        space = table.space(task)
        assert len(table.rows) == len(space.all_states()), name
        assert space.arch(space.initial()).key() in table.rows, name
        assert all(len(r["seeds"]) == table.data["seeds"] >= 2 for r in table.rows.values()), name


def test_missing_or_bad_table_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BadInput, match="build-table"):
        load_table(tmp_path / "none.json.gz")
    (tmp_path / "bad.json.gz").write_bytes(b"nope")
    with pytest.raises(BadInput, match="not a readable table"):
        load_table(tmp_path / "bad.json.gz")
    with gzip.open(tmp_path / "old.json.gz", "wt") as f:
        json.dump({"format": 7, "rows": []}, f)
    with pytest.raises(BadInput, match="unknown format"):
        load_table(tmp_path / "old.json.gz")


def test_normalised_regret_is_0_at_the_optimum_1_at_the_median_and_views_filter(toy_tables) -> None:
    from rcnas.bench.tabular import TableTask
    table = load_tables(toy_tables)["digits_wrn-22-1_eps0.15"]
    task = resolve(Task("digits", "pgd", "wrn-22-1", "0.5x", 0.15))
    whole, top = TableTask(table, task, "all"), TableTask(table, task, ">=80%")
    assert whole.regret(whole.optimum) == 0 and whole.regret(whole.median) == 1
    assert len(top.values) < len(whole.values) and top.optimum <= whole.optimum
    ctx = top.context(TableEvaluator({table.name: table}))
    assert all(0.8 * task.budget_macs <= ctx.space.macs(s) <= task.budget_macs for s in ctx.feasible_states())


@pytest.mark.slow
def test_search_and_adaptation_benches_on_a_held_out_table(toy_tables, tmp_path, monkeypatch) -> None:
    """An agent meta-trained on one toy table is benchmarked on the other (held out): both views, every
    method, regret never below the optimum, curves that only improve, the criteria and plots written."""
    from rcnas.agent import AgentConfig
    from rcnas.agent.meta import meta_train
    from rcnas.bench.tabular import SEARCH_METHODS, bench_adaptation, bench_search
    from rcnas.tasks import Buffers
    agent_dir = tmp_path / "agent"
    meta_train(Buffers(tables=("digits_wrn-16-1_eps0.15",), attacks=("pgd", "cw"), budgets=("0.5x",)),
               agent_dir, TableEvaluator(toy_tables), episodes=16, agent_cfg=AgentConfig(searches_per_update=4),
               progress=False)
    monkeypatch.setenv("RCNAS_TABLES", str(toy_tables))
    md = bench_search(out=str(tmp_path), seeds=2, evaluations=4, agent=str(agent_dir),
                      table=["digits_wrn-22-1_eps0.15"])
    result = json.loads((tmp_path / "search-agent.json").read_text())
    assert result["meta"]["held_out_tables"] == ["digits_wrn-22-1_eps0.15"]
    assert {(r["view"], r["method"]) for r in result["rows"]} == {(v, m) for v in ("all", ">=80%") for m in SEARCH_METHODS}
    for name, curve in result["curves"].items():
        mean = [m for m in curve["mean"] if not math.isnan(m)]
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(mean)), name  # best so far only improves
        assert min(mean, default=0) >= -1e-12, name  # nobody beats the exact optimum
    assert len(result["criteria"]) == 2 and "at_most_half" in result["criteria"][0]
    assert "Normalised regret" in md.read_text() and (tmp_path / "search-agent_regret_all.png").stat().st_size > 1000
    bench_adaptation(out=str(tmp_path), seeds=1, evaluations=5, agent=str(agent_dir), table=["digits_wrn-22-1_eps0.15"])
    rows = json.loads((tmp_path / "adaptation-agent.json").read_text())["rows"]
    assert [r["view"] for r in rows] == ["all", ">=80%"] and all(r["searches"] > 0 for r in rows)


def test_the_tables_summary_states_each_tables_size_cost_and_noise_floor(toy_tables, tmp_path, monkeypatch) -> None:
    from rcnas.bench.tabular import bench_tables
    monkeypatch.setenv("RCNAS_TABLES", str(toy_tables))
    bench_tables(out=str(tmp_path))
    rows = json.loads((tmp_path / "tables.json").read_text())["rows"]
    assert [(r["table"], r["architectures"]) for r in rows] == [("digits_wrn-16-1_eps0.15", 216),
                                                                 ("digits_wrn-22-1_eps0.15", 729)]
    for r in rows:  # the toy seeds are noisy copies of one ranking: they agree, but not perfectly
        assert 0.3 < r["seed_spearman_pgd"] < 1.0 and r["evaluation_hours"] >= 0


def _tiny_spec(**kw):
    from rcnas.bench.table_builder import TableSpec
    from rcnas.search.evaluator import ProxyConfig
    tiny = ProxyConfig(teacher_epochs=1, train_samples=64, epochs=1, batch_size=32, val_samples=32,
                       val_steps=2, attack_steps=1, lips_samples=8)
    return TableSpec("digits", "wrn-10-1", 0.15, teacher_epochs=1, width_fractions=(0.5, 1.0), proxy_config=tiny, **kw)


@pytest.mark.slow
def test_build_tables_resumes_extends_with_seeds_and_refuses_another_teacher(tmp_path, monkeypatch) -> None:
    """A table of 8 networks: built with 1 seed, extended to 2 seeds without evaluating seed 0 again (even
    from a lost store: the table's rows are adopted when the teacher is the same), refused when the
    table was built on another teacher."""
    from rcnas.bench import table_builder
    monkeypatch.setenv("RCNAS_CACHE", str(tmp_path / "cache"))
    spec = _tiny_spec()
    out = tmp_path / "tables"
    table_builder.build_tables([spec], seeds=1, workers=1, out_dir=out, store=tmp_path / "a.sqlite", progress=False)
    first = load_table(out / f"{spec.name}.json.gz")
    assert len(first.rows) == 8 and first.data["seeds"] == 1 and first.data["failed"] == 0
    assert all(len(r["seeds"]) == 1 for r in first.rows.values())

    # a lost store: seed 0 comes from the table (same teacher), only seed 1 is left to evaluate
    assert table_builder.plan_tables([spec], seeds=2, out_dir=out, store=tmp_path / "b.sqlite") == {spec.name: 8}
    table_builder.build_tables([spec], seeds=2, workers=1, out_dir=out, store=tmp_path / "b.sqlite", progress=False)
    second = load_table(out / f"{spec.name}.json.gz")
    assert second.data["seeds"] == 2 and second.version.endswith("-s2")
    assert {k: r["seeds"][0] for k, r in second.rows.items()} == {k: r["seeds"][0] for k, r in first.rows.items()}
    assert {k: r["seeds"][0] for k, r in second.rows.items()} != {k: r["seeds"][1] for k, r in second.rows.items()}
    assert table_builder.plan_tables([spec], seeds=2, out_dir=out, store=tmp_path / "b.sqlite") == {spec.name: 0}

    tampered = dict(second.data, teacher_digest="0" * 64)
    with gzip.open(out / f"{spec.name}.json.gz", "wt") as f:
        json.dump(tampered, f)
    with pytest.raises(BadInput, match="another teacher or proxy"):
        table_builder.build_tables([spec], seeds=3, workers=1, out_dir=out, store=tmp_path / "c.sqlite",
                                   progress=False)
    assert load_table(out / f"{spec.name}.json.gz").data == tampered  # nothing written


def test_criteria_also_test_over_task_settings_where_deterministic_searchers_have_no_seed_spread() -> None:
    """Two deterministic searchers (the same curve for every seed) that each win on half of 4 task
    settings, one by a hair on average: over seeds the interval has zero width and says "below"; over
    the task settings it is a tie. A searcher better on every setting is below on both."""
    from rcnas.bench.tabular import criteria
    keys = [f"t{i}|pgd|0.5x|{view}" for i in range(4) for view in ("all", ">=80%")]
    def const(values):  # a method whose regret on task i is values[i] for every seed and every k
        return {key: {s: [values[int(key[1])]] * 10 for s in range(5)} for key in keys}
    results = {"rcnas": const([0.1, 0.5, 0.1, 0.5]), "largest": const([0.5, 0.11, 0.5, 0.11]),
               "uniform": const([0.7, 0.7, 0.7, 0.7])}
    for m in ("tpe", "random", "evolution"):
        results[m] = {key: {s: [0.5 + 0.01 * s] * 10 for s in range(5)} for key in keys}
    row = criteria(results)[0]
    assert "largest: yes" in row["below_with_95%"] and "uniform: yes" in row["below_with_95%"]
    assert "largest: NO" in row["below_over_task_settings_95%"]
    assert "uniform: yes" in row["below_over_task_settings_95%"]
