"""Model directories that describe themselves: weights (safetensors) + model.json (architecture,
data shape, normalisation, training config, rcnas version). `rcnas eval` reads nothing else."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rcnas import __version__
from rcnas.errors import BadInput
from rcnas.io import read_json, write_json
from rcnas.models import PreActResNet, build_model
from rcnas.space.arch import Arch

MODEL_FORMAT = 1


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
    meta = read_json(directory / "model.json")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT or "arch" not in meta:
        raise BadInput(f"{directory}/model.json is not an rcnas model description of format {MODEL_FORMAT}")
    model = build_model(Arch.from_dict(meta["arch"]), meta["num_classes"], meta["in_channels"],
                        meta["mean"], meta["std"])
    load_weights(model, directory / "model.safetensors")
    return model.eval(), meta
