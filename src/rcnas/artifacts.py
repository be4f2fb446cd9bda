"""Model directories that describe themselves: weights (safetensors) + model.json (architecture,
data shape, normalisation, training config, rcnas version). `rcnas eval` reads nothing else."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcnas import __version__
from rcnas.errors import BadInput, show
from rcnas.io import read_json, write_json
from rcnas.models import PreActResNet, build_model
from rcnas.space.arch import Arch

MODEL_FORMAT = 1


@dataclass(frozen=True)
class ModelMeta:
    """model.json, checked field by field: a file on disk is data, not trusted structure."""
    format: int
    arch: dict[str, Any]
    num_classes: int
    in_channels: int
    mean: list[float]
    std: list[float]
    rcnas_version: str = ""
    dataset: str = ""
    input_size: int | None = None  # the images it was trained on (older model dirs lack it)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format != MODEL_FORMAT:
            raise BadInput(f"format {show(self.format)} is not {MODEL_FORMAT}, the one this rcnas reads")
        if not 2 <= self.num_classes <= 100_000:
            raise BadInput(f"num_classes must be in 2..100000, got {self.num_classes}")
        if not 1 <= self.in_channels <= 64:
            raise BadInput(f"in_channels must be in 1..64, got {self.in_channels}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.in_channels or not all(math.isfinite(v) for v in values):
                raise BadInput(f"{name} must be {self.in_channels} finite numbers (one per channel), got {show(values)}")
        if min(self.std) <= 0:
            raise BadInput(f"std must be > 0, got {show(self.std)}")


def save_model_dir(model: PreActResNet, directory: str | Path, **meta: Any) -> Path:
    from rcnas.train import save_weights
    directory = Path(directory)
    save_weights(model, directory / "model.safetensors")
    write_json(directory / "model.json", {
        "format": MODEL_FORMAT, "rcnas_version": __version__, "arch": model.arch.to_dict(),
        "num_classes": model.num_classes, "in_channels": model.in_channels,
        "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(), **meta})
    return directory


def load_model_dir(directory: str | Path) -> tuple[PreActResNet, dict[str, Any]]:
    from rcnas.train import load_weights
    directory = Path(directory)
    if not (directory / "model.json").is_file():
        raise BadInput(f"{directory} is not an rcnas model directory (no model.json); "
                       "pass the --out directory of rcnas train")
    from rcnas.config import from_dict
    meta = read_json(directory / "model.json")
    where = f"{directory / 'model.json'}"
    typed = from_dict(ModelMeta, meta, where=where)
    try:
        arch = Arch.from_dict(typed.arch)
    except BadInput as e:
        raise BadInput(f"{where}: arch: {e}") from None
    model = build_model(arch, typed.num_classes, typed.in_channels, typed.mean, typed.std)
    load_weights(model, directory / "model.safetensors")
    return model.eval(), meta
