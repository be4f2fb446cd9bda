"""acting-time variants of one agent on validation tables: NAME AGENTDIR JSON(cfg overrides + greedy/learn) [TABLES] [SEEDS]"""
import json, os, sys, statistics, dataclasses
import torch
torch.set_num_threads(1)
from rcnas.bench import tabular as tb
from rcnas.agent import AgentSearcher
name, agent_dir, ov = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
val = (sys.argv[4] if len(sys.argv) > 4 else "mnist5k-14_wrn-10-2_eps0.2,mnist5k-14_wrn-16-1_eps0.2").split(",")
seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 20
greedy, learn = ov.pop("greedy", False), ov.pop("learn", True)
tscale = ov.pop("tscale", None)
if tscale is not None:
    from rcnas.agent.policy import ScoreNet
    orig_trust = ScoreNet.trust_at
    ScoreNet.trust_at = lambda self, n: orig_trust(self, n) * tscale
adaptive = ov.pop("adaptive", None)
kern = ov.pop("kern", None)
if kern is not None:
    import numpy as np
    from itertools import combinations
    from rcnas.env import episode as epm
    base_kf = epm.kernel_features
    def kf(ctx, states):
        X = base_kf(ctx, states)
        X = X[:, X.std(0) > 0] if kern.endswith("-drop") else X
        if kern.startswith("sq"):
            return np.c_[X, X ** 2]
        if kern.startswith("quad"):
            return np.concatenate([X] + [X[:, [i]] * X[:, [j]] for i, j in combinations(range(X.shape[1]), 2)] + [X ** 2], 1)
        return X
    epm.kernel_features = kf
if adaptive is not None:
    import numpy as np, math
    from rcnas.agent import agent as am
    def act(self, episode, generator, greedy=False):
        prior = self._prior(episode)
        step = am.Step(episode.n, episode.available.copy(), self.evidence(episode, prior.numpy()), -1)
        g = 1.0
        if episode.n >= 2:
            seen, y = episode.evaluated()
            p = prior.numpy().astype(np.float64)
            s = (p - p[step.available].mean()) / (p[step.available].std() + 1e-9)
            so = s[seen]; y = (y - y.mean()) / (y.std() + 1e-9)
            oc = so - so.mean()
            slope = (oc @ y + 2.0 * 0.5) / (oc @ oc + 2.0)
            g = float(np.clip(slope * adaptive, 0.0, 1.0))
        logits = self._logits(prior, step)
        if step.n > 0:
            av = torch.from_numpy(step.available)
            spread = prior[av].std().clamp(min=1.0)
            logits = g * prior + self.net.trust_at(step.n) * spread * torch.from_numpy(step.evidence)
            logits = logits.masked_fill(~av, -math.inf)
        probs = torch.softmax(logits, 0)
        choice = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
        return am.Step(step.n, step.available, step.evidence, choice)
    am.Agent.act = act
from torch import nn
from rcnas.agent.agent import Agent
class Ens(nn.Module):
    def __init__(self, nets):
        super().__init__(); self.members = nn.ModuleList(nets)
    def forward(self, s, g):
        x = torch.stack([m(s, g) for m in self.members])
        sd = x.std(1, keepdim=True) + 1e-6
        return ((x - x.mean(1, keepdim=True)) / sd).mean(0) * sd.mean()
    def trust_at(self, n):
        return torch.stack([m.trust_at(n) for m in self.members]).mean()
dirs = agent_dir.split(",")
agent_dir = dirs[0]
orig_load = tb._load
def load(*args):
    orig_load(*args)
    a = tb._state["agent"]
    if len(dirs) > 1:
        a.net = Ens([Agent.load(d)[0].net for d in dirs])
        a.opt = torch.optim.Adam(a.net.parameters())
    a.cfg = dataclasses.replace(a.cfg, **ov)
tb._load = load
orig = AgentSearcher.__init__
def init(self, ctx, seed=0, agent=None, learn_=True, greedy_=False):
    orig(self, ctx, seed, agent=agent, learn=learn if agent is not None else True, greedy=greedy if agent is not None else False)
AgentSearcher.__init__ = init
res = tb.run_grid(("rcnas",), val, seeds, 10, agent_dir, [], jobs=1, progress=False)
line = {"name": name}
for view in tb.VIEWS:
    for k in (1, 3, 5, 10):
        line[f"{view}@{k}"] = round(statistics.fmean(tb.per_seed(res, "rcnas", view, k)), 3)
print(json.dumps(line))
open(os.environ.get("RESULTS", "bench/experiments/ensemble/results.jsonl"), "a").write(json.dumps(line) + "\n")
