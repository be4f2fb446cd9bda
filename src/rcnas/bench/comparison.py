"""The paper's comparison with real final adversarial training: `rcnas run` for every
(dataset, budget, seed), then one table of mean ± std over seeds.

A comparison is described by a `ComparisonConfig` (YAML under `configs/comparison-*.yaml`): groups of
runs in priority order, each a `RunConfig` plus the budgets and seeds to run it at. Runs go to
`<out>/<name>-runs/<dataset>-<budget>-s<seed>/` and are resumable; `jobs > 1` runs that many at once
in separate processes (on one GPU this keeps it busy: the networks are small). The summary reads the
finished runs only, so a comparison cut short by a time limit reports exactly the seeds it has.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rcnas.bench.runner import BENCHES
from rcnas.bench.summary import machine_meta, mean_std, meta_lines, table_md, write_summary
from rcnas.config import from_dict, load_yaml, to_dict
from rcnas.errors import BadInput, RunFailure
from rcnas.io import exclusive, read_yaml
from rcnas.pipeline import MAY_CHANGE_ON_RESUME, RunConfig, changed_settings, recorded_teacher_digest
from rcnas.workers import exit_with_parent

logger = logging.getLogger(__name__)
METRICS = ("clean_acc", "pgd20_acc", "cw40_acc", "aa_acc")


@dataclass(frozen=True)
class ComparisonGroup:
    run: RunConfig = field(default_factory=RunConfig)  # everything but the budget and the seed
    budgets: tuple[str, ...] = ("0.5x",)
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class ComparisonConfig:
    name: str = "comparison"
    groups: tuple[ComparisonGroup, ...] = (ComparisonGroup(),)
    jobs: int = 1

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise BadInput(f"comparison name {self.name!r} must be letters, digits, '-' or '_'")
        if self.jobs < 1:
            raise BadInput(f"jobs must be >= 1, got {self.jobs}")

    def runs(self) -> list[tuple[str, RunConfig]]:
        """(run directory name, config) in priority order: group, then budget, then seed."""
        return [(f"{g.run.dataset}-{b}-s{s}", replace(g.run, budget=b, seed=s))
                for g in self.groups for b in g.budgets for s in g.seeds]


def load_comparison(path: str | Path) -> ComparisonConfig:
    return from_dict(ComparisonConfig, read_yaml(path) or {}, where=str(path))


def _run_one(cfg: RunConfig, out: str, data_dir: str | None, threads: int) -> str:
    import torch

    from rcnas.pipeline import run_pipeline
    torch.set_num_threads(threads)
    with exclusive(out):  # from before the teacher's copy: that writes the run directory too
        _reuse_teacher_at(Path(out), cfg)
        run_pipeline(cfg, out=out, data_dir=data_dir, progress=False)
    return out


def _reuse_teacher_at(path: Path, cfg: RunConfig) -> None:
    """The adversarially trained teacher does not depend on the budget: when a run of the same settings
    and seed at another budget has finished it, its model directory is copied (training checkpoints
    left behind) and the pipeline keeps its card instead of training the same network again."""
    target = path / "models" / "teacher-at"
    if (target / "card.json").exists():
        return
    mine = recorded_teacher_digest(path)  # None: this run has not started; any sibling's teacher will do
    siblings = sorted(path.parent.iterdir()) if path.parent.is_dir() else []
    for sibling in siblings:
        source = sibling / "models" / "teacher-at"
        if sibling == path or not (source / "card.json").is_file() or not (sibling / "run.yaml").is_file():
            continue
        other = load_yaml(RunConfig, sibling / "run.yaml")
        if changed_settings(other, cfg, allowed=(*MAY_CHANGE_ON_RESUME, "budget")) or \
                (mine is not None and recorded_teacher_digest(sibling) != mine):
            continue
        partial = target.with_name("teacher-at.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints"))
        shutil.rmtree(target, ignore_errors=True)  # an unfinished teacher-at of this run
        partial.rename(target)
        logger.info("%s: teacher-at reused from %s", path.name, sibling.name)
        return


@BENCHES.register("comparison")
def bench_comparison(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                     config: str | Path | ComparisonConfig | None = None, jobs: int | None = None,
                     data_dir: str | None = None, summarize_only: bool = False) -> Path:
    """Run (or resume) every run of the comparison, then write `<out>/<name>.json` and `.md`."""
    cmp = config if isinstance(config, ComparisonConfig) else (
        load_comparison(config) if config else ComparisonConfig())
    if seeds:
        cmp = replace(cmp, groups=tuple(replace(g, seeds=tuple(range(seeds))) for g in cmp.groups))
    if quick:
        cmp = replace(cmp, groups=tuple(replace(g, seeds=g.seeds[:1], budgets=g.budgets[:1], run=replace(
            g.run, evaluations=4, final_epochs=1, aa_samples=30)) for g in cmp.groups))
    if jobs:
        cmp = replace(cmp, jobs=jobs)
    runs_dir = Path(out) / f"{cmp.name}-runs"
    todo = [(runs_dir / d, cfg) for d, cfg in cmp.runs() if not _finished(runs_dir / d, cfg)]
    if todo and not summarize_only:
        _run_all(cmp, todo, data_dir)
    return summarize_comparison(out, cmp.name, cmp)


def _finished(path: Path, cfg: RunConfig) -> bool:
    """A run is done when its summary holds every model the config asks for, evaluated as it asks (a run
    made with fewer baselines or another evaluation is resumed: what it trained is kept)."""
    summary = path / "summary.json"
    if not summary.exists():
        return False
    done = json.loads(summary.read_text())
    return _evaluated_as(done, cfg) and {"rcnas", "teacher-at", *cfg.baselines} <= set(done.get("models", {}))


def _evaluated_as(summary: dict[str, Any], cfg: RunConfig) -> bool:
    return all(summary.get("config", {}).get(k) == getattr(cfg, k) for k in ("eval_samples", "aa_samples"))


def not_needed_to_resume(out: str | Path, cmp: ComparisonConfig) -> list[Path]:
    """What a comparison cut short does not need to go on (bench/gpu.sh leaves it out of what a lease
    carries): every weight and checkpoint of a finished run, the checkpoints of networks whose training
    finished (their weights stay: a changed evaluation evaluates them again), the fine-tuned agents."""
    runs_dir = Path(out) / f"{cmp.name}-runs"
    drop: list[Path] = []
    for name, cfg in cmp.runs():
        path = runs_dir / name
        finished = _finished(path, cfg)
        for mdir in sorted(path.glob("models/*")):
            if finished:
                drop.append(mdir / "model.safetensors")
            if finished or (mdir / "model.json").is_file():
                drop.append(mdir / "checkpoints")
        drop += sorted(path.glob("search*/agent"))
    return [p for p in drop if p.exists()]


def _run_all(cmp: ComparisonConfig, todo: list[tuple[Path, RunConfig]], data_dir: str | None) -> None:
    from rcnas import api
    from rcnas.space.teachers import default_teacher
    for g in cmp.groups:  # the shared teachers first, so parallel runs find them cached
        api.train_teacher(g.run.dataset, g.run.teacher or default_teacher(g.run.dataset), data_dir=data_dir,
                          epochs=g.run.teacher_epochs, device=g.run.device, progress=False)
    if cmp.jobs == 1:
        for path, cfg in todo:
            _run_one(cfg, str(path), data_dir, max(1, os.cpu_count() or 1))
        return
    threads = max(1, (os.cpu_count() or 1) // cmp.jobs)
    failed = []
    with ProcessPoolExecutor(cmp.jobs, mp_context=get_context("spawn"), initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_run_one, cfg, str(path), data_dir, threads): path for path, cfg in todo}
        for f in as_completed(futures):
            if f.exception() is not None:  # the other runs go on; the summary leaves this one out
                failed.append(f"{futures[f].name}: {type(f.exception()).__name__}: {f.exception()}")
                logger.error("comparison run %s", failed[-1])
    if failed:
        raise RunFailure(f"{len(failed)} of {len(todo)} comparison runs failed (rerun to resume them); "
                         f"first: {failed[0]}")


def summarize_comparison(out: str | Path = "bench/results", name: str = "comparison",
                         cmp: ComparisonConfig | None = None) -> Path:
    """Aggregate every finished run under `<out>/<name>-runs` into `<name>.json` / `.md` (with `cmp`,
    only its runs, and only as evaluated with its settings: a run not yet evaluated again is left out)."""
    out = Path(out)
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted((out / f"{name}-runs").glob("*/summary.json"))}
    if cmp is not None:
        wanted = dict(cmp.runs())
        found = {d: sm for d, sm in found.items() if d in wanted and _evaluated_as(sm, wanted[d])}
    summaries = list(found.values())
    by_model: dict[tuple[str, str, str], list[dict]] = {}
    for sm in summaries:
        for model, card in sm["models"].items():
            by_model.setdefault((sm["task"]["dataset"], sm["task"]["budget"], model), []).append(card)
    rows = []
    for (dataset, budget, model), cards in by_model.items():
        row: dict[str, Any] = {"dataset": dataset, "budget": budget, "model": model,
                               "seeds": len(cards)}
        for key in METRICS:
            m, s = mean_std([c[key] * 100 for c in cards if c.get(key) is not None])
            row[key.replace("_acc", "")] = f"{m:.2f} ± {s:.2f}"
        row["params"] = int(statistics.fmean(c["params"] for c in cards))
        row["macs"] = int(statistics.fmean(c["macs"] for c in cards))
        row["n_test"] = cards[0].get("n_eval")
        row["n_aa"] = cards[0].get("aa_n_eval")
        rows.append(row)
    paired_rows = _paired_rows(summaries)
    search_rows = _search_rows(out / f"{name}-runs")
    configs = {sm["task"]["dataset"]: {k: sm["config"].get(k) for k in (
        "teacher", "final_epochs", "final_recipe", "final_batch_size", "final_lr", "final_train_samples",
        "final_bf16", "evaluations", "eval_samples", "aa_samples", "teacher_epochs", "device", "baselines")}
        for sm in summaries}
    ran_on = sorted({f"{m['device_name']} ({m['device']}, torch {m['torch']})" for sm in summaries
                     if (m := sm.get("machine"))} | {f"device {d}" for d in _run_devices(out / f"{name}-runs")})
    meta = machine_meta(sorted({sm["config"]["seed"] for sm in summaries}), runs=len(summaries),
                        summarized_on="the machine above; the runs ran on: " + "; ".join(ran_on),
                        settings=configs,
                        note="clean/PGD-20/CW-40 on n_test test images (the whole test split unless "
                             "eval_samples); AutoAttack (worst case with the others) on a stratified "
                             "subset of n_aa test images")
    recipes = ", ".join(sorted({str(sm["config"].get("final_recipe", RunConfig.final_recipe)) for sm in summaries})) or "none"
    md = (f"# The paper's comparison on real data ({name}: `rcnas run` per seed, final adversarial "
          f"training: {recipes}, test split)\n\nAccuracies in %, mean ± std over seeds. rcnas = the shipped "
          "meta-trained agent fine-tuned on the held-out task; teacher-at = the teacher adversarially trained the same "
          "way; uniform / last-stage / compound = the heuristic rules at the same budget; random = the best "
          "of random search with the same evaluations and proxy as rcnas.\n\n" + table_md(rows) + "\n"
          + "\n## rcnas minus each other model, paired by seed\n\nDifferences in accuracy points (rcnas − "
            "model) over the seeds where both finished, mean ± std; `rcnas_higher` counts those seeds; "
            "`verdict` is a two-sided paired t-test at 95% (`tie` when the interval holds 0: at 3 seeds a "
            "difference must be large and steady to count).\n\n"
          + (table_md(paired_rows) if paired_rows else "(no paired runs)\n")
          + "\n## The searches alone (proxy reward, every run that finished its searches)\n\nThe best search "
            "reward (the proxy's robust accuracy relative to the teacher's, with the budget term) that each "
            "searcher found with the same number of distinct candidate evaluations, mean ± std over runs; "
            "`budget_use` = MACs of the best candidate / budget.\n\n"
          + (table_md(search_rows) if search_rows else "(no finished searches)\n") + "\n"
          + meta_lines(meta) + "\n")
    return write_summary(out, name, {"meta": meta, "rows": rows, "paired_rows": paired_rows,
                                     "search_rows": search_rows,
                              "runs": [to_dict(sm["config"]) for sm in summaries]}, md)


def _paired_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """rcnas minus every other model of the same dataset and budget, paired by seed."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sm in summaries:
        runs.setdefault((sm["task"]["dataset"], sm["task"]["budget"]), []).append(sm["models"])
    rows = []
    for (dataset, budget), seeds in runs.items():
        others = list(dict.fromkeys(m for models in seeds for m in models if m != "rcnas"))
        for other in others:
            row: dict[str, Any] = {"dataset": dataset, "budget": budget, "vs": other}
            for key in METRICS[1:]:
                diffs = [100 * (ms["rcnas"][key] - ms[other][key]) for ms in seeds
                         if "rcnas" in ms and other in ms and ms["rcnas"].get(key) is not None
                         and ms[other].get(key) is not None]
                if not diffs:
                    continue
                m, s = mean_std(diffs)
                short = key.replace("_acc", "")
                row["seeds"] = len(diffs)
                row[short] = f"{m:+.2f} ± {s:.2f}"
                row[f"{short}_rcnas_higher"] = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
                row[f"{short}_verdict"] = _verdict(diffs)
            if "seeds" in row:
                rows.append(row)
    return rows


def _verdict(diffs: list[float]) -> str:
    """`ahead` / `behind` when a two-sided paired t-test at 95% excludes 0, else `tie`."""
    from scipy import stats
    if len(diffs) < 2:
        return "tie (1 seed)"
    m, s = mean_std(diffs)
    if s == 0:
        return "ahead" if m > 0 else "behind" if m < 0 else "tie"
    half = stats.t.ppf(0.975, len(diffs) - 1) * s / len(diffs) ** 0.5
    return "ahead" if m - half > 0 else "behind" if m + half < 0 else "tie"


def _run_devices(runs_dir: Path) -> set[str]:
    """The devices the runs' configs asked for (also for runs that never finished)."""
    return {str((read_yaml(p) or {}).get("device", "auto")) for p in runs_dir.glob("*/run.yaml")}


def _search_rows(runs_dir: Path) -> list[dict[str, Any]]:
    """Best reward per finished search (`search*/search.json` + `trials.jsonl`), by dataset, budget, searcher."""
    found: dict[tuple[str, str, str], list[tuple[float, float, int]]] = {}
    for path in sorted(runs_dir.glob("*/search*/search.json")):
        info = json.loads(path.read_text())
        trials = [json.loads(line) for line in (path.parent / "trials.jsonl").read_text().splitlines() if line]
        ok = [t for t in trials if t.get("status") == "ok"]
        if not ok:
            continue
        best = max(ok, key=lambda t: t["reward"])
        key = (info["task"]["dataset"], info["task"]["budget"], info["searcher"])
        found.setdefault(key, []).append((best["reward"], best["macs"] / info["budget_macs"], info["evaluations"]))
    rows = []
    for (dataset, budget, searcher), runs in found.items():
        (m, s), (u, _) = mean_std([r for r, _, _ in runs]), mean_std([b for _, b, _ in runs])
        rows.append({"dataset": dataset, "budget": budget, "searcher": searcher, "runs": len(runs),
                     "evaluations": runs[0][2], "best_reward": f"{m:.3f} ± {s:.3f}",
                     "per_run": ", ".join(f"{r:.3f}" for r, _, _ in runs), "budget_use": round(u, 2)})
    return rows
