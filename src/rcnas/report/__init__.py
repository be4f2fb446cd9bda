"""Reports: `write_report(run_dir)` writes report.md and its plots for a run or bench directory.

Importing this package does not import matplotlib; the plot functions do, on their own Agg canvas.
"""
from __future__ import annotations

from rcnas.report.markdown import render_report, write_report
from rcnas.report.plots import (pareto_front, plot_pareto, plot_regret, plot_reward_curve, plot_topology,
                                running_best)

__all__ = ["write_report", "render_report", "pareto_front", "running_best", "plot_reward_curve",
           "plot_pareto", "plot_topology", "plot_regret"]
