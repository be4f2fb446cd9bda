"""A tiny CNN trained in about a second on real digits, for tests and examples of the attacks."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def digits_split() -> SimpleNamespace:
    """scikit-learn's digits in [0, 1] as (N, 1, 8, 8): 1,297 train and 500 test images, fixed split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return SimpleNamespace(xtr=x[:1297], ytr=y[:1297], xte=x[1297:], yte=y[1297:])


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 10))


def train_cnn(data: SimpleNamespace, epochs: int = 8) -> nn.Module:
    """Standard (non-robust) training with Adam; deterministic; leaves the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(data.xtr), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(data.xtr[idx]), data.ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()
