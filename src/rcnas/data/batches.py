"""Mini-batches over a `Split` without DataLoader workers: the data already sits in memory."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from rcnas.data.base import Split


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches covering each example once per pass; shuffled with `generator` if asked.

    Shuffling needs an explicit generator so that epochs are reproducible (no global RNG).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle and generator is None:
        raise ValueError("iterate_batches(shuffle=True) needs a seeded torch.Generator")
    n = len(split)
    stop = n - n % batch_size if drop_last else n
    if shuffle:
        order = torch.randperm(n, generator=generator).to(split.x.device)
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            yield split.x[idx], split.y[idx]
    else:
        for i in range(0, stop, batch_size):
            yield split.x[i:i + batch_size], split.y[i:i + batch_size]
