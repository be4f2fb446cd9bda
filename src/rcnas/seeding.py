"""One place that seeds every random number generator."""
from __future__ import annotations

import random

import numpy as np
import torch

from rcnas.errors import BadInput, show

MAX_SEED = 2**31 - 1  # every seed is used as a numpy/torch seed and offset per episode, worker and trial


def check_seed(seed: object, what: str = "seed") -> None:
    """One bound for every seed a user gives (a flag, a run config, meta-training)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInput(f"{what} must be in 0..{MAX_SEED}, got {show(seed)}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch CPU generator seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
