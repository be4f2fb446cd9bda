"""Print every row of results.jsonl and heldout.jsonl, then mean ± std per configuration of heldout.jsonl."""
import json
import statistics as st
from pathlib import Path

HERE = Path(__file__).parent
KEYS = ["all|rcnas@5", "all|rcnas@10", ">=80%|rcnas@5", ">=80%|rcnas@10"]
print("name", *KEYS)
for name in ("results.jsonl", "heldout.jsonl"):
    print(f"-- {name}")
    rows = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line]
    for r in rows:
        print(r["name"], *[r[k] for k in KEYS])
for config in ("shift", "noshift"):
    sel = [r for r in rows if r["name"].startswith(f"heldout-{config}-")]
    print(f"held out, {config}, {len(sel)} draws:",
          *[f"{st.mean(r[k] for r in sel):.3f} ± {st.stdev(r[k] for r in sel):.3f}" for k in KEYS])
