"""meta-train with domain randomisation: each update's searches see the table's rewards plus a random
additive function of the candidates' shapes (sigma x the rewards' spread), so the prior is sometimes wrong."""
import json, sys, time, os
import numpy as np
import torch
torch.set_num_threads(1)
from rcnas.agent.agent import AgentConfig, Agent
from rcnas.agent.meta import meta_train
from rcnas.env.episode import SearchEpisode
from rcnas.search.table import TableEvaluator, load_tables
from rcnas.tasks import Buffers
name, seed, train = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
sigma, p = float(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(seed)
W = {"w": None}
def redraw():
    W["w"] = rng.standard_normal(64) if rng.random() < p else None
redraw()
orig_meta = Agent.meta_update
def meta_update(self, *a, **k):
    out = orig_meta(self, *a, **k); redraw(); return out
Agent.meta_update = meta_update
orig_obs = SearchEpisode.observe
def observe(self, arch, reward):
    if W["w"] is not None and arch in self.position:
        if not hasattr(self, "_pert"):
            K = self.kernel; d = K.shape[1]
            base = (K - K.mean(0)) @ W["w"][:d]
            base = base / (base.std() + 1e-9)
            ev, task = self.ctx.evaluator, self.ctx.task
            rs = np.array([self.ctx.reward(ev.evaluate(task, a, 0)) for a in self.archs])
            self._pert = sigma * rs.std() * base
        reward = reward + float(self._pert[self.position[arch]])
    return orig_obs(self, arch, reward)
SearchEpisode.observe = observe
tables = load_tables()
buf = Buffers(tables=tuple(train), attacks=("clean", "fgsm", "pgd", "cw", "aa"),
              budgets=("0.3x", "0.4x", "0.5x", "0.6x", "0.7x"), floors=(0.0, 0.8), held_out=())
t0 = time.time()
meta_train(buf, f"/tmp/task-shift/{name}", TableEvaluator(tables), episodes=4000, agent_cfg=AgentConfig(shift=0.0), progress=False, seed=seed)
print(name, "trained", round(time.time() - t0), "s")
