"""evaluate one agent or an ensemble (mean of scores) on validation tables."""
import json, sys, statistics, os
import torch
from torch import nn
torch.set_num_threads(1)
from rcnas.bench import tabular as tb
from rcnas.agent.agent import Agent

class Ens(nn.Module):
    def __init__(self, nets):
        super().__init__(); self.members = nn.ModuleList(nets)
    def forward(self, s, g):
        return torch.stack([m(s, g) for m in self.members]).mean(0)
    def trust_at(self, n):
        return torch.stack([m.trust_at(n) for m in self.members]).mean()

name, dirs, train, val = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4].split(",")
seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 20
methods = tuple(sys.argv[6].split(",")) if len(sys.argv) > 6 else ("rcnas",)
orig = tb._load
def load(agent, training, held_out):
    orig(agent, training, held_out)
    if len(dirs) > 1:
        a = tb._state["agent"]
        a.net = Ens([Agent.load(d)[0].net for d in dirs])
        a.opt = torch.optim.Adam(a.net.parameters())
tb._load = load
res = tb.run_grid(methods, val, seeds, 10, dirs[0], train, jobs=1, progress=False)
line = {"name": name}
for view in tb.VIEWS:
    for m in methods:
        for k in (1, 3, 5, 10):
            line[f"{view}|{m}@{k}"] = round(statistics.fmean(tb.per_seed(res, m, view, k)), 3)
print(json.dumps(line))
with open(os.environ.get("RESULTS", "bench/experiments/task-shift/results.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")
