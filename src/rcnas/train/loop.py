"""`fit`: train with a recipe, validate every epoch, keep the best epoch, checkpoint, resume exactly.

Per epoch: `_train_epoch` (the core loop), validation (clean on all of val, robust on its first
`val_samples` under `val_attack`), the catastrophic-overfitting guard (fast recipes), best-epoch
selection, and an atomic checkpoint. All randomness of epoch `e` (shuffling, augmentation, attack
starts, dropout) comes from generators seeded by `(cfg.seed, e)`, so a run resumed from the
checkpoint after epoch `e` computes the same weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rcnas.attacks import Attack, make_attack
from rcnas.config import to_dict
from rcnas.data import DatasetInfo, Split, augment, iterate_batches
from rcnas.device import resolve_device
from rcnas.errors import BadInput
from rcnas.io import read_json, write_json
from rcnas.train import checkpoint as ckpt
from rcnas.train.config import FAST_RECIPES, TrainConfig
from rcnas.train.recipes import RECIPES

logger = logging.getLogger("rcnas.train")

# Catastrophic-overfitting guard: once val robust accuracy has reached GUARD_MIN_BEST, an epoch whose
# robust accuracy falls below GUARD_RATIO of the best so far, or to ~0 while clean accuracy stays
# high, is a collapse (Wong et al. 2020 see PGD accuracy go to 0 within an epoch).
GUARD_RATIO = 0.3
GUARD_MIN_BEST = 0.05
GUARD_NEAR_ZERO = 0.02
GUARD_CLEAN_HIGH = 0.5
# Config fields that do not change the numbers, so a checkpoint may be resumed with others.
RESUME_IGNORED = ("device", "compile")


class Replica(Protocol):
    """One process of a data-parallel run (rcnas.train.ddp.DDPReplica): `fit` trains through
    `wrap(model)` on slice `rank` of every batch, makes the replicas' buffers agree after each epoch's
    training, takes rank 0's validation metrics, and writes checkpoints only on rank 0."""
    rank: int
    world: int

    def wrap(self, fwd: nn.Module) -> nn.Module: ...
    def sync(self, module: nn.Module) -> None: ...
    def agree(self, values: list[float | None]) -> list[float | None]: ...


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    """epochs completed, counting those done before a resume"""
    best_epoch: int
    """1-based epoch whose weights the model holds on return (the last epoch for select_by=last)"""
    history: list[dict]
    """one row per epoch: epoch, losses/train, charts/lr, eval/val_clean, eval/val_robust, time/epoch_s,
    time/img_per_s (training images per second), and guard/tripped for guarded fast recipes"""
    val_clean: float
    """validation clean accuracy of the returned weights (nan without a val split)"""
    val_robust: float
    """validation robust accuracy (val_attack, first val_samples images) of the returned weights"""
    guard_tripped: bool
    """the catastrophic-overfitting guard fired and training fell back to the pgd recipe"""
    seconds: float
    """wall-clock seconds of training, summed over the run's epochs (earlier calls of a resumed run included)"""


# ---------------------------------------------------------------- schedule, seeds, EMA

def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step `step` (0-based, over the whole run)."""
    t = step / (cfg.epochs * steps_per_epoch)  # training progress in [0, 1)
    if cfg.schedule == "multistep":
        factor = 0.1 ** sum(t >= m for m in cfg.milestones)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * t))
    elif cfg.schedule == "onecycle":  # triangle 0 -> 1 at 40% -> 0, sampled mid-step (never exactly 0)
        t = (step + 0.5) / (cfg.epochs * steps_per_epoch)
        factor = t / 0.4 if t < 0.4 else (1 - t) / 0.6
    else:
        factor = 1.0
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return cfg.lr * factor


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in epoch `epoch` (0-based): a hash of (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EMA:
    """Exponential moving average of a model's weights (buffers such as BN statistics are copied).

    The decay warms up as min(decay, (1+n)/(10+n)) after n updates, so early epochs are not
    dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(params[name].detach(), 1 - d)
        buffers = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(buffers[name])


# ---------------------------------------------------------------- evaluation

def accuracy(model: nn.Module, split: Split, batch_size: int = 512, device: torch.device | str | None = None,
             *, attack: Attack | Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
             ) -> float:
    """Top-1 accuracy of `model` on `split` in eval mode (the caller's mode is restored); with
    `attack`, on `attack(model, x, y)` instead of x (robust accuracy)."""
    if len(split) == 0:
        raise BadInput("cannot measure accuracy on an empty split; give it at least one example")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    try:
        for x, y in iterate_batches(split, batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            if attack is not None:
                x = attack(model, x, y)
            with torch.no_grad():
                correct += (model(x).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return int(correct) / len(split)


def _validate(model: nn.Module, val: Split | None, cfg: TrainConfig, attack: Attack,
              device: torch.device) -> tuple[float | None, float | None]:
    if val is None:
        return None, None
    clean = accuracy(model, val, 512, device)
    if cfg.recipe == "standard":
        return clean, None  # a non-robust model: attacking it every epoch only costs time
    robust = accuracy(model, Split(val.x[:cfg.val_samples], val.y[:cfg.val_samples]), 256, device,
                      attack=attack)
    return clean, robust


def guard_trips(best_robust: float, robust: float, clean: float) -> bool:
    """Catastrophic overfitting: robust accuracy collapsed relative to its best so far."""
    if best_robust < GUARD_MIN_BEST:
        return False  # nothing to collapse from yet (early epochs, or a hopeless eps)
    return robust < GUARD_RATIO * best_robust or (robust < GUARD_NEAR_ZERO and clean >= GUARD_CLEAN_HIGH)


# ---------------------------------------------------------------- the core loop

def _train_epoch(fwd: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None,
                 train: Split, cfg: TrainConfig, info: DatasetInfo, eps: float, recipe_name: str,
                 epoch: int, steps_per_epoch: int, device: torch.device, progress: bool,
                 shard: tuple[int, int] | None = None) -> tuple[float, int, float]:
    """One pass over `train`; returns (mean loss, images seen, seconds). With `shard=(rank, world)`
    (data parallel), every rank draws the same permutation and trains on its slice of each batch."""
    seed = epoch_seed(cfg.seed, epoch)
    gen = torch.Generator().manual_seed(seed)  # shuffling, augmentation, attack starts (CPU: any device)
    recipe = RECIPES.get(recipe_name)
    batches = iterate_batches(train, cfg.batch_size, shuffle=True, generator=gen,  # equal batches:
                              drop_last=len(train) > cfg.batch_size)  # no 1-image BN batch, no recompiles
    if shard is not None:
        rank, world = shard
        batches = ((x[rank::world], y[rank::world]) for x, y in batches)
        seed = epoch_seed(seed, rank)  # this rank's own augmentation, attack starts and dropout
        gen = torch.Generator().manual_seed(seed)  # (the permutation keeps the generator passed above)
    model.train()
    loss_sum, seen, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    # Dropout & co. draw from torch's global RNG: seed it per epoch too, and hand the caller theirs back.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i, (x, y) in enumerate(tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}",
                                        leave=False, disable=not progress, file=sys.stderr)):
            x = augment(x.to(device, non_blocking=True), info.augmentation, gen)  # (B, C, H, W) in [0, 1]
            y = y.to(device, non_blocking=True)                                   # (B,) int64
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
            loss = recipe(fwd, x, y, cfg, eps, gen)  # fp32 scalar; attacks in eval mode, fp32
            opt.zero_grad(set_to_none=True)
            loss.backward()  # never under autocast: only the recipe's forwards run in bf16
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            loss_sum += loss.detach() * len(y)
            seen += len(y)
    return float(loss_sum) / max(seen, 1), seen, time.perf_counter() - t0


# ---------------------------------------------------------------- bookkeeping

@dataclass
class _Snapshot:
    """Weights + optimizer state of one epoch, kept to restore (guard) or return (selection)."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


@dataclass
class _Run:
    epoch: int = 0                      # epochs completed
    recipe: str = "pgd"                 # the recipe now in use (pgd after the guard fired)
    guard_tripped: bool = False
    history: list[dict] = field(default_factory=list)
    best_score: list[float] | None = None
    best: _Snapshot | None = None       # selected epoch (select_by)
    peak_robust: float = 0.0            # best val robust accuracy so far (guard)
    peak: _Snapshot | None = None       # epoch of peak_robust, only when it differs in kind from `best`


def _score(cfg: TrainConfig, epoch: int, clean: float | None, robust: float | None) -> list[float]:
    key = cfg.select_by
    if key == "val_robust" and cfg.recipe == "standard":
        key = "val_clean"  # a non-robust model's robust accuracy is ~0: ranking on it ranks noise
    if key == "val_clean" and clean is not None:
        return [clean] if robust is None else [clean, robust]
    if key == "last" or clean is None or robust is None:
        return [float(epoch)]
    return [robust, clean] if key == "val_robust" else [clean, robust]


def _guard_and_select(cfg: TrainConfig, run: _Run, row: dict[str, Any], has_val: bool, model: nn.Module,
                      opt: torch.optim.Optimizer, ema: EMA | None) -> set[str]:
    """After epoch `run.epoch`: the catastrophic-overfitting guard (fast recipes), else best-epoch
    bookkeeping. Returns the names of the snapshots that changed ("best", "peak")."""
    clean, robust = row["eval/val_clean"], row["eval/val_robust"]
    guarded = cfg.guard and run.recipe in FAST_RECIPES and has_val
    if guarded:
        row["guard/tripped"] = 0.0
        if guard_trips(run.peak_robust, robust, clean):
            snap = run.peak or run.best
            assert snap is not None  # guard_trips needs a peak >= GUARD_MIN_BEST, which was snapshotted
            logger.warning("catastrophic overfitting at epoch %d: val robust %.3f vs best %.3f (clean %.3f); "
                           "restoring epoch %d and continuing with the pgd recipe", run.epoch, robust,
                           run.peak_robust, clean, snap.epoch)
            _restore(snap, model, opt, ema, Path(f"epoch {snap.epoch} snapshot"))
            run.recipe, run.guard_tripped, row["guard/tripped"] = "pgd", True, 1.0
            return set()  # the collapsed epoch is never selected
    wrote = set()
    score = _score(cfg, run.epoch, clean, robust)
    if run.best_score is None or score > run.best_score:
        run.best_score, run.best = score, _snap(run.epoch, model, opt, ema)
        wrote.add("best")
    if guarded and robust > run.peak_robust:
        run.peak_robust = robust
        if cfg.select_by != "val_robust":  # else best *is* the peak: no second copy
            run.peak = _snap(run.epoch, model, opt, ema)
            wrote.add("peak")
    return wrote


def _snap(epoch: int, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None) -> _Snapshot:
    return _Snapshot(epoch, ckpt.pack(model, opt, ema.module if ema else None),
                     {"epoch": epoch, "optimizer": ckpt.optimizer_meta(opt),
                      "ema_updates": ema.updates if ema else 0})


def _restore(snap: _Snapshot, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None,
             path: Path) -> None:
    ckpt.unpack(snap.tensors, path, model, opt, snap.meta["optimizer"], ema.module if ema else None)
    if ema is not None:
        ema.updates = int(snap.meta.get("ema_updates", 0))


def _state(cfg: TrainConfig, run: _Run, data_id: dict[str, Any], opt: torch.optim.Optimizer,
           ema: EMA | None) -> dict[str, Any]:
    return {"epoch": run.epoch, "cfg": to_dict(cfg), "data": data_id, "recipe": run.recipe,
            "guard_tripped": run.guard_tripped, "history": run.history,
            "best": {"epoch": run.best.epoch if run.best else 0, "score": run.best_score},
            "peak": {"epoch": run.peak.epoch if run.peak else 0, "val_robust": run.peak_robust},
            "ema_updates": ema.updates if ema else 0, "optimizer": ckpt.optimizer_meta(opt),
            "rng": {"scheme": "one torch.Generator (and torch's global RNG) per epoch, seeded by "
                              "epoch_seed(seed, epoch)", "seed": cfg.seed, "next_epoch": run.epoch}}


def _save(out_dir: Path, run: _Run, state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
          ema: EMA | None, wrote: set[str]) -> None:
    """last first (it alone can resume), then best/peak if they changed, then the state.json mirror."""
    last = _snap(run.epoch, model, opt, ema)
    ckpt.write_snapshot(out_dir / "last.safetensors", last.tensors, {**state, **last.meta})
    for name in ("best", "peak"):
        snap = getattr(run, name)
        if snap is not None and name in wrote:
            ckpt.write_snapshot(out_dir / f"{name}.safetensors", snap.tensors, snap.meta)
    write_json(out_dir / "state.json", {k: v for k, v in state.items() if k != "optimizer"})


def _check_resumable(meta: dict[str, Any], cfg: TrainConfig, data_id: dict[str, Any], path: Path) -> None:
    fix = f"use a new --out or delete {path.parent}"
    old, new = dict(meta.get("cfg") or {}), to_dict(cfg)
    for k in RESUME_IGNORED:
        old.pop(k, None)
        new.pop(k, None)
    if old.get("epochs") != new["epochs"]:
        if cfg.schedule != "constant":
            raise BadInput(f"{path} was trained for {old.get('epochs')} epochs of a {cfg.schedule} schedule; "
                           f"{new['epochs']} epochs would change its learning rates: {fix}")
        if int(meta.get("epoch", 0)) > cfg.epochs:
            raise BadInput(f"{path} already ran {meta.get('epoch')} epochs, more than epochs={cfg.epochs}: "
                           f"{fix}")
        old.pop("epochs", None)
        new.pop("epochs")
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise BadInput(f"{path} is a checkpoint of a different training config ({k}: {old.get(k)!r} in the "
                       f"checkpoint, {new.get(k)!r} now): {fix}")
    if meta.get("data") != data_id:
        raise BadInput(f"{path} was trained on other data ({meta.get('data')} vs {data_id}): {fix}")


def _resume(out_dir: Path, cfg: TrainConfig, data_id: dict[str, Any], model: nn.Module,
            opt: torch.optim.Optimizer, ema: EMA | None) -> _Run | None:
    """The run stored in `out_dir`, loaded into model/opt/ema; None when there is none."""
    last, state_json = out_dir / "last.safetensors", out_dir / "state.json"
    if not last.exists() and not state_json.exists():
        return None
    if state_json.exists() and not isinstance(read_json(state_json), dict):  # read_json: BadInput if corrupt
        raise BadInput(f"{state_json} is not a training state; delete {out_dir} or use a new --out")
    if not last.exists():
        raise BadInput(f"{out_dir} has a state.json but no last.safetensors; delete {out_dir} or use a "
                       "new --out")
    tensors, meta = ckpt.read_snapshot(last)
    if "epoch" not in meta or "cfg" not in meta:
        raise BadInput(f"checkpoint {last} has no training state; delete {out_dir} or use a new --out")
    _check_resumable(meta, cfg, data_id, last)
    current = _Snapshot(int(meta["epoch"]), tensors, meta)
    _restore(current, model, opt, ema, last)
    run = _Run(epoch=int(meta["epoch"]), recipe=meta["recipe"], guard_tripped=bool(meta["guard_tripped"]),
               history=list(meta["history"]), best_score=meta["best"]["score"],
               peak_robust=float(meta["peak"]["val_robust"]))
    for name in ("best", "peak"):
        epoch = int(meta[name]["epoch"])
        if epoch == 0:
            continue
        if epoch == run.epoch:  # killed between writing last and best: last *is* that epoch
            snap = current
        else:
            path = out_dir / f"{name}.safetensors"
            t, m = ckpt.read_snapshot(path)
            if m.get("epoch") != epoch:
                raise BadInput(f"checkpoint {path} is from epoch {m.get('epoch')}, expected {epoch}: "
                               f"delete {out_dir} or use a new --out")
            snap = _Snapshot(epoch, t, m)
        setattr(run, name, snap)
    return run


# ---------------------------------------------------------------- fit

@torch.enable_grad()
def fit(model: nn.Module, train: Split, val: Split | None, cfg: TrainConfig, *, info: DatasetInfo,
        out_dir: str | Path | None = None, progress: bool = True,
        log: Callable[[dict], None] | None = None, replica: Replica | None = None) -> TrainResult:
    """Train `model` in place with `cfg.recipe`; on return it holds the selected epoch's weights
    (EMA weights when `cfg.ema`).

    With `out_dir`, writes last.safetensors, best.safetensors and state.json after every epoch, and
    continues a run found there: same cfg (device and compile may differ; epochs may grow only for a
    constant schedule), same data and architecture, else `BadInput`. A continued run ends with the
    same weights as an uninterrupted one (on CPU). `log(row)` gets each epoch's history row after
    its checkpoint is written. `replica`: this process's part of a data-parallel run (rcnas.train.ddp).
    """
    if len(train) == 0:
        raise BadInput("the training split is empty; give fit at least one example")
    if val is None and cfg.select_by != "last":
        raise BadInput(f"select_by={cfg.select_by} needs a validation split: pass val or set select_by: last")
    device = resolve_device(cfg.device)
    eps = cfg.resolve_eps(info.default_eps)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema) if cfg.ema is not None else None
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    data_id = {"dataset": info.name, "train_size": len(train), "eps": eps}
    out = Path(out_dir) if out_dir is not None else None
    resumed = _resume(out, cfg, data_id, model, opt, ema) if out is not None else None
    run = resumed or _Run(recipe=cfg.recipe)
    fwd = torch.compile(model) if cfg.compile else model
    fwd = replica.wrap(fwd) if replica is not None else fwd
    shard = (replica.rank, replica.world) if replica is not None else None
    writes = out is not None and (replica is None or replica.rank == 0)
    val_attack = make_attack(cfg.val_attack, eps, seed=cfg.seed)
    steps_per_epoch = len(train) // cfg.batch_size if len(train) > cfg.batch_size else 1
    if cfg.guard and cfg.recipe in FAST_RECIPES and val is None:
        logger.warning("catastrophic-overfitting guard is off: it needs a validation split")
    bar = tqdm(range(run.epoch, cfg.epochs), initial=run.epoch, total=cfg.epochs, desc="train",
               disable=not progress, file=sys.stderr)
    for epoch in bar:
        t0 = time.perf_counter()
        loss, images, train_s = _train_epoch(fwd, model, opt, ema, train, cfg, info, eps, run.recipe, epoch,
                                             steps_per_epoch, device, progress, shard)
        if replica is not None:
            for m in (model, ema.module) if ema else (model,):
                replica.sync(m)
        clean, robust = _validate(ema.module if ema else model, val, cfg, val_attack, device)
        if replica is not None:
            clean, robust = replica.agree([clean, robust])
        row: dict[str, Any] = {"epoch": epoch + 1, "losses/train": loss,
                               "charts/lr": opt.param_groups[0]["lr"],  # of the epoch's last step
                               "eval/val_clean": clean, "eval/val_robust": robust,
                               "time/epoch_s": time.perf_counter() - t0, "time/img_per_s": images / train_s}
        run.epoch = epoch + 1
        wrote = _guard_and_select(cfg, run, row, val is not None, model, opt, ema)
        run.history.append(row)
        if writes:
            _save(out, run, _state(cfg, run, data_id, opt, ema), model, opt, ema, wrote)
        bar.set_postfix(loss=f"{loss:.3f}", clean=_fmt(clean), robust=_fmt(robust))
        if log is not None:
            log(row)
    bar.close()
    return _finish(model, ema, run)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _finish(model: nn.Module, ema: EMA | None, run: _Run) -> TrainResult:
    """Load the selected epoch's inference weights into `model` and summarise."""
    assert run.best is not None, "every completed epoch is compared, so the first one is always selected"
    if run.best.epoch != run.epoch or ema is not None:  # the model holds the last *raw* weights
        ckpt.unpack({k: v for k, v in run.best.tensors.items() if "::" not in k}, Path("best"), model)
    chosen = run.best.epoch
    row = next((r for r in run.history if r["epoch"] == chosen), {})
    nan = float("nan")
    clean, robust = row.get("eval/val_clean"), row.get("eval/val_robust")
    return TrainResult(epochs_run=run.epoch, best_epoch=chosen, history=list(run.history),
                       val_clean=nan if clean is None else clean,
                       val_robust=nan if robust is None else robust,
                       guard_tripped=run.guard_tripped, seconds=sum(r["time/epoch_s"] for r in run.history))
