"""Benchmarks: `rcnas bench WHICH` writes JSON results and a markdown summary (machine, versions,
seeds, mean ± std) under bench/results/."""
from rcnas.bench.runner import BENCHES, run_bench

__all__ = ["BENCHES", "run_bench"]
