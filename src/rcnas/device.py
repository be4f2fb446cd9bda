"""Device selection. Everything runs on CPU; `auto` takes CUDA when present."""
from __future__ import annotations

import torch

from rcnas.errors import BadInput


def resolve_device(name: str | None = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return dev
