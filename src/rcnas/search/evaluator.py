"""Candidate evaluators: what a sub-network scores on a task, cached and counted.

`TrainEvaluator` is the real proxy: inherit the teacher's weights, adversarially fine-tune briefly,
then measure accuracy under several attacks on the validation split. One proxy training serves
every attack kind and every budget of a (dataset, teacher, eps), so results are stored under that
evaluation key and a task picks its own metric. The search context puts any evaluator behind the
persistent store and counts evaluations (`rcnas.search.driver.SearchContext.evaluate_many`).
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from rcnas.cost import arch_cost
from rcnas.errors import BadInput
from rcnas.registry import Registry
from rcnas.search.store import Record
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask, attack_kind

EVALUATORS: Registry = Registry("evaluator")
logger = logging.getLogger(__name__)


def at_chance(clean: float, labels: torch.Tensor) -> bool:
    """Whether a clean accuracy is no better than always answering the commonest class, within two
    binomial standard errors: such a network learnt nothing, and its robust scores rank nothing."""
    n = len(labels)
    chance = float(torch.bincount(labels).max()) / n
    return clean <= chance + 2 * math.sqrt(chance * (1 - chance) / n)


def metric_for(attack: str) -> str:
    """The evaluator metric that stands for a task's attack during the search.

    [choice] AutoAttack is too slow for a proxy: the search scores the per-sample worst case of PGD
    and CW instead (AutoAttack's main components are APGD on cross-entropy and on a margin loss).
    """
    return {"clean": "clean", "fgsm": "fgsm", "pgd": "pgd", "cw": "cw", "aa": "worst"}[attack_kind(attack)]


@dataclass(frozen=True)
class ProxyConfig:
    """The short adversarial fine-tuning that scores a candidate (named and part of the cache key)."""
    epochs: int = 2                  # passes over the (sub-sampled) training split
    batch_size: int = 64
    lr: float = 0.05
    recipe: str = "pgd"              # adversarial-training recipe of rcnas.train
    attack_steps: int = 3            # PGD steps while training
    train_samples: int | None = 1000 # stratified sub-sample of the training split (None: all)
    val_samples: int | None = 400    # stratified sub-sample of the validation split (None: all)
    val_steps: int = 10              # steps of the PGD and CW attacks that score the candidate
    inherit: str = "l1"              # weight-inheritance strategy: l1 | first
    lips_samples: int = 64           # validation images for the LIPS state feature
    teacher_epochs: int = 15         # standard training of the cached teacher

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class Evaluator(ABC):
    """Scores an architecture on a task. Subclasses override `evaluate` (pure computation)."""
    name: str = "base"
    proxy_key: str = ""

    @abstractmethod
    def evaluate(self, task: ResolvedTask, arch: Arch, seed: int) -> Record: ...

    def lips(self, task: ResolvedTask, arch: Arch) -> float:
        """Local Lipschitz estimate of the (inherited, untrained) sub-network: the agent's LIPS."""
        return 0.0

    def space(self, task: ResolvedTask):
        """The architectures this evaluator can score for `task` (default: the teacher's eighths)."""
        from rcnas.search.space import SearchSpace
        return SearchSpace.for_task(task)


def safe_evaluate(evaluator: Evaluator, task: ResolvedTask, arch: Arch, seed: int,
                  retries: int = 1) -> Record:
    """Evaluate; a crash is retried, then recorded as a failed candidate (it never kills the search)."""
    for attempt in range(retries + 1):
        try:
            return evaluator.evaluate(task, arch, seed)
        except (BadInput, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - a broken candidate must not end the search
            if attempt == retries:
                cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
                return Record(arch, {}, cost.macs, cost.params, status="failed",
                              error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
    raise AssertionError("unreachable")


@EVALUATORS.register("train")
class TrainEvaluator(Evaluator):
    name = "train"

    def __init__(self, proxy: ProxyConfig | None = None, data_dir: str | None = None,
                 device: str = "cpu") -> None:
        self.proxy = proxy or ProxyConfig()
        self.data_dir, self.device = data_dir, device
        self.proxy_key = f"train:{self.proxy.key()}"

    @lru_cache(maxsize=4)  # noqa: B019 - bounded; an evaluator lives as long as its search or meta-training
    def _splits(self, dataset: str):
        from rcnas.data import load_dataset
        splits = load_dataset(dataset, self.data_dir)
        n = self.proxy.train_samples
        train = splits.train if n is None or n >= len(splits.train) else splits.train.subset(n, seed=0)
        val = splits.val if self.proxy.val_samples is None else splits.val.subset(
            min(self.proxy.val_samples, len(splits.val)), seed=0)
        return splits.info, train, val

    @lru_cache(maxsize=4)  # noqa: B019
    def _teacher(self, dataset: str, teacher: str):
        from rcnas.teacher import get_teacher
        return get_teacher(dataset, teacher, data_dir=self.data_dir, epochs=self.proxy.teacher_epochs,
                           device=self.device, progress=False)

    def attacks(self) -> tuple[str, ...]:
        n = self.proxy.val_steps
        return ("clean", "fgsm", f"pgd{n}", f"cw{n}")

    def evaluate(self, task: ResolvedTask, arch: Arch, seed: int) -> Record:
        from rcnas.evaluate import evaluate_robustness
        from rcnas.models import count_params, inherit
        from rcnas.train import TrainConfig, fit
        start = time.perf_counter()
        info, train, val = self._splits(task.dataset)
        teacher = self._teacher(task.dataset, task.teacher)  # loading (or training) it draws from the global RNG
        torch.manual_seed(seed)  # so seed after it: a candidate's fresh weights never depend on the process's past
        model = inherit(teacher, arch, self.proxy.inherit)
        p = self.proxy
        cfg = TrainConfig(recipe=p.recipe, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                          schedule="cosine", eps=task.eps, attack_steps=p.attack_steps,
                          select_by="last", guard=False, seed=seed, device=self.device)
        fit(model, train, None, cfg, info=info, progress=False)
        result = evaluate_robustness(model, val.x, val.y, attacks=self.attacks(), eps=task.eps,
                                     seed=seed, device=self.device)
        if at_chance(result.clean, val.y):
            logger.warning("candidate %s scored %.1f%% clean after the proxy training, which is chance: its "
                           "robust scores rank nothing; give the proxy more (--proxy-epochs, "
                           "--proxy-train-samples)", arch, 100 * result.clean)
        n = p.val_steps
        metrics = {"clean": result.clean, "fgsm": result.attacks["fgsm"],
                   "pgd": result.attacks[f"pgd{n}"], "cw": result.attacks[f"cw{n}"],
                   "worst": result.worst_case}
        cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
        assert cost.params == count_params(model)
        return Record(arch, metrics, cost.macs, cost.params, seconds=time.perf_counter() - start)

    def lips(self, task: ResolvedTask, arch: Arch) -> float:
        # computed once per (task, arch): SearchContext.lips keeps it in the store
        from rcnas.attacks import local_lipschitz, make_attack
        from rcnas.models import inherit
        _, _, val = self._splits(task.dataset)
        model = inherit(self._teacher(task.dataset, task.teacher), arch, self.proxy.inherit).eval()
        name = {"clean": "fgsm", "fgsm": "fgsm", "pgd": "pgd5", "cw": "cw5", "aa": "pgd5"}[attack_kind(task.attack)]
        n = self.proxy.lips_samples
        return local_lipschitz(model, val.x[:n], val.y[:n], make_attack(name, task.eps))
