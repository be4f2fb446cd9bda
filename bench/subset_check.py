"""How far a comparison's test-subset accuracies are from the whole test split's, for the networks a
(cut-short) re-evaluation on the whole 10,000-image test split reached: reads the per-sample results that `rcnas eval` keeps in each model's
eval-state/ and the cards of the subset evaluation.

Usage: python bench/subset_check.py FULL_RUNS SUBSET_RUNS OUT_STEM
  e.g. bench/results/comparison-fashion-cpu-full-test-runs bench/results/comparison-fashion-cpu-runs
       bench/results/gpu-lease-2/subset-check
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch


def main(full_runs: str, subset_runs: str, out_stem: str) -> None:
    rows = []
    for state in sorted(Path(full_runs).glob("*/models/*/eval-state/*-n10000")):
        model_dir = state.parent.parent
        run, model = model_dir.parent.parent.name, model_dir.name
        card = json.loads((Path(subset_runs) / run / "models" / model / "card.json").read_text())
        row = {"run": run, "model": model, "n_full": int(state.name.rsplit("-n", 1)[1]), "n_subset": card["n_eval"]}
        for attack in ("pgd20", "cw40"):
            if (state / f"{attack}.pt").is_file():
                full = torch.load(state / f"{attack}.pt", weights_only=True)["correct"].float().mean().item()
                row[f"{attack}_full"] = round(100 * full, 2)
                row[f"{attack}_subset"] = round(100 * card[f"{attack}_acc"], 2)
                row[f"{attack}_subset_minus_full"] = round(row[f"{attack}_subset"] - row[f"{attack}_full"], 2)
        rows.append(row)
    diffs = {a: [r[f"{a}_subset_minus_full"] for r in rows if f"{a}_full" in r] for a in ("pgd20", "cw40")}
    summary = {a: {"networks": len(d), "mean": round(statistics.fmean(d), 2),
                   "std": round(statistics.stdev(d), 2) if len(d) > 1 else 0.0} for a, d in diffs.items() if d}
    Path(out_stem).with_suffix(".json").write_text(json.dumps({"rows": rows, "subset_minus_full": summary}, indent=1))
    keys = list(rows[0]) if rows else []
    md = ["# Test subset vs the whole test split (accuracy in %, same trained networks)", "",
          f"full: {full_runs}; subset: {subset_runs}", "",
          "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    md += ["", "subset − full, mean ± std over networks: " + "; ".join(
        f"{a} {s['mean']:+.2f} ± {s['std']:.2f} ({s['networks']} networks)" for a, s in summary.items())]
    Path(out_stem).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(*sys.argv[1:4])
