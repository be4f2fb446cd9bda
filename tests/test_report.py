"""rcnas.report: report.md from a run / bench directory, the plots, and the Pareto front."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rcnas.errors import BadInput
from rcnas.evaluate import ModelCard
from rcnas.report import (pareto_front, plot_pareto, plot_regret, plot_reward_curve, plot_topology,
                          running_best, write_report)
from rcnas.space.arch import Arch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEACHER = Arch.wrn(28, 2)
TEACHER_MACS = 13_421_568
BUDGET = 6_710_784
RCNAS_ARCH = {"depths": [4, 3, 2], "widths": [2, 1.5, 1], "blocks": ["basic", "basic", "robust"]}
UNIFORM_ARCH = {"depths": [3, 3, 3], "widths": [1.5, 1.5, 1.5], "blocks": ["basic", "basic", "basic"]}
CARDS = {  # name: (arch, clean, pgd20, cw40, aa, params, macs, latency)
    "rcnas": (RCNAS_ARCH, 0.9512, 0.7034, 0.6891, 0.6645, 702_346, 6_512_000, 1.2345),
    "teacher-at": (TEACHER.to_dict(), 0.9688, 0.7201, 0.7012, 0.6788, 1_467_610, TEACHER_MACS, 2.5),
    "uniform": (UNIFORM_ARCH, 0.9400, 0.6500, 0.6400, 0.6123, 601_000, 6_200_000, 1.1),
}


def _trials() -> list[dict]:
    rows = []
    for i in range(12):
        arch = {"depths": [1 + i % 4, 2, 2], "widths": [1, 1.5, 1], "blocks": ["basic"] * 3}
        status, reward, macs = "ok", 0.80 + 0.015 * i - 0.03 * (i % 3), 3_000_000 + 250_000 * i
        if i == 4:
            status, reward, macs = "failed", -1.0, 4_000_000
        if i == 7:
            reward, macs = -1.0, 9_000_000  # over budget
        metrics = {} if status == "failed" else {"clean": 0.9, "fgsm": 0.8, "pgd": 0.7 + 0.01 * i,
                                                 "cw": 0.68, "worst": 0.66}
        rows.append({"trial": i, "arch": arch, "macs": macs, "reward": reward, "metrics": metrics,
                     "status": status, "seconds": 3.5 + i})
    return rows


SEARCH = {"arch": RCNAS_ARCH, "macs": 6_512_000, "budget_macs": BUDGET, "teacher_macs": TEACHER_MACS,
          "reward": 0.9876, "metrics": {"clean": 0.93, "pgd": 0.71}, "evaluations": 12, "new_evaluations": 9,
          "task": {"dataset": "digits", "attack": "pgd", "teacher": None, "budget": "0.5x", "eps": None},
          "teacher": "wrn-28-2", "searcher": "rcnas", "evaluator": "train", "seed": 0,
          "reward_name": "budget", "eps": 0.1, "seconds": 123.4, "evaluation_seconds": 62.0, "agent": "pretrained", "meta_updates": 40}


def make_run_dir(root: Path) -> Path:
    (root / "search").mkdir(parents=True)
    (root / "search" / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _trials()))
    (root / "search" / "search.json").write_text(json.dumps(SEARCH))
    (root / "search" / "agent_history.json").write_text(json.dumps([
        {"losses/policy": 0.1, "charts/reward": 0.82, "charts/baseline": 0.8, "charts/entropy": 1.2},
        {"losses/policy": 0.05, "charts/reward": 0.88, "charts/baseline": 0.83, "charts/entropy": 1.1}]))
    cards = {}
    for name, (arch, clean, pgd, cw, aa, params, macs, lat) in CARDS.items():
        card = ModelCard(name=name, dataset="digits", arch=arch, eps=0.1, clean_acc=clean, pgd20_acc=pgd,
                         cw40_acc=cw, aa_acc=aa, aa_only_acc=aa, worst_case_acc=aa, n_eval=360,
                         params=params, macs=macs, latency_ms_cpu=lat, training={"recipe": "pgd"})
        card.to_json(root / "models" / name / "card.json")
        cards[name] = card.to_dict()
    summary = {"task": SEARCH["task"], "teacher": "wrn-28-2", "eps": 0.1, "budget_macs": BUDGET,
               "teacher_macs": TEACHER_MACS, "search": SEARCH, "models": cards,
               "timings_s": {"teacher": 12.5, "search": 123.4, "train/rcnas": 75.0, "eval/rcnas": 4.25},
               "config": {"dataset": "digits", "seed": 0}}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    from matplotlib.image import imread
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > min_bytes
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    root = make_run_dir(tmp_path_factory.mktemp("run"))
    path = write_report(root)
    return root, path, path.read_text()


def test_report_has_the_cards_numbers(run_report):
    root, path, text = run_report
    assert path == root / "report.md"
    assert _row(text, "rcnas") == ["rcnas", "95.12", "70.34", "68.91", "66.45", "702k", "6.51M", "0.49x",
                                   "1.23"]
    assert _row(text, "teacher-at") == ["teacher-at", "96.88", "72.01", "70.12", "67.88", "1.47M", "13.4M",
                                        "1.00x", "2.50"]
    assert _row(text, "uniform") == ["uniform", "94.00", "65.00", "64.00", "61.23", "601k", "6.2M", "0.46x",
                                     "1.10"]
    # models in the pipeline's order: rcnas first
    assert text.index("| rcnas |") < text.index("| teacher-at |") < text.index("| uniform |")
    assert "(n = 360), Linf eps = 0.1 (25.5/255)" in text


def test_report_task_arch_search_timings(run_report):
    _, _, text = run_report
    assert _row(text, "dataset")[1] == "digits"
    assert _row(text, "attack (search objective)")[1] == "pgd"
    assert _row(text, "eps (L-inf, pixels in [0,1])")[1] == "0.1 (25.5/255)"
    assert _row(text, "teacher")[1] == "wrn-28-2 (13.4M MACs)"
    assert _row(text, "budget")[1] == "6.71M MACs (6,710,784) = 0.50x the teacher (asked: 0.5x)"
    assert "`depths [4, 3, 2], widths [2, 1.5, 1], blocks [basic, basic, robust]`" in text
    assert _row(text, "3") == ["3", "2 / 4", "1 / 2", "robust"]
    assert _row(text, "evaluations")[1] == "12"
    assert _row(text, "new evaluations (not from the store)")[1] == "9"
    assert _row(text, "best reward")[1] == "0.9876"
    assert _row(text, "trials logged")[1] == "12 (1 failed, 1 over budget)"
    assert _row(text, "search wall time (last call)")[1] == "2m 03s"
    assert _row(text, "candidate evaluation time")[1] == "1m 02s"
    assert _row(text, "train/rcnas")[1] == "1m 15s"
    assert _row(text, "eval/rcnas")[1] == "4.2 s"
    assert _row(text, "**total**")[1] == "**3m 35s**"
    assert "## Notes" not in text


def test_report_plots_are_valid_pngs(run_report):
    root, _, text = run_report
    for name in ("reward_curve.png", "pareto.png", "topology.png"):
        assert f"]({name})" in text
        assert_png(root / name)
    assert not list(root.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_a_figure_that_fails_is_a_note_and_the_others_are_drawn(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no room")
    monkeypatch.setattr("rcnas.report.plots.plot_pareto", broken)
    root = make_run_dir(tmp_path)
    text = write_report(root).read_text()
    assert "- Pareto plot not drawn: ValueError: no room" in text
    assert "](pareto.png)" not in text and not (root / "pareto.png").exists()
    for name in ("reward_curve.png", "topology.png"):
        assert f"]({name})" in text
        assert_png(root / name)


def test_pareto_front():
    pts = [{"name": "a", "macs": 10, "acc": 0.50},
           {"name": "b", "macs": 20, "acc": 0.60},
           {"name": "c", "macs": 20, "acc": 0.55},   # dominated by b (same MACs, less accurate)
           {"name": "d", "macs": 30, "acc": 0.58},   # dominated by b
           {"name": "e", "macs": 5, "acc": 0.40},
           {"name": "f", "macs": 40, "acc": 0.70},
           {"name": "g", "macs": 8, "acc": None},    # no accuracy: ignored
           {"name": "h", "macs": 10, "acc": 0.50}]   # identical to a: both kept
    assert [pts[i]["name"] for i in pareto_front(pts, y="acc")] == ["e", "a", "h", "b", "f"]
    assert pareto_front([], y="acc") == []
    assert pareto_front([{"macs": 1, "acc": 0.1}, {"macs": 1, "acc": 0.1}], y="acc") == [0, 1]


def test_running_best():
    assert running_best([None, 0.2, 0.1, None, 0.5, 0.3])[1:] == [0.2, 0.2, 0.2, 0.5, 0.5]
    assert running_best([None])[0] != running_best([None])[0]  # NaN before the first number


def test_empty_or_missing_dir_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="summary.json"):
        write_report(tmp_path)
    with pytest.raises(BadInput, match="not a directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "notes.json").write_text(json.dumps({"no": "rows"}))
    with pytest.raises(BadInput, match="rows"):
        write_report(tmp_path)


def test_a_search_out_folder_is_reported_too(tmp_path):
    """`rcnas search --out DIR` keeps search.json and trials.jsonl at DIR's top, not under search/."""
    root = tmp_path / "s1"
    root.mkdir()
    (root / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _trials()))
    (root / "search.json").write_text(json.dumps(SEARCH))
    text = write_report(root).read_text()
    assert text.startswith("# RC-NAS search report: s1")
    assert "## Task" in text and "## Search" in text and "## Results" not in text
    assert "6.71M MACs" in text  # the budget, read from the search's own search.json
    assert_png(root / "reward_curve.png")


def test_partial_and_broken_run_dirs_do_not_crash(tmp_path):
    only_trials = tmp_path / "a"
    (only_trials / "search").mkdir(parents=True)
    (only_trials / "search" / "trials.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _trials()) + "{not json\n")
    text = write_report(only_trials).read_text()
    assert "## Search" in text and "## Results" not in text and "## Task" not in text
    assert "1 malformed line(s) skipped" in text
    assert_png(only_trials / "reward_curve.png")
    assert not (only_trials / "pareto.png").exists()

    broken = make_run_dir(tmp_path / "b")
    (broken / "summary.json").write_text("{truncated")
    (broken / "search" / "search.json").unlink()
    text = write_report(broken).read_text()
    assert "`summary.json` could not be read" in text
    assert _row(text, "rcnas")[1:5] == ["95.12", "70.34", "68.91", "66.45"]
    assert "## Timings" not in text


def test_bench_dir(tmp_path):
    bench = {"name": "rewards", "rows": [
        {"reward": "budget", "regret": 0.01234567, "seeds": 3, "ok": True},
        {"reward": "n2n", "regret": 0.05, "seeds": 3, "ok": False, "extra": {"a": 1}}],
        "meta": {"machine": "x86_64, 16 cores", "versions": {"rcnas": "0.1.0", "torch": "2.13.0"},
                 "seeds": [0, 1, 2]}}
    (tmp_path / "rewards.json").write_text(json.dumps(bench))
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    text = write_report(tmp_path).read_text()
    assert "## rewards" in text and "## other" in text
    assert _row(text, "reward") == ["reward", "regret", "seeds", "ok", "extra.a"]
    assert _row(text, "budget") == ["budget", "0.01235", "3", "true", "-"]
    assert _row(text, "n2n") == ["n2n", "0.05", "3", "false", "1"]
    assert "- machine: x86_64, 16 cores" in text
    assert "- versions.torch: 2.13.0" in text
    assert "- seeds: [0,1,2]" in text
    assert "(no rows)" in text


def test_plot_functions_directly(tmp_path):
    p = plot_regret({"rcnas": ([0.3, 0.2, 0.1, 0.05], [0.05, 0.04, 0.02, 0.01]),
                     "random": ([0.3, 0.25, 0.2, 0.18], [0.06, 0.05, 0.05, 0.04])}, tmp_path / "regret.png")
    assert_png(p)
    p = plot_reward_curve([], tmp_path / "updates.png", updates=[{"update": 1, "charts/reward": 0.5},
                                                                 {"update": 2, "charts/reward": 0.6}])
    assert_png(p)
    p = plot_pareto([{"name": "x", "kind": "search", "macs": 1e6, "aa_acc": 0.4}], tmp_path / "p.png",
                    budget=2_000_000)
    assert_png(p)
    p = plot_topology({"found": Arch.from_dict(RCNAS_ARCH)}, TEACHER, tmp_path / "t.png")
    assert_png(p)


def test_importing_rcnas_report_does_not_import_matplotlib():
    code = "import sys, rcnas, rcnas.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
