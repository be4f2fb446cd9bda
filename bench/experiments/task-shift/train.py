"""meta-train one agent on the digits split (validation: mnist5k tables)."""
import json, sys, time, os
import torch
torch.set_num_threads(1)
from rcnas.agent.agent import AgentConfig
from rcnas.agent.meta import meta_train
from rcnas.search.table import TableEvaluator, load_tables
from rcnas.tasks import Buffers
name, seed, train = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
ov = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
episodes = int(os.environ.get("EPISODES", "4000"))
tables = load_tables()
buf = Buffers(tables=tuple(train), attacks=("clean", "fgsm", "pgd", "cw", "aa"),
              budgets=("0.3x", "0.4x", "0.5x", "0.6x", "0.7x"), floors=(0.0, 0.8), held_out=())
t0 = time.time()
meta_train(buf, f"/tmp/task-shift/{name}", TableEvaluator(tables), episodes=episodes, agent_cfg=AgentConfig(**ov), progress=False, seed=seed)
print(name, "trained", round(time.time() - t0), "s")
