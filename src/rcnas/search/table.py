"""The tabular benchmark: sub-network spaces of several teachers evaluated exhaustively with the
search proxy, shipped in the package, and served as a drop-in evaluator (`--evaluator table`).

One table per (dataset, teacher, eps) holds, for every architecture of a grid defined relative to
its teacher (`SearchSpace.relative`), every metric one proxy run measures (clean, FGSM, PGD, CW and
their per-sample worst case, for each training seed), LIPS, MACs and parameters. Attacks and budgets
cost nothing extra: one proxy run scores every attack kind, a budget only filters. A query returns
the mean over the table's seeds (the per-seed values are in `Record.extra`). Searchers and agents
can then be compared over hundreds of seeds in seconds against each table's exact optimum.
`rcnas bench build-table` builds and extends the tables (`rcnas.bench.table_builder`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rcnas.cost import arch_cost
from rcnas.errors import BadInput
from rcnas.search.evaluator import EVALUATORS, Evaluator
from rcnas.search.space import SearchSpace
from rcnas.search.store import Record
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask, table_name

METRICS = ("clean", "fgsm", "pgd", "cw", "worst")
TABLE_FORMAT = 2
ENV_TABLES = "RCNAS_TABLES"  # a directory of tables to serve instead of the shipped ones

# The first table (format 1) predates the relative grids: wrn-28-2 on digits with depths {1, 2, 4} and
# half or full width per stage (216 architectures, 5 seeds, the proxy with 10-step attacks).
_V1_GRID = {"depths": [[1, 2, 4]] * 3, "channels": [[16, 32], [32, 64], [64, 128]], "blocks": ["basic"]}


def tables_dir() -> Path:
    """`$RCNAS_TABLES`, else the tables shipped in the package (read at call time, not import time)."""
    return Path(os.environ.get(ENV_TABLES) or Path(__file__).resolve().parent.parent / "assets" / "tables")


@dataclass(frozen=True, eq=False)
class Table:
    """One loaded table (a gzip JSON file of format 2)."""
    data: dict
    path: Path

    @property
    def name(self) -> str:
        return table_name(self.dataset, self.teacher, self.eps)

    @property
    def dataset(self) -> str:
        return self.data["dataset"]

    @property
    def teacher(self) -> str:
        return self.data["teacher"]

    @property
    def eps(self) -> float:
        return float(self.data["eps"])

    @property
    def version(self) -> str:
        return self.data["version"]

    @cached_property
    def rows(self) -> dict[str, dict]:
        return {r["arch"]: r for r in self.data["rows"]}

    @cached_property
    def means(self) -> dict[str, dict[str, float]]:
        """Per architecture key, each metric's mean over the table's seeds."""
        return {k: {m: sum(s[m] for s in r["seeds"]) / len(r["seeds"]) for m in METRICS}
                for k, r in self.rows.items()}

    @cached_property
    def teacher_macs(self) -> int:
        return max(r["macs"] for r in self.rows.values())  # every grid holds its teacher

    @cached_property
    def shapes(self) -> dict[str, tuple[float, ...]]:
        """Per architecture key, its per-stage (depth, channels) relative to the teacher (6 numbers)."""
        from rcnas.space.teachers import teacher_arch
        t = teacher_arch(self.teacher)
        out = {}
        for key, row in self.rows.items():
            a = Arch.from_dict(row["arch_dict"])
            out[key] = tuple(x for i in range(3) for x in (a.depths[i] / t.depths[i], a.channels[i] / t.channels[i]))
        return out

    def covers(self, task: ResolvedTask) -> bool:
        return (task.dataset, task.teacher) == (self.dataset, self.teacher) and abs(task.eps - self.eps) < 1e-9

    def space(self, task: ResolvedTask) -> SearchSpace:
        g = self.data["grid"]
        return SearchSpace(task.teacher_arch, tuple(tuple(d) for d in g["depths"]),
                           tuple(tuple(c) for c in g["channels"]), tuple(g["blocks"]),
                           task.input_size, task.in_channels, task.num_classes)

    def record(self, task: ResolvedTask, arch: Arch) -> Record:
        row = self.rows.get(arch.key())
        if row is None:
            raise BadInput(f"{arch} is not in the table {self.name}; its grid is {self.data['grid']}")
        cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
        return Record(arch, dict(self.means[arch.key()]), cost.macs, cost.params, seconds=0.0,
                      extra={"seeds": row["seeds"]})

    def lips(self, arch: Arch) -> float:
        row = self.rows.get(arch.key())
        return float(row["lips"]) if row is not None else 0.0


def _upgrade(table: dict) -> dict:
    """A format-1 table as format 2 (the grid it was built on and each row's cost written out; the
    measured numbers untouched)."""
    if table.get("format") != 1:
        return table
    from rcnas.data.base import DATASETS
    spec = DATASETS.get(table["dataset"])
    rows = []
    for row in table["rows"]:
        cost = arch_cost(Arch.from_dict(row["arch_dict"]), spec.input_size, spec.channels, spec.num_classes)
        rows.append(row | {"macs": cost.macs, "params": cost.params})
    return table | {"format": TABLE_FORMAT, "grid": _V1_GRID, "input_size": spec.input_size, "rows": rows}


def load_table(path: str | Path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no tabular benchmark at {path}; build it with `rcnas bench build-table`")
    try:
        with gzip.open(path, "rt") as f:
            data = _upgrade(json.load(f))
    except (OSError, json.JSONDecodeError, AttributeError):
        raise BadInput(f"{path} is not a readable table (gzip JSON); rebuild it with `rcnas bench build-table`") from None
    if data.get("format") != TABLE_FORMAT or not {"rows", "grid", "dataset", "teacher", "eps"} <= set(data):
        raise BadInput(f"{path} is a table of an unknown format; rebuild it with `rcnas bench build-table`")
    return Table(data, path)


def load_tables(directory: str | Path | None = None) -> dict[str, Table]:
    """Every table in `directory` (default `tables_dir()`), by name."""
    directory = Path(directory) if directory is not None else tables_dir()
    tables = [load_table(p) for p in sorted(directory.glob("*.json.gz"))]
    if not tables:
        raise BadInput(f"no tables in {directory}; build them with `rcnas bench build-table`")
    return {t.name: t for t in tables}


@EVALUATORS.register("table")
class TableEvaluator(Evaluator):
    """Serves every task setting whose (dataset, teacher, eps) has a table."""
    name = "table"

    def __init__(self, tables: Mapping[str, Table] | str | Path | None = None) -> None:
        self._given = tables
        self.calls = 0

    @cached_property
    def tables(self) -> dict[str, Table]:
        if isinstance(self._given, Mapping):
            return dict(self._given)
        return load_tables(self._given)

    @property
    def proxy_key(self) -> str:  # type: ignore[override]
        versions = ",".join(f"{n}={t.version}" for n, t in sorted(self.tables.items()))
        return "table:" + hashlib.sha256(versions.encode()).hexdigest()[:16]

    def table_for(self, task: ResolvedTask) -> Table:
        for table in self.tables.values():
            if table.covers(task):
                return table
        known = ", ".join(sorted(self.tables))
        raise BadInput(f"no table covers {task.dataset} / {task.teacher} / eps {task.eps:g}; tables: {known}; "
                       "use --evaluator train")

    def space(self, task: ResolvedTask) -> SearchSpace:
        return self.table_for(task).space(task)

    def evaluate(self, task: ResolvedTask, arch: Arch, seed: int) -> Record:
        record = self.table_for(task).record(task, arch)
        self.calls += 1
        return record

    def lips(self, task: ResolvedTask, arch: Arch) -> float:
        return self.table_for(task).lips(arch)


__all__ = ["METRICS", "Table", "TableEvaluator", "load_table", "load_tables", "table_name", "tables_dir"]
