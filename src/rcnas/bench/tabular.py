"""Search efficiency and adaptation on the tabular benchmarks (`rcnas bench search|adaptation`).

Every searcher runs through the same ask/tell driver, evaluator and counting: a search's curve is its
best reward after 1..k *distinct* evaluations (re-proposals and cache hits do not count). It is scored
by the **normalised regret** = (optimum - best found) / (optimum - median), over the architectures of
the table that fit the task's budget: 0 is the optimum, 1 the median network, so numbers compare
across tables. Two views: every network within the budget, and only those using >= 80% of it, where
"fill the budget" no longer decides. The reward is the accuracy under the task's attack relative to
the teacher's (`--reward accuracy`): on a table the proxy is the ground truth.

The held-out tables are the ones the agent never saw in meta-training (its `agent.json` lists the
tables it trained on); the transferred ranking is built from the same training tables.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from rcnas.bench.runner import BENCHES
from rcnas.bench.summary import machine_meta, mean_std, meta_lines, table_md, write_summary
from rcnas.errors import BadInput
from rcnas.search.table import Table, TableEvaluator, load_tables
from rcnas.tasks import ResolvedTask, Task, resolve

ATTACKS = ("clean", "fgsm", "pgd", "cw", "aa")
# [choice] three of the five meta-training budgets, so that 100 seeds x 10 methods fit an hour on 2 cores
BUDGETS = ("0.3x", "0.5x", "0.7x")
VIEWS = {"all": 0.0, ">=80%": 0.8}     # the floor on a candidate's MACs, as a fraction of the budget
MIN_FEASIBLE = 20                      # a task setting with fewer networks that fit tests nothing
REWARD = "accuracy"
SEARCH_METHODS = ("rcnas", "rcnas-scratch", "random", "evolution", "tpe", "largest", "transferred",
                  "uniform", "last-stage", "compound")
RULES = ("uniform", "last-stage", "compound")


@dataclass(frozen=True, eq=False)
class TableTask:
    """One task setting on one table, in one view, with its exact optimum and median."""
    table: Table
    task: ResolvedTask
    view: str

    @property
    def min_macs(self) -> int:
        return math.ceil(VIEWS[self.view] * self.task.budget_macs)

    def context(self, evaluator: TableEvaluator, store=None):
        from rcnas.search.driver import SearchContext
        from rcnas.search.store import Store
        return SearchContext(self.task, self.table.space(self.task), evaluator, store or Store(":memory:"),
                             seed=0, reward_name=REWARD, min_macs=self.min_macs)

    @cached_property
    def values(self) -> list[float]:
        """The rewards of every architecture that fits (the reward is the metric / the teacher's)."""
        ctx = self.context(TableEvaluator({self.table.name: self.table}))
        return sorted(ctx.reward(self.table.record(self.task, ctx.space.arch(s))) for s in ctx.feasible_states())

    @property
    def optimum(self) -> float:
        return self.values[-1]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def regret(self, best: float) -> float:
        spread = self.optimum - self.median
        return (self.optimum - best) / spread if spread > 0 else 0.0

    @property
    def key(self) -> str:
        return f"{self.table.name}|{self.task.attack}|{self.task.task.budget}|{self.view}"


def table_tasks(tables: list[Table], attacks=ATTACKS, budgets=BUDGETS, views=tuple(VIEWS)) -> list[TableTask]:
    """Every (table, attack, budget, view) with at least MIN_FEASIBLE networks and a spread."""
    out = []
    for table in tables:
        for attack in attacks:
            for budget in budgets:
                task = resolve(Task(table.dataset, attack, table.teacher, budget, table.eps))
                for view in views:
                    tt = TableTask(table, task, view)
                    if len(tt.values) >= MIN_FEASIBLE and tt.optimum > tt.median:
                        out.append(tt)
    return out


def agent_training_tables(agent: str, tables: dict[str, Table]) -> list[str]:
    """The tables an agent was meta-trained on (from its agent.json); [] for a scratch agent."""
    from rcnas.api import PRETRAINED
    from rcnas.io import read_json
    if agent == "scratch":
        return []
    meta = read_json(Path(PRETRAINED if agent == "pretrained" else agent) / "agent.json")
    names = list(meta.get("settings", {}).get("buffers", {}).get("tables", []))
    unknown = [n for n in names if n not in tables]
    if unknown:
        raise BadInput(f"the agent was meta-trained on tables that are not here: {unknown}")
    return names


def held_out_tables(training: list[str], tables: dict[str, Table], names: list[str] | None = None) -> list[str]:
    """The tables to test on: `names`, else every table of a dataset the agent never saw."""
    if names:
        unknown = [n for n in names if n not in tables]
        if unknown:
            raise BadInput(f"unknown table {unknown[0]!r}; known: {', '.join(tables)}")
        return list(names)
    seen = {tables[n].dataset for n in training}
    return [n for n, t in tables.items() if t.dataset not in seen]


def best_curve(trials, k: int) -> list[float]:
    """Best reward after 1..k distinct evaluations (a search that ran out keeps its last best)."""
    best, out = -math.inf, []
    for t in trials:
        if t.new:
            best = max(best, t.reward)
            out.append(best)
        if len(out) == k:
            break
    return out + [best] * (k - len(out))


# --- running searches (also in worker processes) ---------------------------------------------------
_state: dict[str, Any] = {}


def _setup(agent: str, training: list[str]) -> None:
    import torch
    torch.set_num_threads(1)
    import rcnas.agent  # noqa: F401  (registers the agent's searcher)
    from rcnas.api import load_agent
    tables = load_tables()
    _state.update(tables=tables, evaluator=TableEvaluator(tables), training=[tables[n] for n in training],
                  agent=load_agent(agent, 0)[0])


def run_method(method: str, tt: TableTask, seed: int, k: int) -> list[float]:
    """One search of `method` on `tt`: its normalised regret after 1..k distinct evaluations."""
    from rcnas.agent import AgentSearcher
    from rcnas.search.driver import run_search
    from rcnas.search.searchers import make_searcher
    ctx = tt.context(_state["evaluator"])
    if method == "rcnas":
        searcher = AgentSearcher(ctx, seed, agent=_state["agent"])
    elif method == "rcnas-scratch":
        searcher = AgentSearcher(ctx, seed)
    elif method == "transferred":
        searcher = make_searcher(method, ctx, seed, tables=_state["training"])
    else:
        searcher = make_searcher(method, ctx, seed)
    try:
        trials = run_search(searcher, k, progress=False).trials
    except BadInput:  # a rule with no network in this view (>= 80% of the budget)
        return [math.nan] * k
    return [tt.regret(b) for b in best_curve(trials, k)]


def _run_chunk(job: tuple) -> list[tuple]:
    methods, task_keys, seeds, k = job
    tasks = _state["tasks"]
    return [(m, key, s, run_method(m, tasks[key], s, k)) for key in task_keys for s in seeds for m in methods]


def _load(agent: str, training: list[str], held_out: list[str]) -> None:
    _setup(agent, training)
    _state["tasks"] = {tt.key: tt for tt in table_tasks([_state["tables"][n] for n in held_out])}


def _init(agent: str, training: list[str], held_out: list[str], parent: int) -> None:
    from rcnas.workers import exit_with_parent
    exit_with_parent(parent)
    _load(agent, training, held_out)


def run_grid(methods, held_out: list[str], seeds: int, k: int, agent: str, training: list[str],
             jobs: int = 1, progress: bool = True) -> dict[str, dict]:
    """{method: {task key: [per-seed regret curves]}} for every held-out task setting and view."""
    from tqdm.auto import tqdm
    _load(agent, training, held_out)
    keys = list(_state["tasks"])
    chunks = [(tuple(methods), [key], range(seeds), k) for key in keys]
    out: dict[str, dict] = {m: {} for m in methods}
    bar = tqdm(total=len(chunks), desc="bench", disable=not progress)
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs, _init, (agent, training, held_out, os.getpid())) as pool:
            for rows in pool.imap_unordered(_run_chunk, chunks):
                _collect(out, rows)
                bar.update(1)
    else:
        for chunk in chunks:
            _collect(out, _run_chunk(chunk))
            bar.update(1)
    bar.close()
    return out


def _collect(out: dict, rows: list[tuple]) -> None:
    for method, key, seed, curve in rows:
        out[method].setdefault(key, {})[seed] = curve


# --- summaries -------------------------------------------------------------------------------------
def per_seed(results: dict[str, dict], method: str, view: str, k: int) -> list[float]:
    """For each seed, the mean normalised regret at k over the task settings of `view` (nan-free)."""
    tasks = {key: by_seed for key, by_seed in results[method].items() if key.endswith("|" + view)}
    seeds = sorted({s for by_seed in tasks.values() for s in by_seed})
    out = []
    for s in seeds:
        vals = [by_seed[s][k - 1] for by_seed in tasks.values() if not math.isnan(by_seed[s][k - 1])]
        out.append(statistics.fmean(vals) if vals else math.nan)
    return out


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a - b over seeds and its two-sided 95% t-interval (paired by seed)."""
    from scipy import stats
    d = [x - y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    if len(d) < 2:
        return math.nan, math.nan, math.nan
    m, sem = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    h = float(stats.t.ppf(0.975, len(d) - 1)) * sem
    return m, m - h, m + h


def per_setting(results: dict[str, dict], method: str, view: str, k: int) -> dict[str, float]:
    """For each task setting of `view`, the mean normalised regret at k over the seeds (nan-free)."""
    out = {}
    for key, by_seed in results[method].items():
        vals = [c[k - 1] for c in by_seed.values() if not math.isnan(c[k - 1])]
        if key.endswith("|" + view) and vals:
            out[key] = statistics.fmean(vals)
    return out


def summarise(results: dict[str, dict], methods, ks=(1, 3, 5, 10), ref: str = "rcnas") -> list[dict]:
    longest = min(len(c) for by_seed in results[ref].values() for c in by_seed.values())
    ks = [k for k in ks if k <= longest]
    rows = []
    for view in VIEWS:
        for method in methods:
            row: dict[str, Any] = {"view": view, "method": method}
            for k in ks:
                m, s = mean_std(per_seed(results, method, view, k))
                row[f"regret@{k}"] = f"{m:.3f} ± {s:.3f}"
            if method != ref:
                for k in [k for k in (5, 10) if k <= longest]:
                    d, lo, hi = paired(per_seed(results, ref, view, k), per_seed(results, method, view, k))
                    verdict = "ahead" if hi < 0 else "behind" if lo > 0 else "tie"
                    row[f"{ref}-this@{k}"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {verdict}"
            rows.append(row)
    return rows


def criteria(results: dict[str, dict], ref: str = "rcnas") -> list[dict]:
    """The done-criteria of the search issue, checked per view and k: the agent's regret at most half of
    the best of TPE, random and evolution, and below largest-first, every rule and the transferred
    ranking with paired 95% intervals (over seeds, as the issue asks, and over task settings)."""
    longest = min(len(c) for by_seed in results[ref].values() for c in by_seed.values())
    out = []
    for view in VIEWS:
        for k in [k for k in (5, 10) if k <= longest] or [longest]:
            mine = statistics.fmean(per_seed(results, ref, view, k))
            searches = {m: statistics.fmean(per_seed(results, m, view, k)) for m in ("tpe", "random", "evolution")
                        if m in results}
            best = min(searches.values()) if searches else math.nan
            below, below_settings = {}, {}
            for m in ("largest", "transferred", *RULES):
                if m in results:
                    _, _, hi = paired(per_seed(results, ref, view, k), per_seed(results, m, view, k))
                    below[m] = bool(hi < 0)
                    # [choice] also over task settings: a deterministic searcher (the greedy agent,
                    # largest-first, a rule) has the same curve for every seed, so the interval over
                    # seeds has zero width; the settings' own spread is the honest noise then.
                    mine_s, theirs_s = per_setting(results, ref, view, k), per_setting(results, m, view, k)
                    shared = sorted(set(mine_s) & set(theirs_s))
                    _, _, hi_s = paired([mine_s[x] for x in shared], [theirs_s[x] for x in shared])
                    below_settings[m] = bool(hi_s < 0)
            out.append({"view": view, "k": k, f"{ref}": round(mine, 4),
                        "best_of_tpe_random_evolution": round(best, 4),
                        "at_most_half": bool(mine <= best / 2),
                        "below_with_95%": ", ".join(f"{m}: {'yes' if v else 'NO'}" for m, v in below.items()),
                        "below_over_task_settings_95%": ", ".join(f"{m}: {'yes' if v else 'NO'}"
                                                                  for m, v in below_settings.items())})
    return out


@BENCHES.register("search")
def bench_search(out: str = "bench/results", seeds: int | None = None, quick: bool = False, evaluations: int = 10,
                 agent: str = "pretrained", jobs: int | None = None, table: list[str] | None = None) -> Path:
    """Normalised regret on held-out tables (`table`; default: those of datasets the agent never saw),
    every method, both views."""
    from rcnas.report.plots import plot_regret
    seeds = seeds or (3 if quick else 100)
    all_tables = load_tables()
    training = agent_training_tables(agent, all_tables)
    held_out = held_out_tables(training, all_tables, table)[: 1 if quick else None]
    if not held_out:
        raise BadInput("no held-out table: the agent was trained on every dataset's tables; name some with --table")
    methods = SEARCH_METHODS if training else tuple(m for m in SEARCH_METHODS if m not in ("rcnas", "transferred"))
    t0 = time.time()
    results = run_grid(methods, held_out, seeds, evaluations, agent, training, jobs or 1)
    ref = "rcnas" if "rcnas" in methods else "rcnas-scratch"
    rows = summarise(results, methods, ref=ref)
    checks = criteria(results, ref=ref)
    name = "search" + ("" if agent == "pretrained" else "-" + Path(agent).name)
    curves = {}
    for view in VIEWS:
        for m in methods:
            per_k = [per_seed(results, m, view, k) for k in range(1, evaluations + 1)]
            curves[f"{m} ({view})"] = ([statistics.fmean(x) for x in per_k], [statistics.stdev(x) for x in per_k])
    for view in VIEWS:
        plot_regret({k.split(" (")[0]: v for k, v in curves.items() if k.endswith(f"({view})")},
                    Path(out) / f"{name}_regret_{'all' if view == 'all' else '80'}.png",
                    ylabel="normalised regret", title=f"held-out tables, {view} of the budget")
    n_tasks = {v: sum(1 for key in results[ref] if key.endswith("|" + v)) for v in VIEWS}
    meta = machine_meta(seeds, evaluations=evaluations, agent=agent, training_tables=training,
                        held_out_tables=held_out, task_settings=n_tasks, reward=REWARD,
                        seconds=round(time.time() - t0, 1),
                        note="per seed: the mean over the held-out task settings of the view; ± is the std over "
                             "seeds; [lo, hi] is the paired 95% t-interval of the difference")
    md = ("# Search efficiency on held-out tables\n\nNormalised regret = (optimum - best found) / (optimum - median "
          "of the networks that fit), after k distinct evaluations (0: the optimum; 1: the median network). "
          f"{seeds} seeds per task setting; held-out tables: {', '.join(held_out)}.\n\n"
          + table_md(rows) + "\n## The issue's criteria\n\n" + table_md(checks)
          + f"\n![all]({name}_regret_all.png)\n![80]({name}_regret_80.png)\n\n" + meta_lines(meta) + "\n")
    result = {"meta": meta, "rows": rows, "criteria": checks,
              "curves": {k: {"mean": m, "std": s} for k, (m, s) in curves.items()}}
    return write_summary(Path(out), name, result, md)


@BENCHES.register("tables")
def bench_tables(out: str = "bench/results", seeds: int | None = None, quick: bool = False) -> Path:
    """What each shipped table is and what it cost (summed evaluation time; builds ran 2 workers on 2
    cores, so wall-clock is about half), and its noise floor: the Spearman correlation between two
    training seeds' scores of the same architectures, per metric."""
    from scipy import stats
    rows = []
    for name, t in sorted(load_tables().items()):
        d = t.data
        row: dict[str, Any] = {"table": name, "architectures": len(d["rows"]), "seeds": len(d["rows"][0]["seeds"]),
                               "input": f"{d['input_size']}x{d['input_size']}",
                               "blocks": "+".join(d["grid"]["blocks"]),
                               "teacher_epochs": d["proxy"]["teacher_epochs"],
                               "evaluation_hours": round(float(d["evaluation_seconds"]) / 3600, 2)}
        for metric in ("clean", "pgd", "worst"):
            a = [r["seeds"][0][metric] for r in d["rows"]]
            b = [r["seeds"][1][metric] for r in d["rows"]]
            row[f"seed_spearman_{metric}"] = round(float(stats.spearmanr(a, b)[0]), 3)
        rows.append(row)
    total = round(sum(r["evaluation_hours"] for r in rows), 2)
    meta = machine_meta("as built", tables=len(rows), evaluation_hours=total,
                        note="evaluation_hours: the sum of the per-candidate proxy times recorded in the table "
                             "(2 worker processes, one torch thread each, often beside other jobs: an upper bound)")
    md = ("# The tabular benchmarks\n\nEvery architecture of each grid scored by the search proxy "
          "(`rcnas bench build-table`); the seed columns are the rank agreement of two training seeds "
          "(the table's own noise floor).\n\n" + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    return write_summary(Path(out), "tables", {"meta": meta, "rows": rows}, md)


@BENCHES.register("adaptation")
def bench_adaptation(out: str = "bench/results", seeds: int | None = None, quick: bool = False,
                     evaluations: int = 40, agent: str = "pretrained", jobs: int | None = None,
                     table: list[str] | None = None) -> Path:
    """On the tables the agent never saw: how many evaluations the meta-trained agent, fine-tuned
    within the search, needs to reach the final best reward of an agent trained from scratch (the same
    searcher, untrained) given `evaluations` evaluations."""
    seeds = seeds or (2 if quick else 20)
    all_tables = load_tables()
    training = agent_training_tables(agent, all_tables)
    if not training:
        raise BadInput("bench adaptation compares a meta-trained agent with scratch: give --agent DIR")
    held_out = held_out_tables(training, all_tables, table)[: 1 if quick else None]
    if not held_out:
        raise BadInput("no held-out table: the agent was trained on every dataset's tables; name some with --table")
    t0 = time.time()
    results = run_grid(("rcnas", "rcnas-scratch"), held_out, seeds, evaluations, agent, training, jobs or 1)
    rows = []
    for view in VIEWS:
        keys = [key for key in results["rcnas"] if key.endswith("|" + view)]
        needed = []
        for key in keys:
            for seed, scratch in results["rcnas-scratch"][key].items():
                target = scratch[-1]  # regret, lower is better
                meta = results["rcnas"][key][seed]
                needed.append(next((k + 1 for k, r in enumerate(meta) if r <= target + 1e-12), math.inf))
        reached = [n for n in needed if n < math.inf]
        within = sum(n <= evaluations // 5 for n in needed) / len(needed)
        m, s = mean_std(reached)
        rows.append({"view": view, "searches": len(needed), "reached": f"{len(reached)}/{len(needed)}",
                     "median_evaluations": statistics.median(needed) if needed else math.nan,
                     "mean_evaluations_when_reached": f"{m:.1f} ± {s:.1f}",
                     f"within_{evaluations // 5}": round(within, 3),
                     "scratch_final_regret": f"{statistics.fmean(per_seed(results, 'rcnas-scratch', view, evaluations)):.3f}",
                     f"meta_regret@{evaluations // 5}": f"{statistics.fmean(per_seed(results, 'rcnas', view, evaluations // 5)):.3f}",
                     "meta_final_regret": f"{statistics.fmean(per_seed(results, 'rcnas', view, evaluations)):.3f}"})
    meta = machine_meta(seeds, evaluations=evaluations, agent=agent, training_tables=training,
                        held_out_tables=held_out, seconds=round(time.time() - t0, 1),
                        note="per (task setting, seed): the first k at which the meta-trained agent's best is at "
                             "least the scratch agent's best after all its evaluations (inf: never)")
    md = ("# Adaptation to held-out tables\n\nThe evaluations the meta-trained agent (fine-tuned within the "
          f"search) needs to reach the final best of the same agent from scratch given {evaluations} "
          f"evaluations, on the task settings of {', '.join(held_out)} ({seeds} seeds each).\n\n"
          + table_md(rows) + "\n" + meta_lines(meta) + "\n")
    name = "adaptation" + ("" if agent == "pretrained" else "-" + Path(agent).name)
    return write_summary(Path(out), name, {"meta": meta, "rows": rows}, md)


__all__ = ["TableTask", "bench_adaptation", "bench_search", "best_curve", "criteria", "run_grid", "summarise", "table_tasks"]
