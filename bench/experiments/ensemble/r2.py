"""In-sample check: fit a linear model of the relative shape (the kernel features of the within-search
Gaussian process) on *every* network of a task setting; where is its argmax? Appends to r2.jsonl."""
import json, os, statistics, sys
import numpy as np, torch
torch.set_num_threads(1)
from rcnas.bench import tabular as tb
from rcnas.env.features import kernel_features
from rcnas.search.table import TableEvaluator, load_tables
tables = load_tables()
names = (sys.argv[1] if len(sys.argv) > 1 else "digits_wrn-16-2_eps0.1,digits_wrn-22-1_eps0.15,mnist5k-14_wrn-10-2_eps0.2").split(",")
ev = TableEvaluator(tables)
for view in ("all", ">=80%"):
    r2s, regs = [], []
    for tt in tb.table_tasks([tables[n] for n in names], views=(view,)):
        ctx = tt.context(ev)
        states = ctx.feasible_states()
        X = np.c_[kernel_features(ctx, states), np.ones(len(states))]
        y = np.array([ctx.reward(tt.table.record(tt.task, ctx.space.arch(s))) for s in states])
        pred = X @ np.linalg.lstsq(X, y, rcond=None)[0]
        r2s.append(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
        regs.append(tt.regret(y[np.argmax(pred)]))
    row = {"tables": names, "view": view, "r2": round(statistics.fmean(r2s), 3),
           "regret_of_argmax": round(statistics.fmean(regs), 3), "task_settings": len(regs)}
    print(json.dumps(row))
    open(os.environ.get("RESULTS", "bench/experiments/ensemble/r2.jsonl"), "a").write(json.dumps(row) + "\n")
