"""Training checkpoints: one safetensors file per snapshot, written atomically.

A snapshot file holds everything needed to continue training exactly, so a killed run never leaves
weights and bookkeeping out of step:

    <name>                inference weights (the EMA weights when EMA is on, else the raw weights)
    train::<name>         raw training weights (only when EMA is on)
    optim::<i>::<key>     optimizer state tensors (e.g. SGD momentum buffers) of parameter i
    metadata["rcnas.train"]  JSON: epoch, best metrics, history, cfg, optimizer param groups, ...

`load_weights(model, path)` reads the inference weights of any such file (`last.safetensors`,
`best.safetensors`). `state.json` next to them is a human-readable mirror of the metadata.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rcnas.errors import BadInput
from rcnas.io import atomic_write

META_KEY = "rcnas.train"
FORMAT = "rcnas-train-1"
TRAIN_PREFIX = "train::"
OPTIM_PREFIX = "optim::"


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # contiguous: safetensors stores dense row-major data (channels_last params are copied);
    # clone: tied/shared parameters would otherwise share storage, which safetensors refuses.
    return t.detach().to("cpu", copy=True).contiguous()


def pack(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         ema_model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Model (+ EMA) weights and optimizer tensors as one flat dict of CPU tensors."""
    if ema_model is None:
        tensors = {k: _cpu(v) for k, v in model.state_dict().items()}
    else:
        tensors = {k: _cpu(v) for k, v in ema_model.state_dict().items()}
        tensors.update({TRAIN_PREFIX + k: _cpu(v) for k, v in model.state_dict().items()})
    if optimizer is not None:
        for idx, st in optimizer.state_dict()["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{OPTIM_PREFIX}{idx}::{key}"] = _cpu(value)
    return tensors


def optimizer_meta(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The JSON part of the optimizer state: param groups and non-tensor per-parameter values."""
    sd = optimizer.state_dict()
    scalars = {f"{idx}::{k}": v for idx, st in sd["state"].items() for k, v in st.items()
               if not torch.is_tensor(v)}
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack(tensors: dict[str, torch.Tensor], path: Path, model: nn.Module,
           optimizer: torch.optim.Optimizer | None = None, optim_meta: dict[str, Any] | None = None,
           ema_model: nn.Module | None = None) -> None:
    """Load a `pack`ed dict back into model / optimizer / EMA model (in place)."""
    plain = {k: v for k, v in tensors.items() if "::" not in k}
    if ema_model is None:
        _load_state(model, plain, path)
    else:
        raw = {k[len(TRAIN_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}
        _load_state(model, raw, path)
        _load_state(ema_model, plain, path)
    if optimizer is not None and optim_meta is not None:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(OPTIM_PREFIX):
                idx, name = key[len(OPTIM_PREFIX):].split("::", 1)
                state.setdefault(int(idx), {})[name] = value
        for key, value in optim_meta.get("scalars", {}).items():
            idx, name = key.split("::", 1)
            state.setdefault(int(idx), {})[name] = value
        try:
            optimizer.load_state_dict({"state": state, "param_groups": optim_meta["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as e:
            raise BadInput(f"{path}: optimizer state does not match this model ({e}); "
                           "use a new --out or delete the directory") from None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"shape mismatch for {bad_shape[:3]}")
        raise BadInput(f"{path} does not match this model ({what}); load it into the architecture it was "
                       "saved from")
    model.load_state_dict(state)


def write_snapshot(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write `tensors` with `meta` (JSON-able) in the safetensors header."""
    header = {"format": FORMAT, META_KEY: json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_snapshot(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on CPU) and metadata of a snapshot; a missing or damaged file is a `BadInput` naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
        meta = json.loads(header[META_KEY]) if META_KEY in header else {}
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise BadInput(f"checkpoint {path} is corrupt or not a safetensors file ({type(e).__name__}); "
                       "delete it (or its directory) and train again") from None
    return tensors, meta


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the inference weights of a safetensors file (a training snapshot or a plain state dict)
    into `model` in place; returns `model`. Mismatched architectures are a `BadInput`."""
    tensors, _ = read_snapshot(path)
    plain = {k: v for k, v in tensors.items() if "::" not in k}
    _load_state(model, plain, Path(path))
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write `model`'s state dict as a plain safetensors file (atomic)."""
    return write_snapshot(path, pack(model), {})


def weights_digest(model: nn.Module, h: Any = None) -> str:
    """sha256 of the model's state (names and bytes, in state_dict order): equal weights, equal digest.
    `h`, a hashlib object, is updated instead of a new one (to hash the weights with other data)."""
    h = h if h is not None else hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
