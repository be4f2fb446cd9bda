"""The regret of evaluating an agent's (or ensemble's) top-k candidates in order, no adaptation:
AGENTDIR[,AGENTDIR...] TABLES; ZS=1 averages standardised member scores (else the raw mean)."""
import json, numpy as np, torch, statistics, sys
torch.set_num_threads(1)
from rcnas.bench import tabular as tb
from rcnas.env.episode import SearchEpisode
from rcnas.search.table import TableEvaluator, load_tables
from rcnas.agent.agent import Agent
tables = load_tables(); ev = TableEvaluator(tables)
agents = [Agent.load(d)[0] for d in sys.argv[1].split(",")]
import os; ZS = os.environ.get("ZS") == "1"
names = sys.argv[2].split(",")
for view in ("all", ">=80%"):
    out = {k: [] for k in (1, 3, 5, 10)}
    for tt in tb.table_tasks([tables[n] for n in names], views=(view,)):
        ctx = tt.context(ev); states = ctx.feasible_states()
        ep = SearchEpisode(ctx, states, len(states))
        with torch.no_grad(): S = [a.scores(ep).numpy() for a in agents]; s = np.mean([(x - x.mean()) / (x.std() + 1e-9) for x in S], 0) if ZS else np.mean(S, 0)
        y = np.array([ctx.reward(tt.table.record(tt.task, ctx.space.arch(st))) for st in states])
        order = np.argsort(-s)
        for k in out: out[k].append(tt.regret(y[order[:k]].max()))
    row = {"agents": sys.argv[1], "zscore": ZS, "view": view, **{f"top@{k}": round(statistics.fmean(v), 3) for k, v in out.items()}}
    print(json.dumps(row))
    open(os.environ.get("RESULTS", "bench/experiments/ensemble/topk.jsonl"), "a").write(json.dumps(row) + "\n")
