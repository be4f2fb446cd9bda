"""`rcnas bench build-table`: evaluate every architecture of each table's grid with the real search
proxy (a few training seeds each) and write the compact tables that `--evaluator table` serves.

Resumable: every evaluation (and its LIPS) lands in one SQLite store first (the same store as any
search, under the cache), so a killed build continues where it stopped, on this machine. Candidates
run in worker processes (one torch thread each); each table's teacher is trained in this process
while the workers already evaluate the tables before it. A table is written as soon as its last
evaluation lands. Extending a shipped table with more seeds needs the teacher it was built with:
its rows are taken over only when the cached teacher's weights digest matches the table's.
"""
from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from rcnas.errors import BadInput
from rcnas.io import atomic_write
from rcnas.search.evaluator import ProxyConfig, TrainEvaluator, safe_evaluate
from rcnas.search.space import SearchSpace
from rcnas.search.store import Record, Store
from rcnas.search.table import METRICS, TABLE_FORMAT, load_table, tables_dir
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask, Task, resolve, table_name
from rcnas.workers import exit_with_parent


@dataclass(frozen=True)
class TableSpec:
    """One table to build: a (dataset, teacher, eps), the grid's width fractions and the proxy that
    scores it (default: the search's own proxy with 5-step instead of 10-step PGD/CW scoring [choice]:
    a quarter cheaper, so that every table fits the 2-core budget)."""
    dataset: str
    teacher: str
    eps: float
    teacher_epochs: int = 15
    width_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    blocks: tuple[str, ...] = ("basic",)
    proxy_config: ProxyConfig | None = None

    @property
    def proxy(self) -> ProxyConfig:
        return self.proxy_config or ProxyConfig(val_steps=5, teacher_epochs=self.teacher_epochs)

    @property
    def name(self) -> str:
        return table_name(self.dataset, self.teacher, self.eps)

    def task(self) -> ResolvedTask:
        return resolve(Task(self.dataset, "pgd", self.teacher, "1.0x", self.eps))


# Built in this order (cheapest first, so the first tables arrive early). Digits: 3 teachers x 2 eps,
# and one more teacher whose grid offers RobustResNet's robust block in every stage (so the agent meets
# it before a real search offers it); MNIST-5k and Fashion-MNIST at 14x14 (2x2 average pooled: a quarter
# of the cost of 28x28), 2 teachers each. Fashion-MNIST is the held-out dataset of the shipped agent.
# Teachers differ in depth (1-3 blocks per stage) and width (x1, x2): grids of 27 to 729 networks.
TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec("digits", "wrn-16-1", 0.15),
    TableSpec("fashion-mnist-14", "wrn-16-1", 0.1, teacher_epochs=8),
    TableSpec("mnist5k-14", "wrn-10-2", 0.2),
    TableSpec("mnist5k-14", "wrn-16-1", 0.2),
    TableSpec("digits", "wrn-10-2", 0.15, blocks=("basic", "robust")),  # the robust block in every stage
    TableSpec("digits", "wrn-16-1", 0.1),
    TableSpec("digits", "wrn-16-2", 0.15),
    TableSpec("digits", "wrn-22-1", 0.15),
    TableSpec("fashion-mnist-14", "wrn-22-1", 0.1, teacher_epochs=8),
    TableSpec("digits", "wrn-16-2", 0.1),
    TableSpec("digits", "wrn-22-1", 0.1),
)


def table_specs(names: list[str | TableSpec] | None = None) -> list[TableSpec]:
    """The specs of the named tables (TABLE_SPECS); a TableSpec given is taken as it is."""
    if not names or names == ["all"]:
        return list(TABLE_SPECS)
    by_name = {s.name: s for s in TABLE_SPECS}
    unknown = [n for n in names if not isinstance(n, TableSpec) and n not in by_name]
    if unknown:
        raise BadInput(f"unknown table {unknown[0]!r}; known: {', '.join(by_name)}")
    return [n if isinstance(n, TableSpec) else by_name[n] for n in names]


_worker: dict = {}


def _init_worker(parent: int) -> None:
    import torch
    exit_with_parent(parent)
    torch.set_num_threads(1)


def _evaluate(job: tuple[TableSpec, Arch, int]) -> tuple[str, Arch, int, Record, float | None]:
    spec, arch, seed = job
    if spec.name not in _worker:
        _worker[spec.name] = (TrainEvaluator(spec.proxy, device="cpu"), spec.task())
    ev, task = _worker[spec.name]
    record = safe_evaluate(ev, task, arch, seed)
    return spec.name, arch, seed, record, ev.lips(task, arch) if seed == 0 else None


class _TableBuild:
    """The bookkeeping of one table: what is known (store or shipped table), what is missing."""

    def __init__(self, spec: TableSpec, seeds: int, store: Store, out: Path, teacher_digest: str) -> None:
        self.spec, self.seeds, self.store, self.out = spec, seeds, store, out
        self.task = spec.task()
        self.space = SearchSpace.relative(self.task.teacher_arch, self.task.input_size, self.task.in_channels,
                                          self.task.num_classes, spec.width_fractions, spec.blocks)
        self.archs = [self.space.arch(s) for s in self.space.all_states()]
        self.proxy_key = f"train:{spec.proxy.key()}"
        self.digest = teacher_digest
        self._adopt_shipped()
        self.missing = [(a, s) for s in range(seeds) for a in self.archs if self.get(a, s) is None]
        self.lock = threading.Lock()

    def _adopt_shipped(self) -> None:
        """Rows of an existing table enter the store, if it was built on the same teacher and proxy."""
        if not self.out.is_file():
            return
        old = load_table(self.out)
        if old.data.get("teacher_digest") != self.digest or old.data.get("proxy") != json.loads(self.spec.proxy.key()):
            raise BadInput(f"{self.out} was built with another teacher or proxy than this machine's cache holds; "
                           "it cannot be extended here: remove it to rebuild it, or build into another "
                           "directory ($RCNAS_TABLES)")
        for row in old.data["rows"]:
            arch = Arch.from_dict(row["arch_dict"])
            self.store.put_feature(self.task.eval_key, arch, "lips", row["lips"])
            for seed, metrics in enumerate(row["seeds"]):
                self.store.put(self.task.eval_key, self.proxy_key, seed,
                               Record(arch, metrics, row["macs"], row["params"], seconds=row["seconds"]))

    def get(self, arch: Arch, seed: int) -> Record | None:
        return self.store.get(self.task.eval_key, arch, self.proxy_key, seed)

    def put(self, arch: Arch, seed: int, record: Record, lips: float | None) -> None:
        self.store.put(self.task.eval_key, self.proxy_key, seed, record)
        if lips is not None:
            self.store.put_feature(self.task.eval_key, arch, "lips", lips)

    def write(self) -> Path:
        rows, failed = [], 0
        for arch in self.archs:
            recs = [self.get(arch, s) for s in range(self.seeds)]
            lips = self.store.get_feature(self.task.eval_key, arch, "lips")
            if any(r is None or r.status != "ok" for r in recs) or lips is None:
                failed += 1
                continue
            rows.append({"arch": arch.key(), "arch_dict": arch.to_dict(), "macs": recs[0].macs,  # type: ignore[union-attr]
                         "params": recs[0].params, "lips": round(lips, 5),  # type: ignore[union-attr]
                         "seeds": [{m: round(r.metrics[m], 5) for m in METRICS} for r in recs],  # type: ignore[union-attr]
                         "seconds": round(sum(r.seconds for r in recs) / self.seeds, 2)})  # type: ignore[union-attr]
        sp = self.space
        table = {"format": TABLE_FORMAT, "version": f"{self.spec.name}-v2-s{self.seeds}",
                 "dataset": self.spec.dataset, "teacher": self.spec.teacher, "eps": self.spec.eps,
                 "input_size": self.task.input_size, "seeds": self.seeds,
                 "grid": {"depths": [list(d) for d in sp.depth_levels], "channels": [list(c) for c in sp.width_levels],
                          "blocks": list(sp.blocks)},
                 "proxy": json.loads(self.spec.proxy.key()), "teacher_digest": self.digest,
                 "metrics": list(METRICS), "failed": failed, "rows": rows,
                 # the work, summed over every evaluation (resumed or extended builds count what came before)
                 "evaluation_seconds": round(sum(r["seconds"] for r in rows) * self.seeds, 1)}

        def write(p: Path) -> None:
            with gzip.open(p, "wt") as f:
                json.dump(table, f, separators=(",", ":"))
        return atomic_write(self.out, write)


def _teacher_digest(spec: TableSpec) -> str:
    from rcnas.train.checkpoint import weights_digest
    return weights_digest(TrainEvaluator(spec.proxy)._teacher(spec.dataset, spec.teacher))


def plan_tables(names: list[str | TableSpec] | None = None, *, seeds: int = 2, out_dir: str | Path | None = None,
                store: str | Path | None = None) -> dict[str, int]:
    """How many evaluations each named table still needs (trains a missing teacher; evaluates nothing)."""
    from rcnas.teacher import cache_root
    out_dir = Path(out_dir) if out_dir is not None else tables_dir()
    st = Store(Path(store) if store else cache_root() / "tables" / "build.sqlite")
    return {spec.name: len(_TableBuild(spec, seeds, st, out_dir / f"{spec.name}.json.gz", _teacher_digest(spec)).missing)
            for spec in table_specs(names)}


def build_tables(names: list[str | TableSpec] | None = None, *, seeds: int = 2, workers: int = 2,
                 out_dir: str | Path | None = None, store: str | Path | None = None,
                 progress: bool = True) -> list[Path]:
    """Build (or extend to `seeds` seeds, or finish) the named tables (default: all of TABLE_SPECS)."""
    import torch

    from rcnas.teacher import cache_root
    if seeds < 1 or workers < 1:
        raise BadInput(f"--seeds and --jobs must be >= 1, got {seeds} and {workers}")
    specs = table_specs(names)
    out_dir = Path(out_dir) if out_dir is not None else tables_dir()
    st = Store(Path(store) if store else cache_root() / "tables" / "build.sqlite")
    builds: dict[str, _TableBuild] = {}
    written: list[Path] = []
    errors: list[BaseException] = []
    bar = tqdm(total=0, desc="build-table", disable=not progress, smoothing=0.05)

    def landed(result: tuple) -> None:  # runs in the pool's result thread
        name, arch, seed, record, lips = result
        b = builds[name]
        with b.lock:
            b.put(arch, seed, record, lips)
            b.missing.remove((arch, seed))
            done = not b.missing
        bar.update(1)
        if done:
            written.append(b.write())
            bar.write(f"wrote {b.out}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the teachers train here beside the workers (and, as theirs, on one thread)
    try:
        with mp.get_context("spawn").Pool(workers, _init_worker, (os.getpid(),)) as pool:
            for spec in specs:  # each teacher trains here while the workers evaluate the tables before it
                b = builds[spec.name] = _TableBuild(spec, seeds, st, out_dir / f"{spec.name}.json.gz",
                                                    _teacher_digest(spec))
                bar.total += len(b.missing)
                bar.refresh()
                if not b.missing:
                    written.append(b.write())
                for job in list(b.missing):
                    pool.apply_async(_evaluate, ((spec, *job),), callback=landed, error_callback=errors.append)
            pool.close()
            pool.join()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    if errors:
        raise errors[0]
    return written


__all__ = ["TABLE_SPECS", "TableSpec", "build_tables", "plan_tables", "table_specs"]
