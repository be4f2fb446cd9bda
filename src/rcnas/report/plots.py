"""Figures for reports: search reward curve, robust-accuracy-vs-MACs Pareto plot, found network
shapes relative to the teacher, and regret curves.

matplotlib is imported inside each function and every figure is drawn on its own Agg canvas
(`matplotlib.figure.Figure` + `FigureCanvasAgg`), so importing rcnas never touches matplotlib and
never changes the global pyplot backend. Each function writes its PNG atomically and returns the path.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rcnas.io import atomic_write

DPI = 130
KINDS = ("teacher", "heuristic", "search", "rcnas")
_KIND_STYLE = {  # marker, colour, size
    "teacher": ("s", "#444444", 70),
    "heuristic": ("^", "#1f77b4", 70),
    "search": ("o", "#9467bd", 45),
    "rcnas": ("*", "#d62728", 180),
}
_HEURISTICS = ("uniform", "last-stage", "compound")
_SEARCHERS = ("random", "evolution", "tpe")


# --- pure helpers --------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN or infinite)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def pareto_front(points: Sequence[Mapping[str, Any]], x: str = "macs", y: str = "aa_acc") -> list[int]:
    """Indices of the non-dominated points (fewer `x` is better, more `y` is better), by increasing `x`.

    A point is dominated when another has `x <=` and `y >=` with at least one strict. Points whose
    `x` or `y` is missing or not a finite number are ignored; identical points are all kept.
    """
    valid = [(i, _num(p.get(x)), _num(p.get(y))) for i, p in enumerate(points)]
    valid = [(i, px, py) for i, px, py in valid if px is not None and py is not None]
    front = [i for i, px, py in valid
             if not any(qx <= px and qy >= py and (qx < px or qy > py) for _, qx, qy in valid)]
    return sorted(front, key=lambda i: (float(points[i][x]), -float(points[i][y]), i))


def running_best(values: Sequence[float | None]) -> list[float]:
    """Cumulative maximum, NaN until the first number (None/NaN entries are skipped)."""
    best, out = -math.inf, []
    for v in values:
        v = _num(v)
        if v is not None:
            best = max(best, v)
        out.append(best if best > -math.inf else math.nan)
    return out


def model_kind(name: str) -> str:
    """Marker kind of a model named as in a run directory (rcnas, teacher-at, uniform, ...)."""
    n = name.lower()
    if n.startswith("rcnas"):
        return "rcnas"
    if n.startswith("teacher"):
        return "teacher"
    if any(n.startswith(h) for h in _HEURISTICS):
        return "heuristic"
    return "search"


# --- figure plumbing -----------------------------------------------------------------------------
def _figure(w: float, h: float, nrows: int = 1, ncols: int = 1, **kw: Any):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _save(fig, path: str | Path, tight: bool = False) -> Path:
    """`tight`: grow the image to what is drawn outside the axes (a legend below them)."""
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI,
                                                    bbox_inches="tight" if tight else None))


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888888")


# --- reward curve --------------------------------------------------------------------------------
def plot_reward_curve(log: Sequence[Mapping[str, Any]], path: str | Path, title: str = "", *,
                      updates: Sequence[Mapping[str, Any]] | None = None,
                      budget: int | None = None) -> Path:
    """Reward of every trial (dots; failed and over-budget trials marked at the bottom edge) and the
    running best (line). `log` rows are `trials.jsonl` rows (trial, reward, status, macs).

    `updates`: per-update agent stats (key `charts/reward`: the mean reward of that update's
    episodes) drawn in a second panel. A `log` made only of such stats is treated as `updates`.
    `budget`: MACs; trials above it are marked over budget (else a reward of -1 with status ok is).
    """
    log = list(log or [])
    if updates is None and log and all("charts/reward" in r and "reward" not in r for r in log):
        log, updates = [], log
    updates = [u for u in (updates or []) if _num(u.get("charts/reward")) is not None]
    has_trials = bool(log)
    panels = int(has_trials) + int(bool(updates)) or 1
    fig, axes = _figure(6.4, 3.4 * panels if panels == 1 else 5.8, nrows=panels)
    axes = axes[:, 0]
    if title:
        fig.suptitle(title, fontsize=11)

    if has_trials or not updates:
        ax = axes[0]
        xs = [int(r.get("trial", i)) + 1 for i, r in enumerate(log)]
        rewards = [_num(r.get("reward")) for r in log]
        kind = []
        for r, rew in zip(log, rewards):
            macs = _num(r.get("macs"))
            if str(r.get("status", "ok")) != "ok":
                kind.append("failed")
            elif budget is not None and macs is not None and macs > budget:
                kind.append("over")
            elif rew is None or rew <= -1.0:
                kind.append("over" if rew is not None else "failed")
            else:
                kind.append("ok")
        ok = [(x, r) for x, r, k in zip(xs, rewards, kind) if k == "ok"]
        if ok:
            ax.scatter([x for x, _ in ok], [r for _, r in ok], s=22, color="#1f77b4", alpha=0.75,
                       label="trial reward", zorder=3)
            best = running_best([r if k == "ok" else None for r, k in zip(rewards, kind)])
            ax.step(xs, best, where="post", color="#d62728", lw=2, label="running best", zorder=4)
            lo, hi = min(r for _, r in ok), max(r for _, r in ok)
            pad = max(0.05 * (hi - lo), 0.02)
            ax.set_ylim(lo - 3 * pad, hi + pad)
        elif log:
            ax.set_ylim(-1.1, 1.1)
        from matplotlib.transforms import blended_transform_factory
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        if any(k != "ok" for k in kind):
            from matplotlib.patches import Rectangle
            ax.add_patch(Rectangle((0, 0), 1, 0.08, transform=ax.transAxes, color="#eeeeee", lw=0, zorder=0))
        for k, marker, colour, label in (("failed", "x", "#000000", "failed"),
                                         ("over", "v", "#ff7f0e", "over budget")):
            sel = [x for x, kk in zip(xs, kind) if kk == k]
            if sel:
                ax.scatter(sel, [0.04] * len(sel), marker=marker, s=36, color=colour, transform=bottom,
                           label=f"{label} (reward -1, at bottom)", zorder=5, clip_on=False)
        if not log:
            _no_data(ax, "no trials")
        ax.set_xlabel("trial (candidate evaluation)")
        ax.set_ylabel("reward (~ accuracy / teacher's)")
        ax.grid(alpha=0.3)
        if log:
            ax.set_xlim(0.5, max(xs) + 0.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
            # below the axes: inside, it would hide the markers drawn along the bottom edge
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    if updates:
        ax = axes[-1]
        ux = [int(u.get("update", i + 1)) for i, u in enumerate(updates)]
        uy = [float(u["charts/reward"]) for u in updates]
        ax.plot(ux, uy, marker="o", color="#2ca02c", lw=1.6, label="mean episode reward")
        base = [_num(u.get("charts/baseline")) for u in updates]
        if all(b is not None for b in base):
            ax.plot(ux, base, ls="--", color="#7f7f7f", lw=1.2, label="baseline")
        ax.set_xlabel("agent update")
        ax.set_ylabel("mean reward per update")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right", framealpha=0.85)
    return _save(fig, path)


# --- Pareto --------------------------------------------------------------------------------------
def _metric_label(metric: str) -> str:
    return {"aa_acc": "AutoAttack accuracy (%)", "aa_only_acc": "AutoAttack-only accuracy (%)",
            "pgd20_acc": "PGD-20 accuracy (%)", "cw40_acc": "CW-40 accuracy (%)",
            "clean_acc": "clean accuracy (%)", "worst_case_acc": "worst-case accuracy (%)"}.get(
        metric, f"{metric} (%)")


def _kind_of(p: Mapping[str, Any]) -> str:
    return str(p.get("kind") or model_kind(str(p.get("name", ""))))


def _place_labels(fig, ax, items: list[tuple[float, float, str, float]], avoid: list) -> None:
    """Annotate each (x, y, text, marker radius in points) beside its marker, trying eight positions
    and keeping the first whose box stays inside the axes and overlaps no marker, label or `avoid`
    box (display coordinates). The layout is drawn and frozen first so the boxes are final."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    from matplotlib.transforms import Bbox
    inside = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0
    taken = list(avoid)
    backing = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}  # readable over lines
    for x, y, _, r in items:
        cx, cy = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(cx - r * px, cy - r * px, cx + r * px, cy + r * px))
    for x, y, text, r in items:
        g = r + 3
        d = g * 0.75
        candidates = [(g, 0, "left", "center"), (d, d, "left", "bottom"), (d, -d, "left", "top"),
                      (-g, 0, "right", "center"), (-d, d, "right", "bottom"), (-d, -d, "right", "top"),
                      (0, g, "center", "bottom"), (0, -g, "center", "top")]
        chosen = None
        for dx, dy, ha, va in candidates:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=8, zorder=5, bbox=backing)
            box = ann.get_window_extent(renderer)
            fits = (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0
                    and box.y1 <= inside.y1)
            if fits and not any(box.overlaps(t) for t in taken):
                chosen = (ann, box)
                break
            ann.remove()
        if chosen is None:  # crowded: the first choice (its white backing keeps it readable)
            dx, dy, ha, va = candidates[0]
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=8, zorder=5, bbox=backing)
            chosen = (ann, ann.get_window_extent(renderer))
        taken.append(chosen[1])


def plot_pareto(points: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "aa_acc",
                title: str = "", *, budget: int | None = None, label_points: bool = True) -> Path:
    """Robust accuracy (`metric`, a fraction, drawn in %) against MACs (drawn in millions).

    `points`: dicts with `macs`, `metric`, optional `name` and `kind` (teacher, heuristic, search,
    rcnas; default from the name). One marker style per kind, a line through the Pareto front,
    names beside points (placed to avoid each other), a dashed vertical line at `budget` MACs.
    """
    points = [p for p in points if _num(p.get("macs")) is not None and _num(p.get(metric)) is not None]
    fig, axes = _figure(6.4, 4.2)
    ax = axes[0, 0]
    scale = 1e6
    xs_all = [float(p["macs"]) / scale for p in points]
    if budget is not None:
        xs_all.append(budget / scale)
    labels: list[tuple[float, float, str, float]] = []
    if points:
        front = pareto_front(points, "macs", metric)
        fx = [float(points[i]["macs"]) / scale for i in front]
        fy = [100 * float(points[i][metric]) for i in front]
        if len(front) > 1:
            ax.plot(fx, fy, color="#2ca02c", lw=1.5, ls="-", alpha=0.8, zorder=2, label="Pareto front")
        for kind in KINDS + tuple(sorted({_kind_of(p) for p in points} - set(KINDS))):
            sel = [p for p in points if _kind_of(p) == kind]
            if not sel:
                continue
            marker, colour, size = _KIND_STYLE.get(kind, ("D", "#8c564b", 50))
            ax.scatter([float(p["macs"]) / scale for p in sel], [100 * float(p[metric]) for p in sel],
                       marker=marker, color=colour, s=size, edgecolor="white", lw=0.6, zorder=3, label=kind)
        priority = {k: i for i, k in enumerate(reversed(KINDS))}  # rcnas's label is placed first
        for p in sorted(points, key=lambda p: priority.get(_kind_of(p), 9)):
            if str(p.get("name", "")):
                size = _KIND_STYLE.get(_kind_of(p), ("D", "", 50))[2]
                labels.append((float(p["macs"]) / scale, 100 * float(p[metric]), str(p["name"]),
                               math.sqrt(size) / 2))
        ys = [100 * float(p[metric]) for p in points]
        lo, hi = min(ys), max(ys)
        pad = max(0.15 * (hi - lo), 1.0)
        ax.set_ylim(max(lo - pad, 0.0) if lo >= 0 else lo - pad,
                    min(hi + pad, 100.0) if hi <= 100 else hi + pad)
        xlo, xhi = min(xs_all), max(xs_all)
        xpad = max(0.1 * (xhi - xlo), 0.05 * max(abs(xhi), 1e-9))
        ax.set_xlim(max(xlo - 1.5 * xpad, 0.0), xhi + 2.5 * xpad)  # room for the labels
    else:
        _no_data(ax, f"no model with {metric}")
    if budget is not None:
        ax.axvline(budget / scale, color="#ff7f0e", ls="--", lw=1.2, zorder=1,
                   label=f"budget ({budget / scale:.3g} M MACs)")
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel(_metric_label(metric))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=11)
    # below the axes: inside, it hid the teacher whenever the teacher was no more robust than the rest
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3, frameon=False)
    if label_points and labels:
        fig.canvas.draw()
        _place_labels(fig, ax, labels, [])
    return _save(fig, path, tight=True)


# --- topology ------------------------------------------------------------------------------------
def plot_topology(archs: Mapping[str, Any], teacher: Any, path: str | Path, title: str = "") -> Path:
    """Per-stage fraction of the teacher's depth (top) and width (bottom) each network keeps:
    one group of bars per stage, one bar per network; stages built of robust blocks are hatched.
    `archs` maps a name to an `Arch` (or a dict `Arch.from_dict` accepts); so may `teacher`."""
    from matplotlib.patches import Patch

    from rcnas.space.arch import Arch

    def as_arch(a: Any) -> Arch:
        return a if isinstance(a, Arch) else Arch.from_dict(a)

    teacher = as_arch(teacher)
    nets = {name: as_arch(a) for name, a in archs.items()}
    stages = len(teacher.depths)
    fig, axes = _figure(6.8, 5.2, nrows=2, sharex=True)
    colours = ["#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    n = max(len(nets), 1)
    width = 0.8 / n
    any_robust = False
    for row, (what, ax) in enumerate(zip(("depth", "width"), axes[:, 0])):
        for j, (name, a) in enumerate(nets.items()):
            if what == "depth":
                frac = [d / td for d, td in zip(a.depths, teacher.depths)]
                text = [f"{d}/{td}" for d, td in zip(a.depths, teacher.depths)]
            else:
                frac = [c / tc for c, tc in zip(a.channels, teacher.channels)]
                text = [f"{w:g}" for w in a.widths]
            xs = [s - 0.4 + width * (j + 0.5) for s in range(stages)]
            colour = colours[j % len(colours)]
            bars = ax.bar(xs, frac, width=width * 0.92, color=colour, edgecolor="black", lw=0.6,
                          label=name if row == 0 else None)
            for bar, blk in zip(bars, a.blocks):
                if blk == "robust":
                    bar.set_hatch("///")
                    any_robust = True
            if n <= 6:
                for x, f, t in zip(xs, frac, text):
                    ax.text(x, f + 0.02, t, ha="center", va="bottom", fontsize=7 if n <= 4 else 6)
        ax.axhline(1.0, color="black", ls="--", lw=0.8, label="teacher" if row == 0 else None)
        top = max([1.0] + [c / tc for a in nets.values() for c, tc in zip(a.channels, teacher.channels)]
                  + [d / td for a in nets.values() for d, td in zip(a.depths, teacher.depths)])
        ax.set_ylim(0, top * 1.18)
        ax.set_ylabel(f"{what} kept\n(fraction of teacher)")
        ax.grid(axis="y", alpha=0.3)
        if not nets:
            _no_data(ax, "no network")
    tw = ", ".join(f"{w:g}" for w in teacher.widths)
    axes[0, 0].set_title(title or f"network shapes (teacher: depths {list(teacher.depths)}, widths [{tw}])",
                         fontsize=10)
    axes[0, 0].text(0.995, 0.99, "labels: blocks kept / teacher's", transform=axes[0, 0].transAxes,
                    ha="right", va="top", fontsize=7, color="#555555")
    axes[1, 0].text(0.995, 0.99, "labels: widen factor", transform=axes[1, 0].transAxes,
                    ha="right", va="top", fontsize=7, color="#555555")
    ax = axes[1, 0]
    ax.set_xticks(range(stages))
    ax.set_xticklabels([f"stage {s + 1}" for s in range(stages)])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if any_robust:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///"))
        labels.append("robust block")
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8, framealpha=0.85)
    return _save(fig, path)


# --- regret --------------------------------------------------------------------------------------
def plot_regret(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
                xlabel: str = "evaluations", title: str = "", ylabel: str = "regret") -> Path:
    """Mean (line) and mean ± std (band) of regret after 1..N evaluations, one curve per method;
    log y-axis when every mean is positive (the band's lower edge is then clipped above zero)."""
    fig, axes = _figure(6.4, 4.0)
    ax = axes[0, 0]
    means_all = [float(m) for mean, _ in curves.values() for m in mean if _num(m) is not None]
    log_y = bool(means_all) and all(m > 0 for m in means_all)
    floor = None
    if log_y:  # a band edge at or below zero is drawn down to the bottom of the axes
        lows = [float(m) - float(sd) for mean, std in curves.values()
                if std is not None and len(std) == len(mean)
                for m, sd in zip(mean, std) if float(m) - float(sd) > 0]
        floor = 0.5 * min(means_all + lows)
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    for k, (name, (mean, std)) in enumerate(curves.items()):
        mean = [float(m) for m in mean]
        std = [float(s) for s in std] if std is not None and len(std) == len(mean) else [0.0] * len(mean)
        xs = list(range(1, len(mean) + 1))
        colour = palette[k % len(palette)]
        style = ("-", "--", ":")[k // len(palette) % 3]  # past the palette, the colours come back dashed
        ax.plot(xs, mean, color=colour, lw=1.8, ls=style, label=name)
        lo = [m - s for m, s in zip(mean, std)]
        hi = [m + s for m, s in zip(mean, std)]
        if log_y:
            lo = [max(v, floor) for v in lo]
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, lw=0)
    if log_y:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    if not curves:
        _no_data(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log_y else ""))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if log_y:
        ax.grid(alpha=0.12, which="minor")
    if title:
        ax.set_title(title, fontsize=11)
    if curves:
        ax.legend(fontsize=8, loc="best", framealpha=0.85, title="mean ± std", title_fontsize=8)
    return _save(fig, path)


__all__ = ["pareto_front", "running_best", "model_kind", "plot_reward_curve", "plot_pareto",
           "plot_topology", "plot_regret"]
