"""How long `make run` takes from a fresh cache (`rcnas bench make-run`), idle and beside busy neighbours.

Each condition runs the Makefile's command (`rcnas run --no-teacher-at`) in a new process with an
empty teacher cache and a new output directory, so it pays for everything a newcomer's first run pays
for: the teacher's training, the search, the final trainings and evaluations, the report. A
"neighbour" is a process spinning on one core for the whole run (a laptop is never idle).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rcnas.bench.runner import BENCHES
from rcnas.bench.summary import machine_meta, meta_lines, table_md, write_summary
from rcnas.errors import BadInput, RunFailure
from rcnas.io import read_json

COMMAND = ("run", "--no-teacher-at")  # what `make run` runs (the Makefile's run target)


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def timed_run(neighbours: int = 0) -> dict:
    """Wall time and the stages' timings of one fresh `rcnas run` beside `neighbours` busy processes."""
    load = os.getloadavg()[0]  # other work already running: an "idle" row is only idle if this is ~0
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    spinners = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(neighbours)]
    for p in spinners:
        p.start()
    try:
        with tempfile.TemporaryDirectory(prefix="rcnas-make-run-") as tmp:
            env = os.environ | {"RCNAS_CACHE": str(Path(tmp) / "cache")}
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "rcnas.cli", *COMMAND, "--out", str(Path(tmp) / "run")],
                                  check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                raise RunFailure(f"rcnas run failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
            summary = read_json(Path(tmp) / "run" / "summary.json")
    finally:
        stop.set()
        for p in spinners:
            p.join(10)
    timings = summary["timings_s"]
    stage = lambda prefix: round(sum(v or 0.0 for k, v in timings.items() if k.startswith(prefix)), 1)
    return {"condition": "idle" if neighbours == 0 else f"beside {neighbours} busy process(es)",
            "wall_minutes": round(wall / 60, 2), "teacher_s": round(timings["teacher"], 1),
            "search_s": stage("search/"), "train_s (sum)": stage("train/"), "eval_s (sum)": stage("eval/"),
            "networks": ", ".join(summary["models"]), "final_processes": summary["config"].get("jobs") or "auto",
            "load_before": round(load, 2)}


@BENCHES.register("make-run")
def bench_make_run(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                   neighbours: int | None = None) -> Path:
    """`make run` from a fresh cache, idle and (with --neighbours N) beside N busy processes."""
    if quick:
        raise BadInput("bench make-run has no quick form: it times the real command")
    rows = [timed_run(0)] + ([timed_run(neighbours)] if neighbours else [])
    meta = machine_meta(1, timed_command="rcnas " + " ".join(COMMAND), cache="empty (RCNAS_CACHE in a new directory)",
                        note="train/eval sums are CPU-process seconds: the networks train in parallel processes")
    md = ("# `make run` from a fresh cache\n\nWall time of the Makefile's `run` command in a new process with an "
          "empty teacher cache, and the stages' own timings (`summary.json`'s `timings_s`).\n\n"
          + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    return write_summary(Path(out), "make-run", {"meta": meta, "rows": rows}, md)


__all__ = ["bench_make_run", "timed_run"]
