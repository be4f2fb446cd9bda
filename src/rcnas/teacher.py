"""The standard (non-robust, as in the paper) teacher of a dataset, trained once and cached."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from rcnas.data import load_dataset
from rcnas.errors import BadInput
from rcnas.models import PreActResNet, build_model
from rcnas.space.teachers import teacher_arch
from rcnas.train import TrainConfig, accuracy, fit, load_weights

DEFAULT_TEACHER_TRAINING = TrainConfig(recipe="standard", epochs=15, batch_size=64, lr=0.05,
                                       schedule="cosine", select_by="last", guard=False)


def cache_root() -> Path:
    """`$RCNAS_CACHE`, else `~/.cache/rcnas`."""
    return Path(os.environ.get("RCNAS_CACHE") or Path.home() / ".cache" / "rcnas")


def teacher_dir(dataset: str, teacher: str, cfg: TrainConfig, root: Path | None = None) -> Path:
    tag = f"{dataset}-{teacher}-e{cfg.epochs}-s{cfg.seed}".replace("/", "_").replace(":", "_")
    return (root or cache_root()) / "teachers" / tag


def get_teacher(dataset: str, teacher: str, *, data_dir: str | None = None, epochs: int | None = None,
                seed: int = 0, cache: Path | None = None, device: str = "auto",
                progress: bool = True, cached_only: str | None = None) -> PreActResNet:
    """Load the cached trained teacher, training it first if needed (resumable per epoch).

    `cached_only`: the reason a missing teacher must not be trained (say, a run that started from the
    cached one): then a missing teacher is a BadInput naming the cache path and that reason."""
    cfg = replace(DEFAULT_TEACHER_TRAINING, seed=seed, device=device,
                  epochs=epochs if epochs is not None else DEFAULT_TEACHER_TRAINING.epochs)
    if cfg.epochs < 1:
        raise BadInput(f"teacher epochs must be >= 1, got {cfg.epochs}")
    splits = load_dataset(dataset, data_dir)
    info = splits.info
    from rcnas.seeding import seed_everything
    seed_everything(seed)  # the initial weights too: the same seed gives the same teacher
    model = build_model(teacher_arch(teacher), info.num_classes, info.channels, info.mean, info.std)
    out = teacher_dir(dataset, teacher, cfg, cache)
    final = out / "teacher.safetensors"
    if cached_only and not final.is_file():
        raise BadInput(f"the {teacher} teacher is not in the cache ({final}) and {cached_only}")
    if final.is_file():
        load_weights(model, final)
        return model.eval()
    from rcnas.io import exclusive, write_json
    from rcnas.train.checkpoint import save_weights
    with exclusive(out, wait=True):  # one writer per cache entry: a second process waits, then loads it
        if final.is_file():
            load_weights(model, final)
            return model.eval()
        fit(model, splits.train, splits.val, cfg, info=info, out_dir=out, progress=progress)
        save_weights(model, final)
        write_json(out / "teacher.json", {"dataset": dataset, "teacher": teacher, "epochs": cfg.epochs,
                                          "seed": seed, "val_acc": accuracy(model, splits.val),
                                          "test_acc": accuracy(model, splits.test)})
    return model.eval()
