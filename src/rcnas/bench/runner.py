"""The benchmark registry; filled by rcnas.bench.suites, rcnas.bench.tabular, rcnas.bench.comparison,
rcnas.bench.make_run and rcnas.bench.results_page."""
from __future__ import annotations

from typing import Any

from rcnas.registry import Registry

BENCHES: Registry = Registry("benchmark")


def run_bench(which: str, out: str = "bench/results", seeds: int | None = None, quick: bool = False,
              **options: Any):
    """Run benchmark `which`; `options` are that benchmark's own (None values are dropped)."""
    import rcnas.bench.comparison
    import rcnas.bench.make_run
    import rcnas.bench.results_page
    import rcnas.bench.suites
    import rcnas.bench.tabular  # noqa: F401
    if which == "build-table":
        from rcnas.bench.table_builder import build_tables
        written = build_tables(options.get("table"), seeds=seeds or 2, workers=options.get("jobs") or 2)
        return written[-1].parent if written else None
    import inspect

    from rcnas.errors import BadInput
    bench = BENCHES.get(which)
    given = {k: v for k, v in options.items() if v not in (None, False)}
    accepted = inspect.signature(bench).parameters
    for key in given:
        if key not in accepted:
            raise BadInput(f"bench {which} takes no --{key.replace('_', '-')}; see rcnas bench --help")
    return bench(out=out, seeds=seeds, quick=quick, **given)
