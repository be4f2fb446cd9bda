"""Data-parallel final training with PyTorch DistributedDataParallel (DDP), one process per GPU.

    torchrun --standalone --nproc_per_node=8 -m rcnas.train.ddp --arch runs/s1/arch.yaml \\
        --dataset cifar10 --out runs/s1/model --recipe trades --epochs 100

There is one training loop, `rcnas.train.fit`; this module only gives it a `Replica` (its
`replica=` hook) that makes it data parallel:

* every rank draws the epoch's permutation from the same seed and trains on slice `rank` of every
  batch (`x[rank::world]`), so the ranks' shards are disjoint and together are exactly the batches
  a single process would see. `batch_size` is the global batch: the learning-rate schedule and the
  number of steps per epoch do not depend on the number of GPUs. Each rank draws its own
  augmentation and attack starts (seeded by the epoch seed and its rank).
* the training forward runs through DDP (gradients averaged across ranks); adversarial examples
  are crafted (in eval mode) on the rank's own module, without collectives.
* after each epoch's training, BatchNorm running statistics are averaged across ranks, and every
  rank takes rank 0's validation metrics, so all ranks select the same epoch and end with the same
  weights (checked: `DistributedResult.digests`).
* only rank 0 writes checkpoints and the model directory. Every rank reads the checkpoint to
  resume, so `--out` must be on a filesystem all ranks see (any single machine is fine).

Backend: nccl on CUDA (rank r uses cuda:LOCAL_RANK), gloo on CPU (`--device cpu`, for tests).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from rcnas.data import DatasetInfo, Split
from rcnas.errors import BadInput, RunFailure
from rcnas.train.config import TrainConfig
from rcnas.train.loop import TrainResult, fit

logger = logging.getLogger("rcnas.train.ddp")

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------- process group and device

def rank_device(device: str = "auto") -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when CUDA is asked for (or `auto` finds it), else cpu."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise BadInput(f"data-parallel training runs on cuda or cpu, not {device!r}")
    if dev.index is not None and dev.index != local_rank:
        raise BadInput(f"under torchrun every rank uses cuda:LOCAL_RANK; pass --device cuda (not {device}) "
                       "and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        raise BadInput("--device cuda asked for but CUDA is not available; use --device cpu (gloo)")
    if local_rank >= torch.cuda.device_count():
        raise BadInput(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
                       "start at most that many processes per node (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    returns (rank, world size, this rank's device). A group already initialised is kept."""
    dev = rank_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        missing = [k for k in TORCHRUN_ENV if k not in os.environ]
        if missing:
            raise BadInput(f"not started by torchrun ({missing[0]} is not set): run "
                           "torchrun --nproc_per_node=N -m rcnas.train.ddp ...")
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return dist.get_rank(), dist.get_world_size(), dev


# ---------------------------------------------------------------- the replica hook of fit

_DDP_ARGS = frozenset(inspect.signature(DistributedDataParallel.__init__).parameters)


class _ReplicaDDP(DistributedDataParallel):
    """DDP for training forwards; in eval mode (attack crafting inside a training step, evaluation)
    the replica's own module runs: no gradient-sync bookkeeping, no collectives."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


@dataclass
class DDPReplica:
    """This process's part of a data-parallel `fit` (implements `rcnas.train.loop.Replica`)."""
    rank: int
    world: int
    device: torch.device

    def wrap(self, fwd: nn.Module) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are synced at construction but not before every forward: BatchNorm statistics are
        # averaged once per epoch instead (sync). torch 2.13 renamed broadcast_buffers to
        # forward_sync_buffers.
        no_fwd_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS
                       else {"broadcast_buffers": False})
        return _ReplicaDDP(fwd, device_ids=ids, output_device=ids[0] if ids else None, **no_fwd_sync)

    def sync(self, module: nn.Module) -> None:
        """BatchNorm running statistics: the mean over ranks; every other buffer: rank 0's."""
        averaged: set[int] = set()
        for m in module.modules():
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None:
                for t in (m.running_mean, m.running_var):
                    dist.all_reduce(t, op=dist.ReduceOp.SUM)
                    t.div_(self.world)
                    averaged.add(id(t))
        for b in module.buffers():
            if id(b) not in averaged:
                dist.broadcast(b, src=0)

    def agree(self, values: list[float | None]) -> list[float | None]:
        """Rank 0's values on every rank (None travels as nan)."""
        t = torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64,
                         device=self.device)
        dist.broadcast(t, src=0)
        return [None if v != v else v for v in t.tolist()]  # noqa: PLR0124 - nan check


@dataclass(frozen=True)
class DistributedResult:
    train: TrainResult
    """fit's result (identical on every rank)"""
    rank: int
    world: int
    digests: tuple[str, ...]
    """sha256 of every rank's final state dict, by rank, taken before any repair"""

    @property
    def agreed(self) -> bool:
        return len(set(self.digests)) == 1


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checkpoint_epoch(out_dir: Path) -> int:
    state = out_dir / "state.json"
    if not state.is_file():
        return -1 if (out_dir / "last.safetensors").exists() else 0
    try:
        return int(json.loads(state.read_text()).get("epoch", -1))
    except (OSError, ValueError, AttributeError):
        return -1


def fit_distributed(model: nn.Module, train: Split, val: Split | None, cfg: TrainConfig, *,
                    info: DatasetInfo, out_dir: str | Path | None = None, progress: bool = True,
                    log=None) -> DistributedResult:
    """`fit` on this rank's shard, under torch.distributed (joined from torchrun's environment if
    not yet). Every rank returns the same weights in `model`; only rank 0 writes `out_dir`."""
    if "replica" not in inspect.signature(fit).parameters:
        raise RunFailure("this rcnas's train.fit has no replica= hook; data-parallel training needs it")
    rank, world, device = init_distributed(cfg.device)
    cfg = replace(cfg, device=str(device))
    if cfg.batch_size % world:
        raise BadInput(f"batch_size {cfg.batch_size} (the global batch) must be a multiple of the "
                       f"{world} processes")
    if len(train) < world:
        raise BadInput(f"{len(train)} training examples cannot be shared by {world} processes")
    if out_dir is not None:
        seen = [None] * world
        dist.all_gather_object(seen, _checkpoint_epoch(Path(out_dir)))
        if len(set(seen)) != 1:
            raise BadInput(f"the ranks see different checkpoints in {out_dir} (epochs {seen}): put --out on "
                           "a filesystem every node shares")
    replica = DDPReplica(rank, world, device)
    result = fit(model, train, val, cfg, info=info, out_dir=out_dir, progress=progress and rank == 0,
                 log=log, replica=replica)
    digests = [None] * world
    dist.all_gather_object(digests, state_digest(model))
    if len(set(digests)) != 1:  # should not happen: say so, and make every rank hold what rank 0 saves
        logger.warning("data-parallel replicas ended with different weights (%s); using rank 0's",
                       ", ".join(d[:8] for d in digests))
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    return DistributedResult(result, rank, world, tuple(digests))


# ---------------------------------------------------------------- entry point (torchrun)

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m rcnas.train.ddp",
        description="Final adversarial training of an architecture on several GPUs (DDP); resumable: "
                    "rerun the same command to continue. Writes the same model dir as `rcnas train`.")
    p.add_argument("--arch", required=True, help="architecture YAML (e.g. the arch.yaml of rcnas search)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--out", required=True, help="model dir (checkpoints in OUT/checkpoints)")
    p.add_argument("--recipe", default="trades", help="trades (default), pgd, fgsm-rs, n-fgsm, standard")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, help="global batch, split over the processes (default 128)")
    p.add_argument("--lr", type=float)
    p.add_argument("--attack-steps", type=int)
    p.add_argument("--eps", type=float)
    p.add_argument("--ema", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, help="train on a stratified subset")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of the training forward pass")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK when present), cuda or cpu")
    p.add_argument("--backend", help="default: nccl on cuda, gloo on cpu")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (torch.use_deterministic_algorithms, "
                        "CUBLAS_WORKSPACE_CONFIG=:4096:8): repeatable GPU runs, at a speed cost")
    p.add_argument("--data-dir", help="where local datasets live (else $RCNAS_DATA)")
    p.add_argument("--json", action="store_true", help="rank 0 prints one JSON object on stdout")
    return p


def _run(args: argparse.Namespace) -> None:
    from rcnas.artifacts import save_model_dir
    from rcnas.config import to_dict
    from rcnas.data import load_dataset
    from rcnas.io import read_yaml, write_json
    from rcnas.models import build_model
    from rcnas.seeding import seed_everything
    from rcnas.space.arch import Arch
    if args.deterministic:  # before any CUDA work: cuBLAS reads its workspace setting once
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    rank, world, device = init_distributed(args.device, args.backend)
    arch = Arch.from_dict(read_yaml(args.arch))
    splits = load_dataset(args.dataset, args.data_dir)
    info = splits.info
    given = {"batch_size": args.batch_size, "lr": args.lr, "attack_steps": args.attack_steps, "eps": args.eps,
             "ema": args.ema}
    cfg = TrainConfig(recipe=args.recipe, epochs=args.epochs, seed=args.seed, device=str(device),
                      bf16=args.bf16, channels_last=args.channels_last, compile=args.compile,
                      **{k: v for k, v in given.items() if v is not None})
    seed_everything(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(arch, info.num_classes, info.channels, info.mean, info.std)
    train = splits.train if args.train_samples is None else splits.train.subset(args.train_samples,
                                                                                 seed=args.seed)
    out = Path(args.out)
    res = fit_distributed(model, train, splits.val, cfg, info=info, out_dir=out / "checkpoints",
                          progress=not args.json)
    r = res.train
    if rank == 0:
        ddp = {"world_size": world, "backend": dist.get_backend(),
               "batch_per_process": cfg.batch_size // world, "replicas_agreed": res.agreed,
               "digests": list(res.digests), "deterministic": args.deterministic}
        summary = {"best_epoch": r.best_epoch, "val_clean": r.val_clean, "val_robust": r.val_robust,
                   "guard_tripped": r.guard_tripped}
        save_model_dir(model.cpu(), out, dataset=args.dataset, input_size=info.input_size, training=to_dict(cfg) | summary | {
            "seconds": r.seconds, "train_samples": len(train), "ddp": ddp})
        write_json(out / "history.json", r.history)
        write_json(out / "ddp.json", ddp)
        obj = {"out": str(out), **summary, **ddp}
        print(json.dumps(obj) if args.json else
              f"trained {arch} on {world} processes -> wrote {out} (best epoch {r.best_epoch}: "
              f"val clean {r.val_clean:.4f}, val robust {r.val_robust:.4f})", flush=True)
    dist.barrier()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    rank = os.environ.get("RANK", "?")
    try:
        _run(args)
    except BadInput as e:
        print(f"rcnas: error (rank {rank}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rcnas: interrupted (rank {rank}); rerun the same command to resume", file=sys.stderr)
        return 130
    except RunFailure as e:
        print(f"rcnas: failed (rank {rank}): {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
