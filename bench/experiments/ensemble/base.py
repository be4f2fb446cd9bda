import json, os, sys, statistics, torch
torch.set_num_threads(1)
from rcnas.bench import tabular as tb
methods = tuple(sys.argv[1].split(",")); val = sys.argv[2].split(","); train = sys.argv[3].split(",")
res = tb.run_grid(methods, val, 20, 10, "/tmp/task-shift/b-s0", train, jobs=1, progress=False)
for m in methods:
    line = {"name": "base:" + m + ":" + sys.argv[2][:20]}
    for view in tb.VIEWS:
        for k in (1, 3, 5, 10):
            line[f"{view}@{k}"] = round(statistics.fmean(tb.per_seed(res, m, view, k)), 3)
    print(json.dumps(line)); open(os.environ.get("RESULTS", "bench/experiments/ensemble/results.jsonl"), "a").write(json.dumps(line) + "\n")
