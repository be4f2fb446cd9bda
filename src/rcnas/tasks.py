"""Task settings (dataset, attack, teacher, budget) and the buffers meta-training samples them from."""
from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass, field, replace
from functools import cached_property

from rcnas.errors import BadInput
from rcnas.space.arch import Arch

logger = logging.getLogger(__name__)

ATTACK_KINDS = ("clean", "fgsm", "pgd", "cw", "aa")


def attack_kind(name: str) -> str:
    """`pgd20` -> `pgd`; validates the name."""
    kind = name.rstrip("0123456789")
    if kind not in ATTACK_KINDS or (kind != name and kind in ("clean", "fgsm", "aa")):
        raise BadInput(f"unknown attack {name!r}; known: clean, fgsm, pgd (pgdN), cw (cwN), aa")
    return kind


@dataclass(frozen=True)
class Task:
    """One task setting. The search maximises accuracy under `attack` within `budget` MACs."""
    dataset: str = "digits"
    attack: str = "pgd"          # the objective's attack: clean, fgsm, pgd[N], cw[N], aa
    teacher: str | None = None   # None: the dataset's default teacher
    budget: str | int | float = "0.5x"  # MACs (5G, 300M, an integer) or a fraction of the teacher (0.5x);
    #                                     a number (YAML `budget: 300000`) is kept as its string
    eps: float | None = None     # L-inf radius in [0,1] pixel units; None: the dataset's default

    def __post_init__(self) -> None:
        attack_kind(self.attack)
        if self.eps is not None and not (0 < self.eps <= 1):
            raise BadInput(f"eps must be in (0, 1] (pixel units), got {self.eps}; e.g. 8/255 = 0.0314")
        if isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool):
            object.__setattr__(self, "budget", str(self.budget))

    @property
    def attack_kind(self) -> str:
        return attack_kind(self.attack)

    def key(self) -> str:
        return f"{self.dataset}|{self.attack}|{self.teacher}|{self.budget}|{self.eps}"


@dataclass(frozen=True)
class ResolvedTask:
    """A task with every default filled in and its numbers computed."""
    task: Task
    teacher: str
    teacher_arch: Arch
    eps: float
    budget_macs: int
    teacher_macs: int
    input_size: int
    in_channels: int
    num_classes: int

    @property
    def dataset(self) -> str:
        return self.task.dataset

    @property
    def attack(self) -> str:
        return self.task.attack

    @cached_property
    def eval_key(self) -> str:
        """What a candidate's evaluation depends on: not the budget, not the attack kind (a candidate
        is proxy-trained once at eps and measured under every attack)."""
        return f"{self.dataset}|{self.teacher}|eps={self.eps:.6g}"


@functools.lru_cache(maxsize=256)
def _say_once(message: str) -> None:
    """A one-line warning about an assumption, once per process (a task is resolved many times)."""
    logger.warning("%s", message)


def resolve(task: Task, data_dir: str | None = None) -> ResolvedTask:
    """Fill in defaults (teacher, eps) and compute the budget in MACs; fail if it can never be met."""
    from rcnas.cost import arch_cost, format_macs, parse_macs
    from rcnas.data import dataset_info
    from rcnas.space.teachers import default_teacher, teacher_arch
    from rcnas.search.space import SearchSpace

    info = dataset_info(task.dataset, data_dir)
    teacher = task.teacher or default_teacher(task.dataset)
    t_arch = teacher_arch(teacher)
    t_macs = arch_cost(t_arch, info.input_size, info.channels, info.num_classes).macs
    budget = parse_macs(task.budget, t_macs)
    eps = task.eps if task.eps is not None else info.default_eps
    from rcnas.data import DATASETS
    if task.eps is None and task.dataset.strip() not in DATASETS:
        _say_once(f"{task.dataset}: no eps given, assuming {eps:.4g} ({eps * 255:.3g}/255), the usual for "
                  f"{'natural' if info.channels == 3 else 'one-channel'} images; give --eps to choose")
    if budget > t_macs:
        _say_once(f"budget {format_macs(budget)} MACs is above the teacher {teacher}'s {format_macs(t_macs)}: "
                  "every sub-network fits, so the budget constrains nothing")
    resolved = ResolvedTask(task, teacher, t_arch, eps, budget, t_macs, info.input_size, info.channels,
                            info.num_classes)
    smallest = SearchSpace.for_task(resolved).smallest_macs()
    if budget < smallest:
        raise BadInput(f"budget {format_macs(budget)} MACs is below the smallest sub-network of {teacher} "
                       f"({format_macs(smallest)} MACs at {info.input_size}x{info.input_size}); raise --budget")
    return resolved


def table_name(dataset: str, teacher: str, eps: float) -> str:
    """The name of a tabular benchmark's (dataset, teacher, eps): `digits_wrn-16-1_eps0.15`."""
    return f"{dataset}_{teacher}_eps{eps:g}"


def parse_table_name(name: str) -> tuple[str, str, float]:
    dataset, teacher, eps = name.rsplit("_", 2) if name.count("_") >= 2 else (name, "", "")
    try:
        if not (teacher and eps.startswith("eps")):
            raise ValueError
        return dataset, teacher, float(eps[3:])
    except ValueError:
        raise BadInput(f"{name!r} is not a table name; expected DATASET_TEACHER_epsEPS, "
                       "e.g. digits_wrn-16-1_eps0.15") from None


@dataclass(frozen=True)
class Buffers:
    """What meta-training samples task settings from (the paper's attack, dataset and teacher buffers
    plus a budget), and the held-out task settings it must never see. `tables`, when given, names the
    (dataset, teacher, eps) settings directly (tabular benchmarks) instead of datasets x teachers x
    eps_scales."""
    tables: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ("digits",)
    attacks: tuple[str, ...] = ("clean", "fgsm", "pgd", "cw")
    eps_scales: tuple[float, ...] = (0.67, 1.0)   # times the dataset's default eps
    teachers: tuple[str, ...] = ("wrn-16-2", "wrn-22-2", "wrn-16-4")  # or DATASET:NAME for one dataset
    budgets: tuple[str | int | float, ...] = ("0.3x", "0.4x", "0.5x", "0.6x")  # numbers become strings
    floors: tuple[float, ...] = (0.0,)  # the least MACs a candidate may have, as a fraction of the budget
    held_out: tuple[Task, ...] = field(default_factory=lambda: (
        Task("digits", "pgd", "wrn-28-2", "0.5x"),))

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(
            str(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else b for b in self.budgets))
        for name in ("datasets", "attacks", "eps_scales", "teachers", "budgets"):
            if not getattr(self, name):
                raise BadInput(f"buffers: {name} must list at least one value")
        for a in self.attacks:
            attack_kind(a)
        for n in self.tables:
            parse_table_name(n)
        if any(not (0 < s <= 4) for s in self.eps_scales):
            raise BadInput("buffers: eps_scales must be in (0, 4]")
        if not self.floors or any(not (0 <= f < 1) for f in self.floors):
            raise BadInput("buffers: floors must list fractions of the budget in [0, 1), e.g. [0.0, 0.8]")

    def teachers_for(self, dataset: str) -> list[str]:
        """A teacher entry `DATASET:NAME` applies to that dataset only; a plain name to every dataset."""
        out = []
        for entry in self.teachers:
            scope, _, name = entry.rpartition(":")
            if not scope or scope == dataset:
                out.append(name)
        return out

    def settings(self, default_eps: dict[str, float]) -> list[tuple[str, str, float]]:
        """The (dataset, teacher, eps) settings, before attacks and budgets."""
        if self.tables:
            return [parse_table_name(n) for n in self.tables]
        return [(d, t, round(default_eps[d] * s, 6)) for d in self.datasets for t in self.teachers_for(d)
                for s in self.eps_scales]

    def all_tasks(self, default_eps: dict[str, float]) -> list[Task]:
        tasks = [Task(d, a, t, b, eps) for d, t, eps in self.settings(default_eps)
                 for a in self.attacks for b in self.budgets]
        held = {self._canonical(h, default_eps) for h in self.held_out}
        return [t for t in tasks if self._canonical(t, default_eps) not in held]

    @staticmethod
    def _canonical(task: Task, default_eps: dict[str, float]) -> Task:
        eps = task.eps if task.eps is not None else default_eps.get(task.dataset)
        return replace(task, eps=round(eps, 6) if eps is not None else None)

    def sample(self, rng: random.Random, default_eps: dict[str, float]) -> Task:
        tasks = self.all_tasks(default_eps)
        if not tasks:
            raise BadInput("buffers: every task setting is held out; add datasets, attacks, teachers or budgets")
        return rng.choice(tasks)
