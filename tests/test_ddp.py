"""Data-parallel training (rcnas.train.ddp): 2 CPU processes with gloo under torchrun, and the
sharding contract of fit's replica hook (in-process, no process group)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from rcnas.artifacts import load_model_dir
from rcnas.data import DatasetInfo, Split, load_dataset
from rcnas.train import TrainConfig, accuracy, fit
from rcnas.train.ddp import main, state_digest


def test_torchrun_two_cpu_processes_train_one_model(tmp_path) -> None:
    arch = tmp_path / "arch.yaml"
    arch.write_text("depths: [1, 1, 1]\nwidths: [0.5, 0.5, 0.5]\n")
    out = tmp_path / "model"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rcnas.train.ddp", "--arch", str(arch), "--dataset", "digits", "--out", str(out),
           "--recipe", "pgd", "--attack-steps", "2", "--epochs", "2", "--batch-size", "64",
           "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 reports (and writes)
    summary = lines[0]
    assert summary["world_size"] == 2 and summary["backend"] == "gloo" and summary["batch_per_process"] == 32
    digests = summary["digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["replicas_agreed"]  # same final weights
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "ddp.json", "history.json", "model.json",
                                                     "model.safetensors"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.safetensors", "last.safetensors",
                                                                      "state.json"]
    model, meta = load_model_dir(out)
    assert state_digest(model) == digests[0]  # what rank 0 saved is what every rank holds
    assert meta["training"]["ddp"]["world_size"] == 2
    assert len(json.loads((out / "history.json").read_text())) == 2
    val = load_dataset("digits").val
    assert accuracy(model, val) > 0.3  # it learns: chance is 0.1
    assert summary["val_clean"] == pytest.approx(accuracy(model, val))


def test_not_under_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    arch = tmp_path / "arch.yaml"
    arch.write_text("depths: [1, 1, 1]\nwidths: [0.5, 0.5, 0.5]\n")
    assert main(["--arch", str(arch), "--out", str(tmp_path / "m"), "--device", "cpu"]) == 2
    assert "torchrun" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


class _Recorder(nn.Module):
    """Logs the index (encoded in pixel 0) of every training example it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append((x[:, 0, 0, 0] * 1000).round().long().tolist())
        return self.fc(x.flatten(1))


class _FakeReplica:
    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world, self.synced, self.agreed = rank, world, 0, 0

    def wrap(self, fwd: nn.Module) -> nn.Module:
        return fwd

    def sync(self, module: nn.Module) -> None:
        self.synced += 1

    def agree(self, values):
        self.agreed += 1
        return values


def test_each_rank_trains_on_a_disjoint_slice_of_every_batch(tmp_path) -> None:
    n = 50
    x = (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    train = Split(x, torch.arange(n) % 2)
    info = DatasetInfo("ids", 2, 1, 2, (0.0,), (1.0,), 0.1, "none")
    cfg = TrainConfig(recipe="standard", epochs=2, batch_size=8, select_by="last", device="cpu")
    single = _Recorder()
    fit(single, train, None, cfg, info=info, progress=False)
    ranks = []
    for rank in range(2):
        model, replica = _Recorder(), _FakeReplica(rank, 2)
        fit(model, train, None, cfg, info=info, progress=False, out_dir=tmp_path / f"ckpt{rank}",
            replica=replica)
        assert replica.synced == replica.agreed == 2  # once per epoch
        ranks.append(model.seen)
    assert (tmp_path / "ckpt0" / "last.safetensors").exists()  # only rank 0 writes checkpoints
    assert not (tmp_path / "ckpt1").exists() or not any((tmp_path / "ckpt1").iterdir())
    assert len(ranks[0]) == len(ranks[1]) == len(single.seen) == 2 * (n // 8)  # same steps on every rank
    for a, b, whole in zip(ranks[0], ranks[1], single.seen):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert sorted(a + b) == sorted(whole)  # together: exactly the single-process batch
    first_epoch = [i for batch in ranks[0][:n // 8] + ranks[1][:n // 8] for i in batch]
    assert len(set(first_epoch)) == len(first_epoch) == 8 * (n // 8)  # an epoch sees each example once
