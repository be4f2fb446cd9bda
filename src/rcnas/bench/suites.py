"""The benchmarks. Each writes `<out>/<name>.json` ({"meta", "rows", ...}) and `<out>/<name>.md`.

- `search`, `adaptation` (rcnas.bench.tabular): normalised regret on the held-out tabular benchmarks
  for the agent and every baseline; evaluations the meta-trained agent needs to reach a scratch agent.
- `real-search`: the agent against random search and the rules with the real proxy on a held-out task.
- `comparison`: the paper's comparison with real final adversarial training and evaluation: the
  adversarially trained teacher, heuristic rules, the best of random search, and rcnas.
- `throughput`: candidate evaluations per hour, and adversarial-training images/s of rcnas's trainer
  against a bare PyTorch loop on the same model in the same run (ratio).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from rcnas.bench.runner import BENCHES
from rcnas.bench.summary import machine_meta, mean_std, meta_lines, table_md, write_summary
from rcnas.errors import BadInput
from rcnas.tasks import Task, resolve


# --- search with the real proxy on a held-out task setting ---------------------------------------
REAL_SEARCH_METHODS = ("rcnas", "random", "uniform", "last-stage", "compound")


@BENCHES.register("real-search")
def bench_real_search(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                      evaluations: int = 10, agent: str = "pretrained", device: str = "cpu",
                      data_dir: str | None = None, task: Task | None = None, teacher_epochs: int = 8) -> Path:
    """The shipped agent (fine-tuned within the search) against random search and the rules with the
    real proxy (candidates trained and attacked, not looked up) on a task setting it never saw. The
    searches of one seed share one store: a network two searchers both propose is trained once.
    Resumable: every evaluation is in `<out>/real-search-runs/store.sqlite`. [choice] The default task
    is Fashion-MNIST at 14x14 (the held-out tables' dataset and teacher, whose 8-epoch teacher the table
    build caches) with the search's own proxy (10-step PGD/CW, not the tables' 5) on the eighths space
    with robust blocks (not the tables' grid): a candidate costs ~6 s there against ~50 s at 28x28."""
    from rcnas.api import search
    from rcnas.search.evaluator import ProxyConfig
    task = task or Task("fashion-mnist-14", "cw", "wrn-16-1", "0.3x")
    seeds = seeds or (1 if quick else 3)
    evaluations = 2 if quick else evaluations
    runs = Path(out) / "real-search-runs"
    rows = []
    t0 = time.time()
    for seed in range(seeds):
        best = {}
        for method in REAL_SEARCH_METHODS:
            res = search(task, searcher=method, agent=agent, evaluations=evaluations, seed=seed,
                         proxy=ProxyConfig(teacher_epochs=teacher_epochs), store=runs / "store.sqlite",
                         device=device, data_dir=data_dir, progress=False)
            best[method] = res.best
            rows.append({"seed": seed, "method": method, "best_reward": round(res.best.reward, 4),
                         "macs": res.best.record.macs, "arch": str(res.best.arch),
                         "evaluations": res.evaluations, "new_evaluations": res.new_evaluations,
                         "evaluation_seconds": round(res.extra["evaluation_seconds"], 1)})
        mine = best["rcnas"].reward
        rows[-len(REAL_SEARCH_METHODS)]["above_every_other"] = all(
            mine > b.reward for m, b in best.items() if m != "rcnas")
    wins = sum(bool(r.get("above_every_other")) for r in rows)
    meta = machine_meta(seeds, task=task.key(), evaluations=evaluations, agent=agent, device=device,
                        seconds=round(time.time() - t0, 1), rcnas_above_every_other=f"{wins}/{seeds} seeds")
    md = (f"# Real-proxy search on a held-out task setting\n\n{task.dataset}, {task.attack}, teacher {task.teacher}, "
          f"budget {task.budget}: the best proxy reward after {evaluations} distinct evaluations (the rules score "
          f"one network each). rcnas above every other method in {wins} of {seeds} seeds.\n\n"
          + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    return write_summary(Path(out), "real-search", {"meta": meta, "rows": rows}, md)


# --- proxy fidelity --------------------------------------------------------------------------------
@BENCHES.register("fidelity")
def bench_fidelity(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                   archs: int = 10, epochs: int = 15, device: str = "cpu") -> Path:
    """Rank correlation between the search proxy (the table's validation PGD accuracy) and full final
    PGD adversarial training from the teacher's weights (test PGD-20 accuracy), over architectures
    spread across the table's MACs range. The summary is rewritten after every architecture."""
    import random

    from rcnas.api import train_teacher
    from rcnas.data import load_dataset
    from rcnas.device import resolve_device
    from rcnas.evaluate import evaluate_robustness
    from rcnas.models import inherit
    from rcnas.search.table import TableEvaluator
    from rcnas.train import TrainConfig, fit
    dev = str(resolve_device(device))
    n_seeds = seeds or (1 if quick else 2)
    n_archs, epochs = (4, 1) if quick else (archs, epochs)
    task = resolve(Task("digits", "pgd", "wrn-28-2", "1.0x"))
    ev = TableEvaluator()
    table = ev.table_for(task)
    space = ev.space(task)
    states = sorted(space.all_states(), key=space.macs)
    rng = random.Random(0)
    picked: list = []
    for i in range(n_archs):  # one distinct architecture near each of n_archs evenly spaced MACs ranks
        at = int(i * (len(states) - 1) / (n_archs - 1))
        near = [s for s in states[max(0, at - 20): at + 20] if s not in picked]
        picked.append(rng.choice(near))
    splits = load_dataset("digits")
    teacher = train_teacher("digits", "wrn-28-2", epochs=table.data["proxy"]["teacher_epochs"], progress=False)
    seconds_per_candidate = statistics.fmean(r["seconds"] for r in table.data["rows"])
    rows, proxy, full = [], [], []
    t0 = time.time()
    path = Path(out) / "fidelity.md"
    for state in picked:
        arch = space.arch(state)
        scores = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = inherit(teacher, arch)
            cfg = TrainConfig(recipe="pgd", epochs=epochs, batch_size=64, lr=0.05, schedule="cosine",
                              attack_steps=7, select_by="last", guard=False, seed=seed, device=dev)
            fit(model, splits.train, None, cfg, info=splits.info, progress=False)
            r = evaluate_robustness(model, splits.test.x, splits.test.y, attacks=("clean", "pgd20"),
                                    eps=task.eps, seed=seed, device=dev)
            scores.append(r.attacks["pgd20"])
        p = ev.evaluate(task, arch, 0).metrics["pgd"]
        proxy.append(p)
        full.append(statistics.fmean(scores))
        rows.append({"arch": str(arch), "macs": space.macs(state), "proxy_val_pgd10": round(p, 4),
                     "final_test_pgd20": f"{statistics.fmean(scores):.4f} ± "
                                         f"{statistics.stdev(scores) if len(scores) > 1 else 0:.4f}"})
        if len(rows) >= 3 or len(rows) == n_archs:  # a partial summary survives a time limit
            path = _write_fidelity(Path(out), rows, proxy, full, n_seeds, n_archs, epochs, dev,
                                   seconds_per_candidate, time.time() - t0)
    return path


def _write_fidelity(out: Path, rows: list[dict[str, Any]], proxy: list[float], full: list[float], n_seeds: int,
                    n_archs: int, epochs: int, device: str, seconds_per_candidate: float, seconds: float) -> Path:
    from scipy.stats import kendalltau, spearmanr
    rho, tau = spearmanr(proxy, full)[0], kendalltau(proxy, full)[0]
    meta = machine_meta(n_seeds, archs=f"{len(rows)} of {n_archs}", final_epochs=epochs, device=device,
                        spearman=round(float(rho), 3), kendall=round(float(tau), 3),
                        proxy_seconds_per_candidate=round(seconds_per_candidate, 2), seconds=round(seconds, 1))
    md = (f"# Proxy fidelity\n\nSpearman rho = **{rho:.3f}**, Kendall tau = {tau:.3f} between the search proxy "
          f"(inherit + 2 epochs PGD-3 fine-tuning, PGD-10 on validation; {seconds_per_candidate:.1f} s per candidate "
          f"on CPU when the table was built) and full training ({epochs} epochs PGD-7 from the teacher's weights, "
          f"PGD-20 on the test split, mean over {n_seeds} seeds) for {len(rows)} architectures across the table's "
          "MACs range.\n\n" + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    return write_summary(out, "fidelity", {"meta": meta, "rows": rows}, md)


# --- throughput ------------------------------------------------------------------------------------
def _bare_pgd_loop(model, x, y, eps: float, steps: int, batch: int, bf16: bool = False) -> float:
    """Plain PyTorch PGD-AT over the tensors (already on the device): the baseline for the trainer's
    images/s. With `bf16`, the training forward runs under autocast, as the trainer does."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0, n = time.perf_counter(), 0
    for i in range(0, len(x) - batch + 1, batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        model.eval()
        delta = torch.empty_like(xb).uniform_(-eps, eps)
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
            g, = torch.autograd.grad(loss, delta)
            delta = (delta + 2.5 * eps / steps * g.sign()).clamp(-eps, eps).detach()
        model.train()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model((xb + delta).clamp(0, 1))
        loss = torch.nn.functional.cross_entropy(logits.float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(xb)
    sync()
    return n / (time.perf_counter() - t0)


def _throughput_setting(scale: str, device: torch.device):
    """(data split, info, [(model name, arch)], batch size) for a throughput scale."""
    from rcnas.data import DatasetInfo, Split, load_dataset
    from rcnas.space.teachers import teacher_arch
    from rcnas.space.arch import Arch
    if scale == "digits":
        splits = load_dataset("digits")
        return splits.train, splits.info, [("teacher wrn-28-2", teacher_arch("wrn-28-2")),
                                           ("half-size sub-network", Arch.from_widths((3, 3, 2), (1.5, 1.5, 1.5)))], 64
    if scale != "cifar":
        raise BadInput(f"unknown throughput scale {scale!r}; use digits or cifar")
    # CIFAR-shaped random data: throughput does not depend on the pixels (nothing is downloaded)
    n = 128 * (24 if device.type == "cuda" else 2)
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    info = DatasetInfo("cifar-shaped", 10, 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 8 / 255, "crop-flip")
    return split, info, [("wrn-16-4", teacher_arch("wrn-16-4")), ("wrn-28-10", teacher_arch("wrn-28-10"))], 128


@BENCHES.register("throughput")
def bench_throughput(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                     device: str = "cpu", scale: str = "digits") -> Path:
    """PGD-7 adversarial-training images/s of rcnas's trainer against a bare loop on the same model in
    the same run, in fp32 and in bf16 + channels_last (+ torch.compile on CUDA), and the cost of one
    candidate evaluation of the digits search proxy. Each number is the second epoch's (after warm-up)."""
    from rcnas.device import resolve_device
    from rcnas.models import build_model
    from rcnas.search.evaluator import ProxyConfig, TrainEvaluator
    from rcnas.space.arch import Arch
    from rcnas.train import TrainConfig, fit
    dev = resolve_device(device)
    split, info, models, batch = _throughput_setting(scale, dev)
    repeats = seeds or (1 if quick or dev.type == "cuda" else 3)
    variants = [("fp32", {}), ("bf16+channels_last", {"bf16": True, "channels_last": True})]
    if dev.type == "cuda" and not quick:
        variants.append(("bf16+channels_last+compile", {"bf16": True, "channels_last": True, "compile": True}))
    x, y = split.x.to(dev), split.y.to(dev)
    rows = []
    for name, arch in models[:1] if quick else models:
        for variant, flags in variants:
            if flags.get("compile") and name == "wrn-28-10":
                continue  # compiling the large model costs minutes of a short GPU lease
            ours, bare = [], []
            for r in range(repeats):
                torch.manual_seed(r)
                m1 = build_model(arch, info.num_classes, info.channels, info.mean, info.std)
                m2 = build_model(arch, info.num_classes, info.channels, info.mean, info.std)
                m2.load_state_dict(m1.state_dict())
                cfg = TrainConfig(recipe="pgd", epochs=1 if quick else 2, batch_size=batch, attack_steps=7,
                                  eps=info.default_eps, select_by="last", guard=False, seed=r, device=str(dev),
                                  **flags)
                res = fit(m1, split, None, cfg, info=info, progress=False)
                ours.append(res.history[-1]["time/img_per_s"])
                m2.to(dev)
                if flags.get("channels_last"):
                    m2.to(memory_format=torch.channels_last)
                for _ in range(1 if quick else 2):  # the last pass counts
                    speed = _bare_pgd_loop(m2, x, y, info.default_eps, 7, batch, bf16=flags.get("bf16", False))
                bare.append(speed)
            (mo, so), (mb, sb) = mean_std(ours), mean_std(bare)
            rows.append({"model": name, "variant": variant, "rcnas_img_per_s": f"{mo:.0f} ± {so:.0f}",
                         "bare_img_per_s": f"{mb:.0f} ± {sb:.0f}", "ratio": round(mo / mb, 3)})
    task = resolve(Task("digits", "pgd", "wrn-28-2", "0.5x"))
    ev = TrainEvaluator(ProxyConfig(), device=str(dev))
    ev._teacher("digits", "wrn-28-2")
    times = []
    for arch in (Arch.from_widths((2, 2, 2), (1, 1, 1)), Arch.from_widths((3, 3, 2), (1.5, 1.5, 1.5)),
                 Arch.from_widths((4, 2, 1), (2, 1, 1)))[: 1 if quick else 3]:
        t0 = time.perf_counter()
        ev.evaluate(task, arch, 0)
        times.append(time.perf_counter() - t0)
    m, s = mean_std(times)
    rows.append({"model": "candidate evaluation (digits proxy)", "variant": "fp32",
                 "seconds_per_candidate": f"{m:.2f} ± {s:.2f}", "candidates_per_hour": round(3600 / m)})
    meta = machine_meta(repeats, device=str(dev), scale=scale, batch=batch,
                        note=f"PGD-7 adversarial training, batch {batch}, {info.name}; img/s of the 2nd epoch")
    name = "throughput" if scale == "digits" and dev.type == "cpu" else f"throughput-{scale}-{dev.type}"
    md = (f"# Throughput ({scale}, {dev.type}{': ' + meta['cuda'] if dev.type == 'cuda' else ''})\n\n"
          "rcnas's trainer against a bare PyTorch PGD-AT loop on the same model, same run "
          "(ratio = rcnas / bare), and the cost of one candidate evaluation of the search proxy.\n\n"
          + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    return write_summary(Path(out), name, {"meta": meta, "rows": rows}, md)


@BENCHES.register("all")
def bench_all(out: str = "bench/results", seeds: int | None = None, quick: bool = False) -> Path:
    import rcnas.bench.comparison
    import rcnas.bench.tabular  # noqa: F401  (registers "search", "adaptation")
    for name in ("throughput", "search", "adaptation", "real-search", "fidelity", "comparison"):
        BENCHES.get(name)(out=out, seeds=seeds, quick=quick)
    return Path(out)


__all__ = ["bench_fidelity", "bench_real_search", "bench_throughput", "machine_meta", "mean_std"]
