"""Placeholder registry; filled by rcnas.bench.suites."""
from __future__ import annotations

from rcnas.registry import Registry

BENCHES: Registry = Registry("benchmark")


def run_bench(which: str, out: str = "bench/results", seeds: int | None = None, quick: bool = False):
    import rcnas.bench.suites  # noqa: F401  (registers the benchmarks)
    if which == "build-table":
        from rcnas.bench.table_builder import build_table
        return build_table()
    return BENCHES.get(which)(out=out, seeds=seeds, quick=quick)
