"""`rcnas run`: teacher -> agent -> fine-tuning search on an unseen task -> final adversarial
training -> evaluation beside the adversarially trained teacher and the uniform shrink -> report.

Run directory:
    run.yaml            the resolved RunConfig
    search/             arch.yaml, trials.jsonl, search.json, reward_curve.png, agent/, store.sqlite
    models/<name>/      model.safetensors, model.json, card.json, card.md (rcnas, teacher-at, uniform)
    summary.json        task, search summary, every model card, timings_s (the work of each stage:
                        candidate evaluations, training epochs, attacks, also when done by an
                        earlier, interrupted call; `teacher` is this call's load or training)
    report.md + plots   written by rcnas.report
Every stage is resumable: rerunning the same command skips what is done (the store holds each
evaluation, training checkpoints every epoch, evaluation keeps per-attack state, and a model with a
card.json is finished: its weights may even be deleted, as bench/gpu.sh does to carry runs between
short GPU leases). A rerun with other settings in the same directory is refused, except that more
baselines may be added and the device may change.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rcnas.config import load_yaml, save_yaml, to_dict
from rcnas.errors import BadInput, RunFailure
from rcnas.io import exclusive_out, read_json, write_json
from rcnas.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "digits"
    attack: str = "pgd"              # the task's objective
    budget: str = "0.5x"             # half the teacher's MACs
    teacher: str | None = None       # None: the dataset's default (digits: wrn-28-2)
    seed: int = 0
    agent: str = "pretrained"        # pretrained | scratch | AGENT_DIR
    evaluations: int | None = None   # None: the agent's search length (10, a fine-tuning step after each)
    proxy_epochs: int = 2
    teacher_epochs: int = 15         # standard training of the (cached) teacher
    final_recipe: str = "pgd"        # [choice] PGD-AT on CPU (TRADES is the paper's; --recipe trades in rcnas train)
    final_epochs: int | None = None  # None: 15 (a CPU budget; docs/benchmarks.md has longer runs)
    final_attack_steps: int = 7
    eval_samples: int | None = None  # None: the whole test split
    aa_samples: int | None = 100     # [choice] AutoAttack on a stratified 100-image subset: on CPU it
                                     # costs seconds per robust image; None: the whole test split
    baselines: tuple[str, ...] = ("uniform",)
    teacher_at: bool = True          # also adversarially train and evaluate the whole teacher (over the budget:
                                     # a reference, not a competitor); on a CPU it is the longest job of a run
    device: str = "auto"             # every stage: teacher, search proxy, final training, evaluation
    final_batch_size: int = 64
    final_lr: float = 0.05
    final_train_samples: int | None = None  # None: the whole train split; n: a stratified subset (CPU)
    final_bf16: bool = False         # bf16 autocast (training forward only) + channels_last; attacks stay fp32
    jobs: int | None = None          # networks trained and evaluated at once, each in its own process on
                                     # one thread; None: on a CPU one per core (small networks gain nothing
                                     # from intra-op threads), on a GPU 1

    def __post_init__(self) -> None:
        """Every number and name is checked here, before a teacher is trained or a search started."""
        from rcnas.search.searchers import SEARCHERS
        from rcnas.seeding import check_seed
        from rcnas.train.config import RECIPE_NAMES
        counts = {"evaluations": 100_000, "proxy_epochs": 10_000, "teacher_epochs": 10_000, "final_epochs": 10_000,
                  "final_attack_steps": 10_000, "eval_samples": 10**9, "aa_samples": 10**9,
                  "final_batch_size": 1_000_000, "final_train_samples": 10**9, "jobs": 1024}
        for name, most in counts.items():
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most):
                raise BadInput(f"run config {name} must be an integer in 1..{most}, got {v!r}")
        if not isinstance(self.teacher_at, bool):
            raise BadInput(f"run config teacher_at must be true or false, got {self.teacher_at!r}")
        check_seed(self.seed, "run config seed")
        if not isinstance(self.final_lr, (int, float)) or not 0 < self.final_lr < 100:
            raise BadInput(f"run config final_lr must be in (0, 100), got {self.final_lr!r}")
        if self.final_recipe not in RECIPE_NAMES:
            raise BadInput(f"run config final_recipe {self.final_recipe!r} is unknown; use one of {', '.join(RECIPE_NAMES)}")
        for name in self.baselines:
            if name not in SEARCHERS or name in ("rcnas", "transferred"):  # transferred needs tables
                known = ", ".join(n for n in SEARCHERS.names() if n not in ("rcnas", "transferred"))
                raise BadInput(f"run config baseline {name!r} is unknown; use some of {known}")


def _final_epochs(cfg: RunConfig) -> int:
    return cfg.final_epochs if cfg.final_epochs is not None else 15


def _machine(device: str) -> dict[str, Any]:
    import platform

    import torch
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {"device": device, "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads()}


# what a resumed run may change: its finished trainings stay valid (a changed evaluation is redone on them)
MAY_CHANGE_ON_RESUME = ("baselines", "teacher_at", "device", "eval_samples", "aa_samples", "jobs")


def changed_settings(old: RunConfig, new: RunConfig,
                     allowed: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> list[str]:
    """The fields of `new` that differ from `old`, leaving out those `allowed` to change (by default
    what a resumed run may change: its finished networks stay valid)."""
    return [f.name for f in fields(RunConfig)
            if f.name not in allowed and getattr(old, f.name) != getattr(new, f.name)]


def _check_resumable(cfg: RunConfig, out: Path) -> None:
    """Refuse to continue a run directory made with other settings: its finished parts would be mixed
    with new ones."""
    path = out / "run.yaml"
    if not path.is_file():
        return
    changed = changed_settings(load_yaml(RunConfig, path), cfg)
    if changed:
        raise BadInput(f"{out} holds a run with other settings ({', '.join(changed)} differ from {path}); "
                       "use a new --out, or delete that directory to start over")


def recorded_teacher_digest(out: Path) -> str | None:
    """The weight digest of the teacher a run started from (its teacher.json); None if not recorded."""
    path = out / "teacher.json"
    return read_json(path).get("weights_sha256", "") if path.is_file() else None


def _check_teacher(out: Path, name: str, teacher) -> str:
    """A run's searches and final trainings start from one teacher. The first call records its weights'
    digest; a later one with other weights (its cache lost and the teacher trained again: not
    bit-identical) is refused, as the finished parts would mix two teachers. Returns the digest."""
    from rcnas.train.checkpoint import weights_digest
    digest, before = weights_digest(teacher), recorded_teacher_digest(out)
    if before is None:
        if (out / "search").is_dir():
            logger.warning("%s started before rcnas recorded teachers: the cached %s teacher's digest is "
                           "recorded now, unchecked against what its searches used", out, name)
        write_json(out / "teacher.json", {"teacher": name, "weights_sha256": digest})
    elif before != digest:
        raise BadInput(f"{out} was run with other {name} teacher weights (sha256 {before[:12]}, now "
                       f"{digest[:12]}: the teacher cache was trained again); restore that teacher in "
                       "RCNAS_CACHE, or use a new --out")
    return digest


def _finished_card(mdir: Path, arch, cfg: RunConfig, n_test: int) -> dict[str, Any] | None:
    """The card an earlier call wrote for this `arch` with this run's evaluation settings (a card that
    `rcnas eval` rewrote with other settings does not count: the model is evaluated again)."""
    card = mdir / "card.json"
    if not card.is_file():
        return None
    data = read_json(card)
    n = n_test if cfg.eval_samples is None else min(cfg.eval_samples, n_test)
    aa_n = cfg.aa_samples if cfg.aa_samples is not None and cfg.aa_samples < n else None
    same = (data.get("arch") == arch.to_dict() and data.get("n_eval") == n and data.get("aa_n_eval") == aa_n
            and all(data.get(k) is not None for k in ("clean_acc", "pgd20_acc", "cw40_acc", "aa_acc")))
    return data if same else None


def _trained(mdir: Path, arch) -> bool:
    """This run already finished training `arch` here (the model dir is written when training ends)."""
    meta = mdir / "model.json"
    return (mdir / "model.safetensors").is_file() and meta.is_file() and read_json(meta).get("arch") == arch.to_dict()


def _train_and_evaluate(api, cfg: RunConfig, name: str, arch, mdir: Path, init, device: str,
                        data_dir: str | None, progress: bool, status=None) -> dict[str, Any]:
    """Final adversarial training (unless finished: a changed evaluation needs none) and evaluation of
    one network; its card as a dict. `status` (a queue) gets (name, units done, what) as it goes."""
    epochs = _final_epochs(cfg)
    say = (lambda done, what: status.put((name, done, what))) if status is not None else (lambda *_: None)
    # [choice] final training starts from the teacher's inherited weights, for every network alike
    if not _trained(mdir, arch):
        api.train(arch, cfg.dataset, out=mdir, recipe=cfg.final_recipe, epochs=epochs,
                  seed=cfg.seed, data_dir=data_dir, progress=progress, init=init,
                  attack_steps=cfg.final_attack_steps, batch_size=cfg.final_batch_size, lr=cfg.final_lr,
                  schedule="cosine", device=device, train_samples=cfg.final_train_samples,
                  bf16=cfg.final_bf16, channels_last=cfg.final_bf16,
                  on_epoch=lambda row: say(row["epoch"], f"epoch {row['epoch']}/{epochs}"))
    say(epochs, "evaluating")
    card = api.evaluate(mdir, cfg.dataset, seed=cfg.seed, data_dir=data_dir, progress=progress, device=device,
                        name=name, samples=cfg.eval_samples, aa_samples=cfg.aa_samples).to_dict()
    say(epochs + PROGRESS_EVAL_UNITS, "done")
    return card


PROGRESS_EVAL_UNITS = 10  # the parallel bar's weight of one evaluation, in epochs (on a CPU, AutoAttack costs ~10)


def _final_jobs(cfg: RunConfig, device: str, networks: int) -> int:
    import os
    if cfg.jobs is not None:
        return max(1, min(cfg.jobs, networks))
    return 1 if device != "cpu" else max(1, min(networks, os.cpu_count() or 1))


def _worker_init(parent: int) -> None:
    import torch

    from rcnas.workers import exit_with_parent
    exit_with_parent(parent)
    torch.set_num_threads(1)


def _final_one(cfg: RunConfig, name: str, arch, mdir: Path, init, device: str, data_dir: str | None,
               progress: bool, status=None) -> dict[str, Any]:
    from rcnas import api
    return _train_and_evaluate(api, cfg, name, arch, mdir, init, device, data_dir, progress, status)


def _final_stage(cfg: RunConfig, todo: dict[str, tuple], device: str, data_dir: str | None,
                 progress: bool) -> dict[str, dict[str, Any]]:
    """Train and evaluate the networks in `todo` ({name: (arch, model dir, initial weights)}): one after
    the other with the progress of each, or in worker processes (one thread each) with one bar that
    moves as any worker ends an epoch or an evaluation (the workers report through a queue). A failed
    network fails the run after the others finished (a rerun resumes it)."""
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from tqdm.auto import tqdm
    jobs = _final_jobs(cfg, device, len(todo))
    if jobs <= 1:
        return {name: _final_one(cfg, name, *job, device, data_dir, progress) for name, job in todo.items()}
    cards, failed = {}, []  # failed: (name, exception)
    ctx = get_context("spawn")
    per_network = _final_epochs(cfg) + PROGRESS_EVAL_UNITS
    done = dict.fromkeys(todo, 0)
    state = dict.fromkeys(todo, "queued")
    with ctx.Manager() as manager, \
            ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)) as pool, \
            tqdm(total=per_network * len(todo), desc=f"train+evaluate ({jobs} processes)", unit="epoch",
                 disable=not progress) as bar:
        status = manager.Queue()
        futures = {pool.submit(_final_one, cfg, name, *job, device, data_dir, False, status): name
                   for name, job in todo.items()}

        def drain() -> None:  # the workers' news: epochs as they end, then the evaluation
            while not status.empty():
                name, units, what = status.get()
                bar.update(max(0, units - done[name]))
                done[name], state[name] = max(done[name], units), what
                bar.set_postfix_str(", ".join(f"{n}: {w}" for n, w in state.items()))

        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            drain()
            for f in finished:
                name = futures[f]
                if f.exception() is not None:
                    failed.append((name, f.exception()))
                    state[name] = "failed"
                else:
                    cards[name] = f.result()
                bar.update(per_network - done[name])
                done[name] = per_network
    if failed:
        name, error = failed[0]
        if isinstance(error, BadInput):
            raise error
        raise RunFailure(f"{len(failed)} of {len(todo)} networks failed (rerun to resume them); first: "
                         f"{name}: {type(error).__name__}: {error}") from error
    return cards


@exclusive_out
def run_pipeline(cfg: RunConfig, out: str | Path = "runs/default", data_dir: str | None = None,
                 progress: bool = True) -> dict[str, Any]:
    from rcnas import api
    from rcnas.data import load_dataset
    from rcnas.device import resolve_device
    from rcnas.models import inherit
    from rcnas.search.driver import SearchContext
    from rcnas.search.searchers import make_searcher
    from rcnas.search.store import Store
    from rcnas.tasks import resolve
    out = Path(out)
    device = str(resolve_device(cfg.device))  # a bad device fails here, before any work
    _check_resumable(cfg, out)
    save_yaml(cfg, out / "run.yaml")
    timings: dict[str, float | None] = {}
    task = Task(cfg.dataset, cfg.attack, cfg.teacher, cfg.budget)
    resolved = resolve(task, data_dir)
    save_yaml(task, out / "task.yaml")

    t = time.time()
    recorded = recorded_teacher_digest(out) is not None  # a run that started from a teacher never trains another
    teacher = api.train_teacher(cfg.dataset, resolved.teacher, data_dir=data_dir, progress=progress,
                                cached_only=f"{out} was run with it: restore it in RCNAS_CACHE, or use a new --out"
                                if recorded else None,
                                epochs=cfg.teacher_epochs, device=device)
    timings["teacher"] = time.time() - t
    teacher_sha256 = _check_teacher(out, resolved.teacher, teacher)

    agent, _ = api.load_agent(cfg.agent, cfg.seed)
    evaluations = cfg.evaluations or agent.cfg.evaluations
    proxy = api.ProxyConfig(epochs=cfg.proxy_epochs, teacher_epochs=cfg.teacher_epochs)
    result = api.search(task, searcher="rcnas", agent=cfg.agent, evaluations=evaluations, proxy=proxy,
                        seed=cfg.seed, out=out / "search", data_dir=data_dir, device=device, progress=progress)
    timings["search/rcnas"] = result.extra["evaluation_seconds"]

    # the baselines at the same budget: each heuristic rule proposes one network
    ev = api.make_evaluator("train", proxy, data_dir, device)
    ctx = SearchContext(resolved, ev.space(resolved), ev, Store(out / "search" / "store.sqlite"), seed=cfg.seed)
    models = {"rcnas": result.best.arch} | ({"teacher-at": resolved.teacher_arch} if cfg.teacher_at else {})
    for name in cfg.baselines:
        if name in ("random", "evolution", "tpe"):  # search baselines: same evaluations, same store
            res = api.search(task, searcher=name, evaluations=evaluations, proxy=proxy, seed=cfg.seed,
                             out=out / f"search-{name}", store=out / "search" / "store.sqlite",
                             data_dir=data_dir, device=device, progress=progress)
            models[name] = res.best.arch
            timings[f"search/{name}"] = res.extra["evaluation_seconds"]
        else:  # heuristic rules: one network each
            models[name] = make_searcher(name, ctx, cfg.seed).ask()

    n_test = len(load_dataset(cfg.dataset, data_dir).test)
    cards = {name: _finished_card(out / "models" / name, arch, cfg, n_test) for name, arch in models.items()}
    todo = {name: (arch, out / "models" / name, inherit(teacher, arch))
            for name, arch in models.items() if cards[name] is None}
    cards |= _final_stage(cfg, todo, device, data_dir, progress)
    for name in models:
        card = cards[name]
        timings[f"train/{name}"] = card["training"].get("seconds")  # None: a card older than this field
        timings[f"eval/{name}"] = sum(card.get("eval_seconds", {}).values()) or None

    summary = {"task": to_dict(task), "teacher": resolved.teacher, "teacher_sha256": teacher_sha256, "eps": resolved.eps,
               "budget_macs": resolved.budget_macs, "teacher_macs": resolved.teacher_macs,
               "search": read_json(out / "search" / "search.json"), "models": cards,
               "timings_s": timings, "config": to_dict(cfg), "machine": _machine(device)}
    write_json(out / "summary.json", summary)
    try:
        from rcnas.report import write_report
        write_report(out)
    except ImportError:
        pass
    return summary
