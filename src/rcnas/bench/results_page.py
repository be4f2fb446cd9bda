"""`rcnas bench results`: the results page `docs/results.md`, generated from the machine-written
`bench/results/*.json`, and the README's headline table, so no number is typed by hand.

The page has one section per JSON file at the top of the results folder (the `*-runs` folders and
older leases under sub-folders are not read), sorted by name: what the benchmark measures, the
command that reproduces it, its tables as the JSON holds them, the machine, versions and seeds it
ran with, and a link to the benchmark's own summary. Nothing on the page depends on when or where
it is generated, so regenerating from the same JSON gives the same bytes.

The README's headline table sits between `HEADLINE_START` and `HEADLINE_END`; only that block is
rewritten. A README without both markers (once each, start before end) is left as it is, with a
warning naming the markers to add: the page is still written.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcnas.bench.runner import BENCHES
from rcnas.bench.summary import table_md
from rcnas.cost import format_macs
from rcnas.io import read_json, write_text

logger = logging.getLogger(__name__)

HEADLINE = "comparison-fashion-cpu-full-test"  # the JSON whose main table the README shows
HEADLINE_START = "<!-- results:headline:start -->"
HEADLINE_END = "<!-- results:headline:end -->"
SKIP_TABLES = ("runs",)  # the per-run configs of a comparison: its settings are summarised in meta


@dataclass(frozen=True)
class BenchInfo:
    title: str
    what: str
    """One sentence: what the benchmark measures."""
    command: str
    """The command that reproduces the JSON, run from the repository root."""


# What the JSON files do not say about themselves. A JSON whose meta has `title`, `what` or `command`
# overrides these; a file not listed here gets its title and first paragraph from its own .md.
KNOWN: dict[str, BenchInfo] = {
    "adaptation": BenchInfo(
        "Adaptation to held-out tables",
        "On the tables of datasets the agent never saw: the evaluations the meta-trained agent, fine-tuned "
        "within the search, needs to reach the final best of the same agent from scratch given 40.",
        "rcnas bench adaptation --seeds 10 --jobs 2"),
    "comparison": BenchInfo(
        "The paper's comparison on digits",
        "`rcnas run` per seed and budget: the adversarially trained teacher, the uniform, last-stage and "
        "compound rules, the best of random search and rcnas, each PGD-7 adversarially trained from the "
        "teacher's weights; clean / PGD-20 / CW-40 / AutoAttack on the test split.",
        "rcnas bench comparison --config configs/comparison-digits.yaml"),
    "comparison-fashion-cpu": BenchInfo(
        "The comparison on Fashion-MNIST, CPU scale, 2,000 test images",
        "The same comparison on Fashion-MNIST (teacher wrn-16-1, N-FGSM on 5,000 training images), "
        "evaluated on a stratified 2,000 of the 10,000 test images.",
        "rcnas bench comparison --config configs/comparison-fashion-cpu.yaml"),
    "comparison-fashion-cpu-full-test": BenchInfo(
        "The comparison on Fashion-MNIST's whole test split",
        "The Fashion-MNIST CPU comparison's settings, evaluated on all 10,000 test images (AutoAttack on a "
        "stratified 100).",
        "RCNAS_CACHE=$PWD/bench/results/comparison-fashion-cpu-full-test-runs/cache "
        "rcnas bench comparison --config configs/comparison-fashion-cpu-full-test.yaml --jobs 2"),
    "comparison-mnist5k-cpu": BenchInfo(
        "The comparison on MNIST-5k, CPU scale",
        "The same comparison on MNIST-5k (teacher wrn-16-1, PGD-7 for 10 epochs on the whole train split), "
        "evaluated on the whole 1,667-image test split.",
        "rcnas bench comparison --config configs/comparison-mnist5k-cpu.yaml"),
    "make-run": BenchInfo(
        "`make run` from a fresh cache",
        "Wall time of the Makefile's run command in a new process with an empty teacher cache, idle and "
        "beside busy processes, with each stage's own time.",
        "rcnas bench make-run --neighbours 1"),
    "fidelity": BenchInfo(
        "Proxy fidelity",
        "Rank correlation of the search proxy (the table's score) with full final training and PGD-20 on "
        "the test split, over architectures spread across a table's MACs range.",
        "rcnas bench fidelity --seeds 2"),
    "real-search": BenchInfo(
        "Search with the real proxy on a held-out task setting",
        "Candidates trained and attacked (no table): the best proxy reward after 10 distinct evaluations, "
        "rcnas against random search and the rules.",
        "rcnas bench real-search"),
    "search": BenchInfo(
        "Search efficiency on held-out tables",
        "Normalised regret (0: the table's optimum, 1: its median network) after k distinct evaluations, "
        "for rcnas and every baseline, with paired 95% intervals and the search issue's criteria.",
        "rcnas bench search --seeds 100 --jobs 2"),
    "tables": BenchInfo(
        "The tabular benchmarks",
        "Every architecture of each grid scored by the search proxy: size, build time, and the rank "
        "agreement of two training seeds (the table's own noise floor).",
        "rcnas bench build-table --jobs 2 && rcnas bench tables"),
    "throughput": BenchInfo(
        "Throughput on the CPU",
        "PGD-7 adversarial-training images/s of rcnas's trainer against a bare PyTorch loop on the same "
        "model in the same run (ratio = rcnas / bare), and the cost of one proxy candidate evaluation.",
        "rcnas bench throughput"),
    "throughput-cifar-cuda": BenchInfo(
        "Throughput on a GPU, CIFAR scale",
        "The same at 32x32 (WRN-16-4, WRN-28-10), with bf16, channels_last and torch.compile variants.",
        "rcnas bench throughput --device cuda --scale cifar"),
}
TABLE_CAPTIONS = {
    "paired_rows": "rcnas minus each other network, paired by seed (points; verdict: two-sided paired "
                   "t-test at 95%)",
    "search_rows": "The searches alone: best proxy reward with the same number of distinct evaluations",
    "criteria": "The search issue's criteria, as the bench checks them",
}
MACHINE = ("date", "processor", "cpus", "torch_threads", "cuda", "platform")
VERSIONS = ("rcnas", "python", "torch", "numpy")
MODEL_LABELS = {"rcnas": "**rcnas** (found sub-network)", "uniform": "uniform shrink",
                "last-stage": "last-stage (WRN-34-R's rule)", "compound": "compound (RobustResNet's rule)",
                "random": "best of random search"}
METRIC_LABELS = (("clean", "clean"), ("pgd20", "PGD-20"), ("cw40", "CW-40"), ("aa", "AA"))


@BENCHES.register("results")
def bench_results(out: str = "bench/results", seeds: int | None = None, quick: bool = False) -> Path:
    """Write `docs/results.md` from the JSON under `out` and refresh README.md's headline table (both
    in the current directory, the repository root); no benchmark is run, so `seeds` and `quick`, which
    every benchmark takes, change nothing."""
    return write_results(out, page="docs/results.md", readme="README.md")


def write_results(results_dir: str | Path, page: str | Path, readme: str | Path | None = None,
                  headline: str = HEADLINE) -> Path:
    """Write the results page `page` from `results_dir/*.json`; with `readme`, also replace its headline
    block with the main table of `results_dir/<headline>.json`. Returns the page's path."""
    results_dir, page = Path(results_dir), Path(page)
    write_text(page, render_page(results_dir, page.parent, headline))
    if readme is not None:
        update_readme(Path(readme), results_dir, page, headline)
    return page


def render_page(results_dir: Path, page_dir: Path, headline: str = HEADLINE) -> str:
    files = sorted((p for p in results_dir.glob("*.json") if p.is_file()), key=lambda p: p.stem)
    results = {p: _load(p) for p in files}
    link = _rel(results_dir, page_dir)
    intro = (f"Generated by `rcnas bench results` from the machine-written JSON in [{link}]({link}/); do not "
             "edit by hand. Every section names the command that reproduces it. How the numbers were "
             "measured, and what they say: [benchmarks.md](benchmarks.md).\n")
    parts = ["# Results\n", intro]
    parts.append("\n".join(f"- [{p.stem}](#{p.stem}){' (the headline)' if p.stem == headline else ''}: "
                           f"{_info(p, results[p].get('meta', {})).title}" for p in files) + "\n")
    parts += [_section(p, results[p], page_dir) for p in files]
    return "\n".join(parts)


def _load(path: Path) -> dict[str, Any]:
    result = read_json(path)
    return result if isinstance(result, dict) else {}


def _section(path: Path, result: dict[str, Any], page_dir: Path) -> str:
    meta = result.get("meta", {})
    info = _info(path, meta)
    summary = path.with_suffix(".md")
    own = summary if summary.is_file() else path
    lines = [f"## {path.stem}\n", f"**{info.title}.** {info.what}\n",
             f"Reproduce: `{info.command}`. Its own summary: [{own.name}]({_rel(own, page_dir)}).\n"]
    for key, value in result.items():
        if key in SKIP_TABLES or not (isinstance(value, list) and value and all(isinstance(r, dict) for r in value)):
            continue
        if key in TABLE_CAPTIONS:
            lines.append(TABLE_CAPTIONS[key] + ":\n")
        elif key != "rows":
            lines.append(f"`{key}`:\n")
        lines.append(table_md(value))
    lines.append(_meta_block(meta, path.name))
    return "\n".join(lines)


def _meta_block(meta: dict[str, Any], source: str) -> str:
    if not meta:
        return "(no meta in the JSON)\n"
    versions = [f"{k} {meta[k]}" for k in VERSIONS if k in meta]
    lines = []
    if "date" in meta:
        lines.append(f"- measured: {meta['date']}")
    if "processor" in meta:
        lines.append(f"- machine: {meta['processor']}, {meta.get('cpus')} CPUs, {meta.get('torch_threads')} torch "
                     f"threads, GPU: {_value(meta.get('cuda'))}; {meta.get('platform')}")
    if versions:
        lines.append("- versions: " + ", ".join(versions))
    if "seeds" in meta:
        lines.append(f"- seeds: {_value(meta['seeds'])}")
    for key, value in meta.items():
        if key in (*MACHINE, *VERSIONS, "seeds", "title", "what", "command"):
            continue
        text = _value(value)
        if len(text) > 400:  # e.g. every task setting of a view: the JSON has them
            text = f"(long: see {source})"
        lines.append(f"- {key}: {text}")
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k} ({_value(x)})" if isinstance(x, dict) else f"{k}: {_value(x)}" for k, x in v.items())
    return "none" if v is None else str(v)


def _info(path: Path, meta: dict[str, Any]) -> BenchInfo:
    name = path.stem
    known = KNOWN.get(name)
    if known is None:
        title, what = _from_summary(path.with_suffix(".md"), name)
        if name.startswith("comparison-"):
            command = f"rcnas bench comparison --config configs/{name}.yaml"
        else:
            command = f"rcnas bench {name}" if name in BENCHES else f"see {name}.md"
        known = BenchInfo(title, what, command)
    # a benchmark listed in KNOWN is reproduced by its listed command; a JSON's own "command" may be
    # what it measured (make-run times `rcnas run`), not how to produce it
    command = known.command if name in KNOWN else str(meta.get("command", known.command))
    return BenchInfo(str(meta.get("title", known.title)), str(meta.get("what", known.what)), command)


def _from_summary(md: Path, name: str) -> tuple[str, str]:
    """The title and first paragraph of a benchmark's own markdown summary."""
    if not md.is_file():
        return name, "(no description)"
    blocks = [b.strip() for b in md.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    title = blocks[0].lstrip("# ").strip() if blocks and blocks[0].startswith("#") else name
    what = next((b.replace("\n", " ") for b in blocks[1:] if not b.startswith(("#", "|", "-"))), "(no description)")
    return title, what


# --- the README's headline table ------------------------------------------------------------------
def update_readme(readme: Path, results_dir: Path, page: Path, headline: str = HEADLINE) -> bool:
    """Replace the block between the markers in `readme`; False (and a warning) when it is left alone."""
    source = results_dir / f"{headline}.json"
    if not readme.is_file():
        logger.warning("%s not found: no headline table written", readme)
        return False
    if not source.is_file():
        logger.warning("%s not found: %s's headline table left as it is", source, readme)
        return False
    text = readme.read_text(encoding="utf-8")
    if text.count(HEADLINE_START) != 1 or text.count(HEADLINE_END) != 1 or \
            text.index(HEADLINE_START) > text.index(HEADLINE_END):
        logger.warning("%s left as it is: it needs the lines %s and %s, once each and in that order, "
                       "around the headline table", readme, HEADLINE_START, HEADLINE_END)
        return False
    block = render_headline(_load(source), _rel(source, readme.parent), f"{_rel(page, readme.parent)}#{headline}")
    before, rest = text.split(HEADLINE_START)
    after = rest.split(HEADLINE_END)[1]
    new = f"{before}{HEADLINE_START}\n{block}{HEADLINE_END}{after}"
    if new != text:
        write_text(readme, new)
    return True


def render_headline(result: dict[str, Any], source: str, section: str) -> str:
    """A comparison's main table, one line per network with the budgets side by side; `source` names the
    JSON and `section` links to its section of the results page."""
    rows = result.get("rows", [])
    meta = result.get("meta", {})
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    groups = list(dict.fromkeys((r["dataset"], r["budget"]) for r in rows))
    label = {g: g[1] if len(datasets) == 1 else f"{g[0]} {g[1]}" for g in groups}
    cells: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(r["model"], {})[(r["dataset"], r["budget"])] = r
    n_aa = next((r.get("n_aa") for r in rows if r.get("n_aa")), None)
    metrics = [(k, f"AA ({n_aa})" if k == "aa" and n_aa else t) for k, t in METRIC_LABELS]
    head = ["model"] + [h for g in groups for h in (f"MACs {label[g]}", *(t for _, t in metrics))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    teachers = {d: (meta.get("settings", {}).get(d) or {}).get("teacher") for d in datasets}
    for model, by_group in cells.items():
        if model == "teacher-at":
            named = ", ".join(t for t in dict.fromkeys(teachers.values()) if t)
            text = f"teacher {named}, adversarially trained" if named else "teacher, adversarially trained"
        else:
            text = MODEL_LABELS.get(model, model)
        row = [text]
        for g in groups:
            r = by_group.get(g, {})
            row += [_macs(r.get("macs")), *(str(r.get(k, "")) for k, _ in metrics)]
        lines.append("| " + " | ".join(row) + " |")
    n_test = sorted({r.get("n_test") for r in rows if r.get("n_test")})
    seeds = meta.get("seeds")
    caption = (f"{', '.join(datasets)}: accuracy in % on {' / '.join(f'{n:,}' for n in n_test)} test images "
               f"(AutoAttack: the worst case with the other attacks on a stratified {n_aa}), mean ± std over "
               f"{len(seeds) if isinstance(seeds, list) else seeds} seeds; MACs of the network (mean over seeds). "
               f"From `{source}` by `rcnas bench results`; the paired tests, the searches and the machine: "
               f"[results page]({section}).")
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _macs(v: Any) -> str:
    """MACs with three significant digits: 5795274 -> 5.80M; '' when the JSON has none."""
    return format_macs(v, keep_zeros=True) if isinstance(v, (int, float)) else ""


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


__all__ = ["HEADLINE", "HEADLINE_END", "HEADLINE_START", "bench_results", "render_headline", "render_page",
           "update_readme", "write_results"]
