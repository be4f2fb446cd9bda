"""`rcnas bench build-table`: evaluate every architecture of the table's grid with the real search
proxy (a few seeds each) and write the compact table that `--evaluator table` serves.

Resumable: every evaluation lands in a SQLite store first (the same store as any search), so a
killed build continues where it stopped. Candidates run in worker processes (one torch thread each).
An existing table gains seeds without its old ones being evaluated again (see `build_table`).
"""
from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
from pathlib import Path

from tqdm.auto import tqdm

from rcnas.errors import BadInput, RunFailure
from rcnas.io import atomic_write
from rcnas.search.evaluator import ProxyConfig, TrainEvaluator, safe_evaluate
from rcnas.search.store import Record, Store
from rcnas.search.table import METRICS, TABLE_PATH, TABLE_TEACHER, load_table, table_space
from rcnas.space.arch import Arch
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


def build_table(out: str | Path = TABLE_PATH, *, seeds: int | None = None, workers: int = 2,
                store: str | Path | None = None, proxy: ProxyConfig | None = None, progress: bool = True,
                limit: int | None = None, check: int = 2) -> Path:
    """Evaluate the grid for `seeds` seeds and write the table to `out`.

    A table already at `out` built with the same proxy is extended, not rebuilt: its seeds are kept
    and only the missing ones are evaluated, once `check` of its architectures, evaluated again at
    seed 0, reproduce the recorded numbers exactly (else nothing is evaluated: seeds made with
    another teacher or other code must not be averaged together). Remove the file to rebuild it.
    """
    proxy = proxy or TABLE_PROXY
    task = resolve(TASK)
    space = table_space(task)
    archs = [space.arch(s) for s in space.all_states()]
    if limit is not None:
        archs = archs[:limit]
    old = _extendable(Path(out), proxy)
    kept = {row["arch"]: row for row in old["rows"]} if old else {}
    seeds = seeds or (old["seeds"] if old else 1)
    store = Store(store or Path(out).with_suffix("").with_suffix(".sqlite"))
    ev_key = f"train:{proxy.key()}"

    def known(arch, seed: int) -> bool:
        return seed < len(kept.get(arch.key(), {}).get("seeds", ())) or \
            store.get(task.eval_key, arch, ev_key, seed) is not None
    spread = list(kept.values())[::max(1, len(kept) // check)] if check > 0 else []  # check=0: none
    checks = [Arch.from_dict(row["arch_dict"]) for row in spread[:check]]
    jobs = [(a, 0) for a in checks] + [(a, s) for s in range(seeds) for a in archs if not known(a, s)]
    lips = {arch: row["lips"] for arch in archs if (row := kept.get(arch.key()))}
    # the teacher is trained once in this process (cached on disk) before the workers start
    TrainEvaluator(proxy)._teacher(task.dataset, task.teacher)
    if len(jobs) > len(checks):
        with mp.get_context("spawn").Pool(workers, _init_worker, (proxy, os.getpid())) as pool:
            checking = {(a, 0) for a in checks}  # dispatched first: a mismatch costs a check, not a build
            for arch, seed, record, l in tqdm(pool.imap_unordered(_evaluate, jobs), total=len(jobs),
                                               desc="build-table", disable=not progress):
                if (arch, seed) in checking:
                    checking.discard((arch, seed))
                    try:
                        _check_reproduces(out, kept[arch.key()], record)
                    except RunFailure:
                        pool.terminate()
                        pool.join()  # the workers gone before the error is shown, not warned about after
                        raise
                    continue
                store.put(task.eval_key, ev_key, seed, record)
                if l is not None:
                    lips[arch] = l
            pool.close()
            pool.join()
    # LIPS of archs evaluated in an earlier (interrupted) build are recomputed here (cheap)
    ev = TrainEvaluator(proxy)
    rows = []
    for arch in archs:
        row = kept.get(arch.key(), {})
        values = list(row.get("seeds", ()))[:seeds]
        recs = [store.get(task.eval_key, arch, ev_key, s) for s in range(len(values), seeds)]
        if any(r is None or r.status != "ok" for r in recs):
            continue
        values += [{m: round(r.metrics[m], 5) for m in METRICS} for r in recs]  # type: ignore[union-attr]
        seconds = [row.get("seconds", 0.0)] * (seeds - len(recs)) + [r.seconds for r in recs]  # type: ignore[union-attr]
        rows.append({"arch": arch.key(), "arch_dict": arch.to_dict(),
                     "lips": round(lips.get(arch) or ev.lips(task, arch), 5),
                     "seeds": values, "seconds": round(sum(seconds) / seeds, 2)})
    table = {"format": 1, "version": f"digits-{TABLE_TEACHER}-v1-s{seeds}", "dataset": task.dataset,
             "teacher": task.teacher, "eps": task.eps, "seeds": seeds, "proxy": json.loads(proxy.key()),
             "metrics": list(METRICS), "rows": rows,
             # the work, summed over every evaluation (a resumed or extended build counts what came before)
             "evaluation_seconds": round(sum(row["seconds"] for row in rows) * seeds, 1)}

    def write(p: Path) -> None:
        with gzip.open(p, "wt") as f:
            json.dump(table, f, separators=(",", ":"))
    return atomic_write(out, write)


def _extendable(path: Path, proxy: ProxyConfig) -> dict | None:
    """The table at `path` if it can be extended with more seeds of `proxy`, None if there is none."""
    if not path.is_file():
        return None
    table = load_table(path)
    if table.get("proxy") != json.loads(proxy.key()) or table.get("teacher") != TABLE_TEACHER:
        raise BadInput(f"{path} was built with another proxy or teacher; remove it to rebuild the table "
                       f"from scratch, or write to another path")
    return table


def _check_reproduces(out: str | Path, row: dict, record: Record) -> None:
    got = {m: round(record.metrics.get(m, float("nan")), 5) for m in METRICS}
    if record.status != "ok" or got != row["seeds"][0]:
        raise RunFailure(f"{out}: {row['arch']} at seed 0 now scores {got}, the table says {row['seeds'][0]}; "
                         f"its seeds cannot be extended on this machine or code: remove it to rebuild from scratch")


__all__ = ["build_table"]
