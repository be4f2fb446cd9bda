"""The tabular benchmark: a sub-network space of the digits teacher evaluated exhaustively with the
search proxy, shipped in the package, and served as a drop-in evaluator (`--evaluator table`).

Searchers and agents can then be compared over hundreds of seeds in seconds against the exact
optimum of the table. Each query returns the mean over the table's seeds (the per-seed values are
in `Record.extra`). `rcnas bench build-table` rebuilds the file.
"""
from __future__ import annotations

import gzip
import json
from functools import cached_property
from pathlib import Path

from rcnas.cost import arch_cost
from rcnas.errors import BadInput
from rcnas.search.evaluator import EVALUATORS, Evaluator
from rcnas.search.space import SearchSpace
from rcnas.search.store import Record
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask

import os

TABLE_PATH = Path(os.environ.get("RCNAS_TABLE") or
                  Path(__file__).resolve().parent.parent / "assets" / "table-digits.json.gz")
METRICS = ("clean", "fgsm", "pgd", "cw", "worst")

# The table's grid on the digits teacher wrn-28-2 (depths 4, channels 32/64/128): depths 1, 2 or 4 and
# half or full width per stage, basic blocks: 6^3 = 216 architectures (what 2 CPU cores could build here).
TABLE_TEACHER = "wrn-28-2"
TABLE_DEPTH_LEVELS = ((1, 2, 4),) * 3
TABLE_WIDTH_LEVELS = ((16, 32), (32, 64), (64, 128))


def table_space(task: ResolvedTask) -> SearchSpace:
    return SearchSpace(task.teacher_arch, TABLE_DEPTH_LEVELS, TABLE_WIDTH_LEVELS, ("basic",),
                       task.input_size, task.in_channels, task.num_classes)


def load_table(path: str | Path = TABLE_PATH) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no tabular benchmark at {path}; build it with `rcnas bench build-table`")
    try:
        with gzip.open(path, "rt") as f:
            table = json.load(f)
    except (OSError, json.JSONDecodeError):
        raise BadInput(f"{path} is not a readable table (gzip JSON); rebuild it with `rcnas bench build-table`") from None
    if table.get("format") != 1 or "rows" not in table:
        raise BadInput(f"{path} is a table of an unknown format; rebuild it with `rcnas bench build-table`")
    return table


@EVALUATORS.register("table")
class TableEvaluator(Evaluator):
    name = "table"

    def __init__(self, path: str | Path = TABLE_PATH) -> None:
        self.path = Path(path)
        self.calls = 0

    @cached_property
    def table(self) -> dict:
        return load_table(self.path)

    @cached_property
    def rows(self) -> dict[str, dict]:
        return {r["arch"]: r for r in self.table["rows"]}

    @property
    def proxy_key(self) -> str:  # type: ignore[override]
        return f"table:{self.table['version']}"

    def _check(self, task: ResolvedTask) -> None:
        t = self.table
        if (task.dataset, task.teacher) != (t["dataset"], t["teacher"]) or abs(task.eps - t["eps"]) > 1e-9:
            raise BadInput(f"the table covers {t['dataset']} / {t['teacher']} / eps {t['eps']} only, not "
                           f"{task.dataset} / {task.teacher} / eps {task.eps:g}; use --evaluator train")

    def space(self, task: ResolvedTask) -> SearchSpace:
        self._check(task)
        return table_space(task)

    def evaluate(self, task: ResolvedTask, arch: Arch, seed: int) -> Record:
        self._check(task)
        self.calls += 1
        row = self.rows.get(arch.key())
        if row is None:
            raise BadInput(f"{arch} is not in the table; the table's space is {TABLE_DEPTH_LEVELS[0]} blocks "
                           f"and widths {TABLE_WIDTH_LEVELS} channels per stage")
        metrics = {m: sum(v[m] for v in row["seeds"]) / len(row["seeds"]) for m in METRICS}
        cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
        return Record(arch, metrics, cost.macs, cost.params, seconds=0.0, extra={"seeds": row["seeds"]})

    def lips(self, task: ResolvedTask, arch: Arch) -> float:
        row = self.rows.get(arch.key())
        return float(row["lips"]) if row is not None else 0.0

    def optimum(self, task: ResolvedTask, metric: str, reward=None) -> tuple[Arch, float]:
        """The exact best architecture of the table within the task's budget (by `reward(record)`,
        default the metric itself)."""
        best, best_value = None, float("-inf")
        for row in self.table["rows"]:
            arch = Arch.from_dict(row["arch_dict"])
            record = self.evaluate(task, arch, 0)
            self.calls -= 1
            if record.macs > task.budget_macs:
                continue
            value = reward(record) if reward is not None else record.metrics[metric]
            if value > best_value:
                best, best_value = arch, value
        if best is None:
            raise BadInput("no architecture of the table fits the budget")
        return best, best_value
