"""Suite-wide settings: one torch thread (tiny models on 2 shared cores run many times faster with
one thread than with two fighting over the cores), and a private rcnas cache per test session."""
from __future__ import annotations

import os

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rcnas.testing.tiny import digits_split, train_cnn


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("RCNAS_CACHE")
    os.environ["RCNAS_CACHE"] = str(tmp_path_factory.mktemp("rcnas-cache"))
    yield
    if old is None:
        os.environ.pop("RCNAS_CACHE", None)
    else:
        os.environ["RCNAS_CACHE"] = old


@pytest.fixture(scope="session")
def data() -> SimpleNamespace:
    """Real digits as tensors (1,297 train / 500 test), shared by the attack and evaluation tests."""
    return digits_split()


@pytest.fixture(scope="session")
def model(data) -> nn.Module:
    """A tiny CNN trained on `data` (~98% clean test accuracy); tests must not modify it."""
    return train_cnn(data)
