"""The comparison harness (rcnas.bench.comparison): its config, which runs are left to do, the
summary over finished runs, and failures of parallel runs; plus the `rcnas run --config` and
`rcnas bench` option checks."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rcnas.bench import comparison
from rcnas.bench.comparison import ComparisonConfig, ComparisonGroup, bench_comparison, load_comparison
from rcnas.cli import main
from rcnas.errors import BadInput, RunFailure
from rcnas.pipeline import RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _card(clean: float, pgd: float, aa: float | None, macs: int) -> dict:
    return {"clean_acc": clean, "pgd20_acc": pgd, "cw40_acc": pgd, "aa_acc": aa, "params": 10, "macs": macs,
            "n_eval": 599, "aa_n_eval": 100}


def _fake_run(path: Path, cfg: RunConfig, models: dict[str, dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({
        "task": {"dataset": cfg.dataset, "budget": cfg.budget}, "models": models,
        "config": {"seed": cfg.seed, "final_epochs": cfg.final_epochs, "baselines": list(cfg.baselines),
                   "eval_samples": cfg.eval_samples, "aa_samples": cfg.aa_samples}}))


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("comparison*.yaml")))
def test_shipped_comparison_configs_load(name: str) -> None:
    cmp = load_comparison(CONFIGS / name)
    runs = cmp.runs()
    assert len(runs) == sum(len(g.budgets) * len(g.seeds) for g in cmp.groups)
    assert len({d for d, _ in runs}) == len(runs)  # one directory per run
    first = cmp.groups[0]
    assert runs[0] == (f"{first.run.dataset}-{first.budgets[0]}-s{first.seeds[0]}",
                       RunConfig(**{**first.run.__dict__, "budget": first.budgets[0], "seed": first.seeds[0]}))
    assert {"uniform", "last-stage", "compound", "random"} <= set(first.run.baselines)


def test_runs_come_in_priority_order() -> None:
    cmp = ComparisonConfig(groups=(ComparisonGroup(RunConfig(dataset="fashion-mnist"), ("0.5x", "0.3x"), (0, 1)),
                                   ComparisonGroup(RunConfig(dataset="digits"), ("0.5x",), (2,))))
    assert [d for d, _ in cmp.runs()] == ["fashion-mnist-0.5x-s0", "fashion-mnist-0.5x-s1", "fashion-mnist-0.3x-s0",
                                          "fashion-mnist-0.3x-s1", "digits-0.5x-s2"]
    assert [c.seed for _, c in cmp.runs()] == [0, 1, 0, 1, 2]


def test_bad_comparison_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngroups:\n  - run: {dataset: digits, epochs: 3}\n")
    with pytest.raises(BadInput, match=r"groups\[0\]\.run: unknown key 'epochs'"):
        load_comparison(bad)
    with pytest.raises(BadInput, match="jobs must be >= 1"):
        ComparisonConfig(jobs=0)
    with pytest.raises(BadInput, match="letters, digits"):
        ComparisonConfig(name="../up")


def test_summary_counts_finished_runs_and_a_run_with_fewer_baselines_is_resumed(tmp_path: Path,
                                                                               monkeypatch) -> None:
    cfg = RunConfig(dataset="digits", baselines=("uniform", "random"))
    cmp = ComparisonConfig(name="t", groups=(ComparisonGroup(cfg, ("0.5x",), (0, 1, 2)),))
    runs = tmp_path / "t-runs"
    # seed 0 finished with every model, seed 1 with the uniform baseline only, seed 2 not started
    _fake_run(runs / "digits-0.5x-s0", RunConfig(seed=0), {
        "rcnas": _card(0.9, 0.6, 0.5, 100), "teacher-at": _card(0.95, 0.6, 0.55, 200),
        "uniform": _card(0.9, 0.5, 0.45, 100), "random": _card(0.9, 0.55, 0.5, 90)})
    _fake_run(runs / "digits-0.5x-s1", RunConfig(seed=1), {
        "rcnas": _card(0.8, 0.4, None, 100), "teacher-at": _card(0.9, 0.5, 0.45, 200),
        "uniform": _card(0.85, 0.45, 0.4, 100)})
    ran: list[str] = []
    monkeypatch.setattr(comparison, "_run_all", lambda c, todo, data_dir: ran.extend(p.name for p, _ in todo))
    md = bench_comparison(out=str(tmp_path), config=cmp)
    assert ran == ["digits-0.5x-s1", "digits-0.5x-s2"]  # seed 0 is done; seed 1 lacks `random`
    rows = {r["model"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows["rcnas"]["seeds"] == 2 and rows["random"]["seeds"] == 1
    assert rows["rcnas"]["clean"] == "85.00 ± 7.07"   # mean ± sample std of 90 and 80
    assert rows["rcnas"]["aa"] == "50.00 ± 0.00"      # the missing AA of seed 1 is left out, not zero
    assert rows["teacher-at"]["macs"] == 200 and rows["uniform"]["n_test"] == 599
    assert "| digits | 0.5x | random | 1 |" in md.read_text()
    ran.clear()
    bench_comparison(out=str(tmp_path), config=cmp, summarize_only=True)
    assert ran == []
    # another evaluation (the whole test split for AutoAttack) makes the finished seed 0 a run to resume
    bench_comparison(out=str(tmp_path), config=replace(cmp, groups=(replace(
        cmp.groups[0], run=replace(cfg, aa_samples=None)),)))
    assert ran == ["digits-0.5x-s0", "digits-0.5x-s1", "digits-0.5x-s2"]
    # ... and its summary holds no run until one is evaluated that way (no mixing of evaluations)
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == []


def test_what_a_cut_short_comparison_does_not_need_to_go_on(tmp_path: Path) -> None:
    cfg = RunConfig(dataset="digits", baselines=("uniform",))
    cmp = ComparisonConfig(name="t", groups=(ComparisonGroup(cfg, ("0.5x",), (0, 1)),))
    runs = tmp_path / "t-runs"
    cards = {"rcnas": _card(0.9, 0.6, 0.5, 100), "teacher-at": _card(0.95, 0.6, 0.55, 200),
             "uniform": _card(0.9, 0.5, 0.45, 100)}
    _fake_run(runs / "digits-0.5x-s0", RunConfig(seed=0), cards)                   # finished
    _fake_run(runs / "digits-0.5x-s1", RunConfig(seed=1, aa_samples=None), cards)  # evaluated otherwise
    for seed in (0, 1):
        for model in ("rcnas", "uniform"):
            mdir = runs / f"digits-0.5x-s{seed}" / "models" / model
            (mdir / "checkpoints").mkdir(parents=True)
            (mdir / "model.safetensors").write_text("w")
            if model == "rcnas":  # training finished; uniform is still training
                (mdir / "model.json").write_text("{}")
        (runs / f"digits-0.5x-s{seed}" / "search" / "agent").mkdir(parents=True)
    drop = {str(p.relative_to(runs)) for p in comparison.not_needed_to_resume(tmp_path, cmp)}
    assert drop == {
        "digits-0.5x-s0/models/rcnas/model.safetensors", "digits-0.5x-s0/models/rcnas/checkpoints",
        "digits-0.5x-s0/models/uniform/model.safetensors", "digits-0.5x-s0/models/uniform/checkpoints",
        "digits-0.5x-s0/search/agent",
        # seed 1 is to be evaluated again: its trained weights stay, and uniform's training state
        "digits-0.5x-s1/models/rcnas/checkpoints", "digits-0.5x-s1/search/agent"}


def test_a_finished_teacher_at_is_reused_across_budgets_of_the_same_settings(tmp_path: Path) -> None:
    from rcnas.config import save_yaml
    cfg = RunConfig(dataset="digits", seed=1, budget="0.3x", baselines=("uniform",))
    done = tmp_path / "digits-0.5x-s1"
    save_yaml(replace(cfg, budget="0.5x", baselines=("uniform", "random")), done / "run.yaml")
    (done / "models" / "teacher-at" / "checkpoints").mkdir(parents=True)
    (done / "models" / "teacher-at" / "card.json").write_text('{"pgd20_acc": 0.5}')
    (done / "models" / "teacher-at" / "checkpoints" / "last.pt").write_text("big")
    other_seed = tmp_path / "digits-0.5x-s0"
    save_yaml(replace(cfg, budget="0.5x", seed=0), other_seed / "run.yaml")

    comparison._reuse_teacher_at(tmp_path / "digits-0.3x-s1", cfg)
    reused = tmp_path / "digits-0.3x-s1" / "models" / "teacher-at"
    assert json.loads((reused / "card.json").read_text()) == {"pgd20_acc": 0.5}
    assert not (reused / "checkpoints").exists() and not reused.with_name("teacher-at.partial").exists()

    # other training settings, another seed, or a teacher-at still training: nothing to reuse
    comparison._reuse_teacher_at(tmp_path / "digits-0.3x-s0", replace(cfg, seed=0))
    assert not (tmp_path / "digits-0.3x-s0" / "models").exists()
    comparison._reuse_teacher_at(tmp_path / "digits-0.2x-s1", replace(cfg, budget="0.2x", final_epochs=3))
    assert not (tmp_path / "digits-0.2x-s1" / "models").exists()
    # a run that started from other teacher weights (a cache trained again) does not take it
    (done / "teacher.json").write_text('{"weights_sha256": "aaa"}')
    (tmp_path / "digits-0.2x-s1").mkdir()
    (tmp_path / "digits-0.2x-s1" / "teacher.json").write_text('{"weights_sha256": "bbb"}')
    comparison._reuse_teacher_at(tmp_path / "digits-0.2x-s1", replace(cfg, budget="0.2x"))
    assert not (tmp_path / "digits-0.2x-s1" / "models").exists()
    (done / "models" / "teacher-at" / "card.json").unlink()
    comparison._reuse_teacher_at(tmp_path / "digits-0.4x-s1", replace(cfg, budget="0.4x"))
    assert not (tmp_path / "digits-0.4x-s1" / "models").exists()


def test_failed_parallel_runs_are_reported_and_the_others_go_on(tmp_path: Path, monkeypatch) -> None:
    """Two runs in two processes, both fail in the child (unknown attack): one RunFailure naming them."""
    monkeypatch.setattr("rcnas.api.train_teacher", lambda *a, **k: None)  # the parent's teacher warm-up
    cmp = ComparisonConfig(name="f", jobs=2, groups=(
        ComparisonGroup(RunConfig(dataset="digits", attack="nope", device="cpu"), ("0.5x",), (0, 1)),))
    with pytest.raises(RunFailure, match="2 of 2 comparison runs failed.*digits-0.5x-s[01]: BadInput.*nope"):
        bench_comparison(out=str(tmp_path), config=cmp)
    assert not list((tmp_path / "f-runs").glob("*/summary.json"))


def test_run_reads_a_config_and_flags_override_it(tmp_path: Path, monkeypatch, capsys) -> None:
    import rcnas.pipeline
    seen: list[RunConfig] = []

    def fake_pipeline(cfg, out, data_dir=None, progress=True):
        seen.append(cfg)
        return {"task": {"dataset": cfg.dataset, "attack": cfg.attack}, "eps": 0.1, "teacher": "wrn-28-2",
                "teacher_macs": 2, "budget_macs": 1, "models": {"rcnas": _card(0.9, 0.5, 0.4, 1)}}
    monkeypatch.setattr(rcnas.pipeline, "run_pipeline", fake_pipeline)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("dataset: mnist5k\nfinal_epochs: 3\nfinal_bf16: true\naa_samples: 50\ndevice: cpu\n")
    assert main(["run", "--config", str(cfg_file), "--seed", "4", "--budget", "0.3x", "--out", str(tmp_path)]) == 0
    assert seen[-1] == RunConfig(dataset="mnist5k", final_epochs=3, final_bf16=True, aa_samples=50, device="cpu",
                                 seed=4, budget="0.3x")
    assert main(["run", "--config", str(cfg_file), "--aa-samples", "0", "--out", str(tmp_path)]) == 0
    assert seen[-1].aa_samples is None and seen[-1].seed == 0  # 0: the whole test split
    cfg_file.write_text("dataset: digits\nfinal_epoch: 3\n")
    assert main(["run", "--config", str(cfg_file), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'final_epoch'" in err[0] and "final_epochs" in err[0]


def test_run_on_a_missing_gpu_fails_before_any_work(tmp_path: Path, capsys) -> None:
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bench_rejects_options_it_does_not_take(capsys) -> None:
    assert main(["bench", "search", "--scale", "cifar"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench search takes no --scale" in err[0]


def test_throughput_settings() -> None:
    import torch

    from rcnas.bench.suites import _throughput_setting
    split, info, models, batch = _throughput_setting("cifar", torch.device("cpu"))
    assert split.x.shape[1:] == (3, 32, 32) and len(split) % batch == 0 and info.input_size == 32
    assert [name for name, _ in models] == ["wrn-16-4", "wrn-28-10"]
    with pytest.raises(BadInput, match="use digits or cifar"):
        _throughput_setting("imagenet", torch.device("cpu"))


def test_every_registered_bench_is_its_function() -> None:
    import rcnas.bench.comparison
    import rcnas.bench.make_run
    import rcnas.bench.suites
    import rcnas.bench.tabular  # noqa: F401
    from rcnas.bench.runner import BENCHES
    for name in ("search", "adaptation", "comparison", "fidelity", "throughput", "all", "make-run"):
        assert BENCHES.get(name).__name__ == f"bench_{name.replace('-', '_')}", name


def test_paired_differences_and_their_verdicts(tmp_path: Path) -> None:
    """rcnas minus each model per seed: steady gaps are called, noisy ones are ties, unpaired seeds are left out."""
    runs = tmp_path / "p-runs"
    steady, noisy = (0.05, 0.06, 0.055), (0.10, -0.08, 0.02)
    for seed in range(3):
        models = {"rcnas": _card(0.9, 0.6, 0.5, 100),
                  "uniform": _card(0.9, 0.6 - steady[seed], 0.5 - noisy[seed], 100),  # rcnas ahead on PGD
                  "teacher-at": _card(0.9, 0.6 + steady[seed], 0.5, 200)}             # rcnas behind on PGD
        if seed < 2:
            models["random"] = _card(0.9, 0.5, 0.45, 90)                               # seed 2 unfinished
        _fake_run(runs / f"digits-0.5x-s{seed}", RunConfig(seed=seed), models)
    comparison.summarize_comparison(tmp_path, "p")
    rows = {r["vs"]: r for r in json.loads((tmp_path / "p.json").read_text())["paired_rows"]}
    assert set(rows) == {"uniform", "teacher-at", "random"}
    assert rows["uniform"]["pgd20"] == "+5.50 ± 0.50" and rows["uniform"]["pgd20_verdict"] == "ahead"
    assert rows["uniform"]["aa_rcnas_higher"] == "2/3" and rows["uniform"]["aa_verdict"] == "tie"
    assert rows["teacher-at"]["pgd20_verdict"] == "behind" and rows["teacher-at"]["pgd20_rcnas_higher"] == "0/3"
    assert rows["teacher-at"]["aa"] == "+0.00 ± 0.00" and rows["teacher-at"]["aa_verdict"] == "tie"
    assert rows["random"]["seeds"] == 2 and rows["random"]["pgd20"] == "+10.00 ± 0.00"
    assert "## rcnas minus each other model, paired by seed" in (tmp_path / "p.md").read_text()
