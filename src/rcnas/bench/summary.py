"""What every benchmark writes: `<out>/<name>.json` ({"meta", "rows", ...}) and a markdown summary
with the machine, versions and seeds, and mean ± std over seeds."""
from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rcnas import __version__
from rcnas.io import write_json, write_text


def machine_meta(seeds: Any, **extra: Any) -> dict[str, Any]:
    import numpy
    return {"rcnas": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seeds": seeds, **extra}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std, ignoring missing values (nan, nan when none is left)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_summary(out: Path, name: str, result: dict[str, Any], markdown: str) -> Path:
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", markdown)
    return out / f"{name}.md"


def meta_lines(meta: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in meta.items())


def table_md(rows: list[dict[str, Any]]) -> str:
    """A markdown table whose columns are the union of the rows' keys, in first-seen order."""
    if not rows:
        return "(no rows)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
