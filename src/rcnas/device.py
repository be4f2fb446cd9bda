"""Device selection. Everything runs on CPU; `auto` takes CUDA when present."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rcnas.errors import BadInput


def check_device_name(name: str) -> None:
    """Refuse, before any work, a device rcnas does not run on (mps, xpu, meta, ...) or a typo."""
    kind, _, index = name.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise BadInput(f"unknown device {name[:40]!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, str):  # a torch.device is already a valid name
        check_device_name(name)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return dev


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op CPU threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
