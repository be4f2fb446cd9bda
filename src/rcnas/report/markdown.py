"""`report.md` for a run directory (made by `rcnas run`) or a bench directory (made by `rcnas bench`).

Every number comes from the directory's files: `summary.json`, `search/search.json`,
`search/trials.jsonl`, `search/agent_history.json`, `models/*/card.json` for a run; for a bench
directory, each `*.json` holding a `rows` list (and optionally `meta`). A missing or unreadable
piece only drops its section (the report says so); a directory with none of them is `BadInput`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rcnas.errors import BadInput
from rcnas.io import write_text

REPORT_NAME = "report.md"
PLOTS = {"reward_curve": "reward_curve.png", "pareto": "pareto.png", "topology": "topology.png"}
EXPECTED = ("summary.json, search/trials.jsonl, search/search.json or models/*/card.json (from `rcnas run`), "
            "search.json or trials.jsonl (from `rcnas search --out`), "
            "or bench *.json files with a 'rows' list (from `rcnas bench`)")


# --- formatting (the tests use these rules) --------------------------------------------------------
def fmt_pct(v: Any) -> str:
    """A fraction in [0,1] as a percentage with 2 decimals, no sign: 0.8123 -> '81.23'; None -> '-'."""
    v = _num(v)
    return "-" if v is None else f"{100 * v:.2f}"


def fmt_si(v: Any) -> str:
    """A count with 3 significant digits and a k/M/G suffix: 13421568 -> '13.4M'."""
    from rcnas.cost import format_macs
    v = _num(v)
    return "-" if v is None else format_macs(v)


def fmt_ratio(v: Any) -> str:
    v = _num(v)
    return "-" if v is None else f"{v:.2f}x"


def fmt_seconds(v: Any) -> str:
    v = _num(v)
    if v is None:
        return "-"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def fmt_value(v: Any) -> str:
    """A table cell: floats with 4 significant digits, lists/dicts as compact JSON, `|` escaped."""
    if v is None:
        text = "-"
    elif isinstance(v, bool):
        text = str(v).lower()
    elif isinstance(v, int):
        text = str(v)
    elif isinstance(v, float):
        text = f"{v:.4g}" if math.isfinite(v) else str(v)
    elif isinstance(v, (list, tuple, dict)):
        text = json.dumps(v, separators=(",", ":"), default=str)
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def fmt_arch(arch: dict[str, Any]) -> str:
    """`depths [4, 3, 2], widths [2, 1.5, 1], blocks [basic, basic, robust]`."""
    def seq(key: str) -> str:
        vals = arch.get(key)
        if not isinstance(vals, (list, tuple)):
            return "?"
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) + "]"
    return f"depths {seq('depths')}, widths {seq('widths')}, blocks {seq('blocks')}"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _kv_table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


# --- reading -------------------------------------------------------------------------------------
class _Reader:
    """Reads JSON files, remembering (instead of raising) what was missing or unreadable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []

    def json(self, rel: str | Path, quiet_missing: bool = True) -> Any:
        path = self.root / rel
        if not path.is_file():
            if not quiet_missing:
                self.problems.append(f"`{rel}` is missing")
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.problems.append(f"`{rel}` could not be read ({type(e).__name__}); its section is skipped")
            return None

    def jsonl(self, rel: str | Path) -> list[dict[str, Any]] | None:
        path = self.root / rel
        if not path.is_file():
            return None
        rows, bad = [], 0
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            self.problems.append(f"`{rel}` could not be read ({type(e).__name__})")
            return None
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        if bad:
            self.problems.append(f"`{rel}`: {bad} malformed line(s) skipped")
        return rows


def _cards(reader: _Reader, summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Model cards by name: models/*/card.json, else the copies in summary.json; in the summary's order."""
    from rcnas.report.plots import KINDS, model_kind
    cards: dict[str, dict[str, Any]] = {}
    models_dir = reader.root / "models"
    if models_dir.is_dir():
        for path in sorted(models_dir.glob("*/card.json")):
            card = reader.json(path.relative_to(reader.root))
            if isinstance(card, dict):
                cards[path.parent.name] = card
    if summary and isinstance(summary.get("models"), dict):
        for name, card in summary["models"].items():
            if isinstance(card, dict):
                cards.setdefault(name, card)
        order = list(summary["models"])
    else:
        order = []
    rank = {k: i for i, k in enumerate(reversed(KINDS))}  # rcnas, search, heuristic, teacher
    return dict(sorted(cards.items(), key=lambda kv: (
        order.index(kv[0]) if kv[0] in order else len(order), rank.get(model_kind(kv[0]), 9), kv[0])))


def _bench_files(root: Path, reader: _Reader) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(root.glob("*.json")):
        if path.name == "summary.json":
            continue
        data = reader.json(path.name)
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            out.append((path, data))
    return out


# --- run report ----------------------------------------------------------------------------------
def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _teacher_arch(summary: dict[str, Any], search: dict[str, Any], cards: dict[str, dict[str, Any]]):
    from rcnas.space.arch import Arch
    for name, card in cards.items():
        if name.startswith("teacher") and isinstance(card.get("arch"), dict):
            try:
                return Arch.from_dict(card["arch"])
            except BadInput:
                pass
    name = _first(summary.get("teacher"), search.get("teacher"))
    if isinstance(name, str):
        try:
            from rcnas.space.teachers import teacher_arch
            return teacher_arch(name)
        except (BadInput, ImportError):
            return None
    return None


def _run_sections(root: Path, reader: _Reader, plots: bool) -> list[str]:
    from rcnas.report import plots as P
    summary = reader.json("summary.json")
    summary = summary if isinstance(summary, dict) else {}
    sub = _search_prefix(root)
    search = reader.json(f"{sub}search.json")
    search = search if isinstance(search, dict) else (summary.get("search") if isinstance(
        summary.get("search"), dict) else {})
    trials = reader.jsonl(f"{sub}trials.jsonl")
    history = reader.json(f"{sub}agent_history.json")
    history = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    cards = _cards(reader, summary)

    task = _first(summary.get("task"), search.get("task")) or {}
    task = task if isinstance(task, dict) else {}
    teacher_name = _first(summary.get("teacher"), search.get("teacher"), task.get("teacher"))
    teacher_macs = _num(_first(summary.get("teacher_macs"), search.get("teacher_macs")))
    if teacher_macs is None:
        tcards = [c for n, c in cards.items() if n.startswith("teacher")]
        teacher_macs = _num(tcards[0].get("macs")) if tcards else None
    budget = _num(_first(summary.get("budget_macs"), search.get("budget_macs")))
    eps = _num(_first(summary.get("eps"), search.get("eps")))
    lines: list[str] = []

    # task
    if task or teacher_name or budget is not None:
        rows = []
        if task.get("dataset") is not None:
            rows.append(("dataset", fmt_value(task["dataset"])))
        if task.get("attack") is not None:
            rows.append(("attack (search objective)", fmt_value(task["attack"])))
        if eps is not None:
            rows.append(("eps (L-inf, pixels in [0,1])", f"{eps:g} ({eps * 255:.4g}/255)"))
        if teacher_name is not None:
            rows.append(("teacher", f"{fmt_value(teacher_name)}"
                         + (f" ({fmt_si(teacher_macs)} MACs)" if teacher_macs is not None else "")))
        if budget is not None:
            frac = f" = {fmt_ratio(budget / teacher_macs)} the teacher" if teacher_macs else ""
            asked = f" (asked: {fmt_value(task['budget'])})" if task.get("budget") is not None else ""
            rows.append(("budget", f"{fmt_si(budget)} MACs ({int(budget):,}){frac}{asked}"))
        elif task.get("budget") is not None:
            rows.append(("budget", fmt_value(task["budget"])))
        cfg = summary.get("config") if isinstance(summary.get("config"), dict) else {}
        seed = _first(cfg.get("seed"), search.get("seed"))
        if seed is not None:
            rows.append(("seed", fmt_value(seed)))
        lines += ["## Task", "", *_kv_table(rows), ""]

    # results
    if cards:
        first = next(iter(cards.values()))
        split = first.get("data_split", "test")
        n_eval = first.get("n_eval")
        ceps = _num(first.get("eps"))
        lines += ["## Results", ""]
        lines.append(f"Accuracy (%) on the {fmt_value(split)} split"
                     + (f" (n = {fmt_value(n_eval)})" if n_eval is not None else "")
                     + (f", {fmt_value(first.get('threat_model', 'Linf'))} eps = {ceps:g}"
                        + (f" ({ceps * 255:.4g}/255)" if first.get("threat_model", "Linf") == "Linf" else "")
                        if ceps is not None else "")
                     + ". AutoAttack is the per-sample worst case over AutoAttack and the other attacks"
                     + (f", on a stratified subset of n = {fmt_value(first['aa_n_eval'])} test images"
                        if first.get("aa_n_eval") else "")
                     + "; MACs and latency are per image.")
        lines.append("")
        rows = []
        for name, c in cards.items():
            macs = _num(c.get("macs"))
            lat = _num(c.get("latency_ms_cpu"))
            rows.append([fmt_value(name), fmt_pct(c.get("clean_acc")), fmt_pct(c.get("pgd20_acc")),
                         fmt_pct(c.get("cw40_acc")), fmt_pct(c.get("aa_acc")), fmt_si(c.get("params")),
                         fmt_si(macs), fmt_ratio(macs / teacher_macs) if macs is not None and teacher_macs
                         else "-", "-" if lat is None else f"{lat:.2f}"])
        lines += _table(["model", "clean", "PGD-20", "CW-40", "AutoAttack", "params", "MACs",
                         "MACs / teacher", "CPU latency (ms)"], rows,
                        ["---"] + ["--:"] * 8)
        warns = [(n, w) for n, c in cards.items() for w in (c.get("warnings") or [])]
        if warns:
            lines += ["", "Warnings:"] + [f"- {fmt_value(n)}: {fmt_value(w)}" for n, w in warns]
        lines.append("")

    # found architecture
    found = None
    if isinstance(cards.get("rcnas", {}).get("arch"), dict):
        found = cards["rcnas"]["arch"]
    elif isinstance(search.get("arch"), dict):
        found = search["arch"]
    teacher = _teacher_arch(summary, search, cards)
    if found is not None:
        lines += ["## Found architecture", "", f"`{fmt_arch(found)}`", ""]
        depths, widths, blocks = found.get("depths"), found.get("widths"), found.get("blocks")
        lists = all(isinstance(v, list) for v in (depths, widths, blocks))
        if lists and len(depths) == len(widths) == len(blocks):
            head = ["stage", "depth", "width (widen factor)", "block"]
            rows = []
            for i, (d, w, b) in enumerate(zip(depths, widths, blocks)):
                td = f" / {teacher.depths[i]}" if teacher is not None and i < len(teacher.depths) else ""
                tw = f" / {teacher.widths[i]:g}" if teacher is not None and i < len(teacher.widths) else ""
                rows.append([str(i + 1), f"{fmt_value(d)}{td}", f"{fmt_value(w)}{tw}", fmt_value(b)])
            if teacher is not None:
                head = ["stage", "depth / teacher's", "width / teacher's (widen factor)", "block"]
            lines += _table(head, rows, ["--:", "--:", "--:", "---"]) + [""]

    # search facts
    if search or trials:
        rows = []
        for key, label in (("searcher", "searcher"), ("agent", "agent"), ("evaluator", "evaluator"),
                           ("reward_name", "reward")):
            if search.get(key) is not None:
                rows.append((label, fmt_value(search[key])))
        if search.get("evaluations") is not None:
            rows.append(("evaluations", fmt_value(search["evaluations"])))
        if search.get("new_evaluations") is not None:
            rows.append(("new evaluations (not from the store)", fmt_value(search["new_evaluations"])))
        if trials is not None:
            failed = sum(1 for t in trials if str(t.get("status", "ok")) != "ok")
            over = sum(1 for t in trials if str(t.get("status", "ok")) == "ok" and (
                (budget is not None and _num(t.get("macs")) is not None and t["macs"] > budget)
                or (_num(t.get("reward")) is not None and t["reward"] <= -1.0)))
            rows.append(("trials logged", f"{len(trials)} ({failed} failed, {over} over budget)"))
        if _num(search.get("reward")) is not None:
            rows.append(("best reward", f"{search['reward']:.4f}"))
        if _num(search.get("macs")) is not None:
            ratio = f" = {fmt_ratio(search['macs'] / budget)} the budget" if budget else ""
            rows.append(("best candidate MACs", f"{fmt_si(search['macs'])}{ratio}"))
        if isinstance(search.get("metrics"), dict) and search["metrics"]:
            rows.append(("best candidate proxy accuracy (%, validation)", ", ".join(
                f"{k} {fmt_pct(v)}" for k, v in search["metrics"].items())))
        if _num(search.get("evaluation_seconds")) is not None:
            rows.append(("candidate evaluation time", fmt_seconds(search["evaluation_seconds"])))
        if _num(search.get("seconds")) is not None:
            rows.append(("search wall time (last call)", fmt_seconds(search["seconds"])))
        if rows:
            lines += ["## Search", "", *_kv_table(rows), ""]

    # plots
    if plots:
        made = []
        budget_macs = int(budget) if budget else None

        def draw(key: str, alt: str, what: str, plot: Callable[[Path], Any]) -> None:
            try:
                plot(root / PLOTS[key])
                made.append((alt, PLOTS[key]))
            except Exception as e:  # noqa: BLE001 - a figure never stops the report
                reader.problems.append(f"{what} not drawn: {type(e).__name__}: {e}")

        if trials:
            draw("reward_curve", "reward per trial and running best", "reward curve",
                 lambda path: P.plot_reward_curve(trials, path, title="search reward per trial",
                                                  updates=history or None, budget=budget_macs))
        if cards:
            has_aa = any(_num(c.get("aa_acc")) is not None for c in cards.values())
            metric = "aa_acc" if has_aa else "pgd20_acc"
            points = [{"name": n, "kind": P.model_kind(n), "macs": c.get("macs"), metric: c.get(metric)}
                      for n, c in cards.items()]
            if any(_num(p[metric]) is not None and _num(p["macs"]) is not None for p in points):
                draw("pareto", "robust accuracy vs MACs", "Pareto plot",
                     lambda path: P.plot_pareto(points, path, metric=metric, title="robust accuracy vs MACs",
                                                budget=budget_macs))
            archs = {n: c["arch"] for n, c in cards.items()
                     if isinstance(c.get("arch"), dict) and not n.startswith("teacher")}
            if teacher is not None and archs:
                draw("topology", "network shapes relative to the teacher", "topology plot",
                     lambda path: P.plot_topology(archs, teacher, path))
        if made:
            lines += ["## Plots", ""]
            for alt, name in made:
                lines += [f"![{alt}]({name})", ""]

    # timings
    timings = summary.get("timings_s")
    if isinstance(timings, dict) and timings:
        rows = [[fmt_value(k), fmt_seconds(v)] for k, v in timings.items()]
        total = sum(v for v in (_num(t) for t in timings.values()) if v is not None)
        rows.append(["**total**", f"**{fmt_seconds(total)}**"])
        lines += ["## Timings", "", ("The time each stage took when it ran (candidate evaluations, training "
                  "epochs, attacks), also when an earlier, interrupted call did it."), "",
                  *_table(["stage", "seconds of work"], rows, ["---", "--:"]), ""]
    return lines


# --- bench report --------------------------------------------------------------------------------
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not prefix:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _bench_sections(root: Path, files: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    for path, data in files:
        title = data.get("name") or data.get("bench") or path.stem
        lines += [f"## {fmt_value(title)}", "", f"From `{path.name}`."]
        if isinstance(data.get("description"), str):
            lines += ["", fmt_value(data["description"])]
        lines.append("")
        rows = [_flatten(r) for r in data["rows"] if isinstance(r, dict)]
        if rows:
            cols: list[str] = []
            for r in rows:
                cols += [k for k in r if k not in cols]
            lines += _table([fmt_value(c) for c in cols], [[fmt_value(r.get(c)) for c in cols] for r in rows])
        else:
            lines.append("(no rows)")
        lines.append("")
        meta = data.get("meta")
        if isinstance(meta, dict) and meta:
            lines += ["Run details:", ""]
            lines += [f"- {fmt_value(k)}: {fmt_value(v)}" for k, v in _flatten(meta).items()]
            lines.append("")
    pngs = sorted(p.name for p in root.glob("*.png") if p.name not in PLOTS.values())
    if pngs:
        lines += ["## Figures", ""]
        for name in pngs:
            lines += [f"![{Path(name).stem}]({name})", ""]
    return lines


# --- entry point ---------------------------------------------------------------------------------
def _search_prefix(root: Path) -> str:
    """Where a directory keeps its search: `search/` in a `rcnas run` folder, the top of a `rcnas search --out`."""
    return "" if not (root / "search").is_dir() and any(
        (root / p).is_file() for p in ("search.json", "trials.jsonl")) else "search/"


def is_run_dir(root: Path) -> bool:
    sub = _search_prefix(root)
    return any((root / p).is_file() for p in ("summary.json", f"{sub}trials.jsonl", f"{sub}search.json")) \
        or any((root / "models").glob("*/card.json"))


def render_report(run_dir: str | Path, plots: bool = True) -> str:
    """The markdown of the report (writing the plots next to it when `plots`)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise BadInput(f"{root} is not a directory; expected a run or bench directory holding {EXPECTED}")
    reader = _Reader(root)
    run = is_run_dir(root)
    bench = _bench_files(root, reader)
    if not run and not bench:
        raise BadInput(f"{root} holds no results to report: expected {EXPECTED}")
    kind = ("search" if not _search_prefix(root) else "run") if run else "bench"
    lines = [f"# RC-NAS {kind} report: {root.resolve().name}", ""]
    if run:
        lines += _run_sections(root, reader, plots)
    if bench:
        lines += _bench_sections(root, bench)
    if reader.problems:
        lines += ["## Notes", ""] + [f"- {p}" for p in reader.problems] + [""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Write `report.md` (and its plots) into a run or bench directory; returns the report's path."""
    root = Path(run_dir)
    text = render_report(root)
    return write_text(root / REPORT_NAME, text)
