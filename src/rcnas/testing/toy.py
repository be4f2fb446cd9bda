"""A toy evaluator with the shape the paper reports: under attack, capacity in stages 1-2 and a
robust block in stage 3 pay; for clean accuracy, capacity anywhere does. Deterministic."""
from __future__ import annotations

import zlib

from rcnas.cost import arch_cost
from rcnas.search.evaluator import EVALUATORS, Evaluator
from rcnas.search.store import Record, Store
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask, Task, resolve


@EVALUATORS.register("toy")
class ToyEvaluator(Evaluator):
    name = "toy"
    proxy_key = "toy:v1"

    def __init__(self, noise: float = 0.01) -> None:
        self.noise = noise
        self.calls = 0

    def evaluate(self, task: ResolvedTask, arch: Arch, seed: int) -> Record:
        self.calls += 1
        t = task.teacher_arch
        cap = [(arch.depths[i] / t.depths[i]) ** 0.5 * (arch.channels[i] / t.channels[i]) for i in range(3)]
        robust3 = float(arch.blocks[2] == "robust")
        jitter = self.noise * ((zlib.crc32(f"{arch.key()}|{seed}".encode()) % 1000) / 500 - 1)
        clean = 0.6 + 0.35 * (sum(cap) / 3) ** 0.5 + jitter
        under_attack = 0.15 + 0.25 * cap[0] ** 0.5 + 0.3 * cap[1] ** 0.5 + 0.05 * cap[2] + 0.06 * robust3 + jitter
        strength = {"fgsm": 1.0, "pgd": 0.9, "cw": 0.88, "worst": 0.85}
        metrics = {"clean": clean, **{k: min(clean, under_attack * v * (1 - task.eps))
                                      for k, v in strength.items()}}
        cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
        return Record(arch, metrics, cost.macs, cost.params)

    def lips(self, task: ResolvedTask, arch: Arch) -> float:
        return 1.0 + 10.0 * sum(arch.channels) / sum(task.teacher_arch.channels)


def toy_context(task: Task | None = None, store_path=":memory:", seed: int = 0, reward: str = "budget"):
    """A `SearchContext` over the toy evaluator (digits' shapes, no training)."""
    from rcnas.search.driver import SearchContext
    resolved = resolve(task or Task("digits", "pgd", "wrn-28-2", "0.5x"))
    ev = ToyEvaluator()
    return SearchContext(resolved, ev.space(resolved), ev, Store(store_path), seed=seed, reward_name=reward)




def write_toy_table(directory, dataset: str = "digits", teacher: str = "wrn-16-1", eps: float = 0.15,
                    seeds: int = 2, width_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)):
    """A tabular benchmark of the relative grid scored by the toy evaluator, in the shipped format
    (for tests and examples of the benchmark harness: instant, deterministic). Returns its path."""
    import gzip
    import json
    from pathlib import Path

    from rcnas.search.space import SearchSpace
    from rcnas.search.table import METRICS, TABLE_FORMAT
    from rcnas.tasks import table_name
    task = resolve(Task(dataset, "pgd", teacher, "1.0x", eps))
    space = SearchSpace.relative(task.teacher_arch, task.input_size, task.in_channels, task.num_classes,
                                 width_fractions)
    toy = ToyEvaluator()
    rows = []
    for state in space.all_states():
        arch = space.arch(state)
        records = [toy.evaluate(task, arch, s) for s in range(seeds)]
        rows.append({"arch": arch.key(), "arch_dict": arch.to_dict(), "macs": records[0].macs,
                     "params": records[0].params, "lips": toy.lips(task, arch),
                     "seeds": [{m: r.metrics[m] for m in METRICS} for r in records], "seconds": 0.0})
    name = table_name(dataset, teacher, eps)
    path = Path(directory) / f"{name}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        json.dump({"format": TABLE_FORMAT, "version": f"{name}-toy", "dataset": dataset, "teacher": teacher,
                   "eps": eps, "seeds": seeds, "metrics": list(METRICS), "rows": rows,
                   "input_size": task.input_size, "proxy": {"evaluator": "toy", "teacher_epochs": 0},
                   "evaluation_seconds": 0.0,
                   "grid": {"depths": [list(d) for d in space.depth_levels],
                            "channels": [list(c) for c in space.width_levels], "blocks": list(space.blocks)}}, f)
    return path
