"""Suite-wide settings: one torch thread (tiny models on 2 shared cores run many times faster with
one thread than with two fighting over the cores), and a private rcnas cache per test session."""
from __future__ import annotations

import os

import pytest
import torch


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
