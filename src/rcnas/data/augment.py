"""Batch-wise training augmentation in plain torch, driven by an explicit generator.

Random draws come from `generator` (a CPU generator; they are moved to the batch's device), so a
seeded run augments identically on CPU and GPU and can be resumed mid-training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rcnas.errors import BadInput

AUGMENTATIONS = ("crop-flip", "shift", "none")
CROP_PAD = 4


def _shifted(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image of `x` zero-padded by `pad` and cropped back at offset (dy, dx) in 0..2*pad."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.to(x.device)[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx.to(x.device)[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A randomly augmented copy of the batch `x` (N×C×H×W); same shape, values stay in range.

    "crop-flip": zero-pad 4, random crop back to H×W, horizontal flip with p=1/2 (natural images).
    "shift": random shift of up to max(1, H//8) pixels each way, zero fill, no flip (digits: a
    mirrored 3 is not a 3). "none": `x` itself.
    """
    if kind not in AUGMENTATIONS:
        raise BadInput(f"unknown augmentation {kind!r}; use one of: {', '.join(AUGMENTATIONS)}")
    if kind == "none" or len(x) == 0:
        return x
    if x.dim() != 4:
        raise ValueError(f"augment needs an N×C×H×W batch, got shape {tuple(x.shape)}")
    n, h = len(x), x.shape[-2]
    pad = CROP_PAD if kind == "crop-flip" else max(1, h // 8)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    out = _shifted(x, pad, dy, dx)
    if kind == "crop-flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
