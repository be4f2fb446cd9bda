"""Print every row of results.jsonl (machine-written by sweep.py and base.py, in the order run)."""
import json
from pathlib import Path

COLS = ("all@1", "all@3", "all@5", "all@10", ">=80%@1", ">=80%@3", ">=80%@5", ">=80%@10")
print("name".ljust(24), *(c.rjust(8) for c in COLS))
for line in (Path(__file__).parent / "results.jsonl").read_text().splitlines():
    row = json.loads(line)
    print(row["name"][:24].ljust(24), *(f"{row[c]:8.3f}" for c in COLS))
