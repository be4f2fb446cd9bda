"""`rcnas bench build-table`: evaluate every architecture of the table's grid with the real search
proxy (a few seeds each) and write the compact table that `--evaluator table` serves.

Resumable: every evaluation lands in a SQLite store first (the same store as any search), so a
killed build continues where it stopped. Candidates run in worker processes (one torch thread each).
"""
from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from rcnas.io import atomic_write
from rcnas.search.evaluator import ProxyConfig, TrainEvaluator, safe_evaluate
from rcnas.search.store import Store
from rcnas.search.table import METRICS, TABLE_PATH, TABLE_TEACHER, table_space
from rcnas.tasks import Task, resolve
from rcnas.workers import exit_with_parent

TASK = Task("digits", "pgd", TABLE_TEACHER, "1.0x")
# the shipped table's proxy: the default proxy, on the teacher trained for 30 epochs
TABLE_PROXY = ProxyConfig(teacher_epochs=30)

_worker: dict = {}


def _init_worker(proxy: ProxyConfig, parent: int) -> None:
    import torch
    exit_with_parent(parent)
    torch.set_num_threads(1)
    _worker["ev"] = TrainEvaluator(proxy, device="cpu")
    _worker["task"] = resolve(TASK)


def _evaluate(job: tuple) -> tuple:
    arch, seed = job
    ev, task = _worker["ev"], _worker["task"]
    record = safe_evaluate(ev, task, arch, seed)
    return arch, seed, record, ev.lips(task, arch) if seed == 0 else None


def build_table(out: str | Path = TABLE_PATH, *, seeds: int = 1, workers: int = 2, store: str | Path | None = None,
                proxy: ProxyConfig | None = None, progress: bool = True, limit: int | None = None) -> Path:
    proxy = proxy or TABLE_PROXY
    task = resolve(TASK)
    space = table_space(task)
    archs = [space.arch(s) for s in space.all_states()]
    if limit is not None:
        archs = archs[:limit]
    store = Store(store or Path(out).with_suffix("").with_suffix(".sqlite"))
    ev_key = f"train:{proxy.key()}"
    lips: dict = {}
    jobs = [(a, s) for s in range(seeds) for a in archs if store.get(task.eval_key, a, ev_key, s) is None]
    # the teacher is trained once in this process (cached on disk) before the workers start
    TrainEvaluator(proxy)._teacher(task.dataset, task.teacher)
    t0 = time.time()
    if jobs:
        with mp.get_context("spawn").Pool(workers, _init_worker, (proxy, os.getpid())) as pool:
            for arch, seed, record, l in tqdm(pool.imap_unordered(_evaluate, jobs), total=len(jobs),
                                               desc="build-table", disable=not progress):
                store.put(task.eval_key, ev_key, seed, record)
                if l is not None:
                    lips[arch] = l
    # LIPS of archs evaluated in an earlier (interrupted) build are recomputed here (cheap)
    ev = TrainEvaluator(proxy)
    rows = []
    for arch in archs:
        recs = [store.get(task.eval_key, arch, ev_key, s) for s in range(seeds)]
        if any(r is None or r.status != "ok" for r in recs):
            continue
        rows.append({"arch": arch.key(), "arch_dict": arch.to_dict(),
                     "lips": round(lips.get(arch) or ev.lips(task, arch), 5),
                     "seeds": [{m: round(r.metrics[m], 5) for m in METRICS} for r in recs],  # type: ignore[union-attr]
                     "seconds": round(sum(r.seconds for r in recs) / seeds, 2)})  # type: ignore[union-attr]
    table = {"format": 1, "version": f"digits-{TABLE_TEACHER}-v1-s{seeds}", "dataset": task.dataset,
             "teacher": task.teacher, "eps": task.eps, "seeds": seeds, "proxy": json.loads(proxy.key()),
             "metrics": list(METRICS), "build_seconds": round(time.time() - t0, 1), "rows": rows}

    def write(p: Path) -> None:
        with gzip.open(p, "wt") as f:
            json.dump(table, f, separators=(",", ":"))
    return atomic_write(out, write)


__all__ = ["build_table"]
