"""What the CUDA path uses, checked on CPU: device resolution, bf16 autocast + channels_last training
(a PreActResNet learns, its attacks stay fp32), and the same run on CUDA where a GPU is present
(skipped otherwise)."""
from __future__ import annotations

import pytest
import torch

from rcnas.data import load_dataset
from rcnas.device import resolve_device
from rcnas.errors import BadInput
from rcnas.evaluate import evaluate_robustness
from rcnas.models import build_model
from rcnas.space.arch import Arch
from rcnas.train import TrainConfig, accuracy, fit

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(info, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(Arch((1, 1, 1), (8, 16, 32)), info.num_classes, info.channels, info.mean, info.std)


class DtypeProbe:
    """Records, for every forward of the model's classifier: (training mode, logits dtype)."""

    def __init__(self, model) -> None:
        self.rows: list[tuple[bool, torch.dtype]] = []
        self.handle = model.fc.register_forward_hook(
            lambda m, i, out: self.rows.append((m.training, out.dtype)))

    def close(self) -> None:
        self.handle.remove()

    def dtypes(self, training: bool) -> set[torch.dtype]:
        return {d for t, d in self.rows if t == training}


def test_auto_device_is_cuda_only_when_present() -> None:
    expected = torch.device("cuda" if CUDA else "cpu")
    assert resolve_device("auto") == expected and resolve_device(None) == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="CUDA is present")
def test_cuda_without_a_gpu_is_bad_input(digits) -> None:
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(BadInput, match="--device cpu"):
            resolve_device(name)
    with pytest.raises(BadInput, match="CUDA is not available"):  # fit fails before touching anything
        fit(tiny(digits.info), digits.train, digits.val, TrainConfig(device="cuda"), info=digits.info,
            progress=False)
    from rcnas.train.ddp import rank_device
    with pytest.raises(BadInput, match="CUDA is not available"):
        rank_device("cuda")
    assert rank_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_channels_last_training_learns_and_attacks_run_in_fp32(digits, device: str) -> None:
    model = tiny(digits.info)
    probe = DtypeProbe(model)
    cfg = TrainConfig(recipe="pgd", epochs=3, attack_steps=2, batch_size=32, lr=0.1, val_samples=128,
                      bf16=True, channels_last=True, device=device)
    try:
        res = fit(model, digits.train, digits.val, cfg, info=digits.info, progress=False)
        assert probe.dtypes(training=True) == {torch.bfloat16}  # the training forward: bf16 autocast
        assert probe.dtypes(training=False) == {torch.float32}  # attack crafting and validation: fp32
        probe.rows.clear()
        x, y = digits.val.x[:128], digits.val.y[:128]
        result = evaluate_robustness(model, x, y, attacks=("clean", "pgd5", "cw5"),
                                     eps=digits.info.default_eps, device=device)
        assert probe.dtypes(training=False) == {torch.float32} and not probe.dtypes(training=True)
    finally:
        probe.close()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert next(model.parameters()).device.type == device
    assert res.val_clean > 0.3 and accuracy(model, digits.test) > 0.3  # chance is 0.1
    assert 0.0 <= result.attacks["pgd5"] <= result.clean


@needs_cuda
def test_cuda_compiled_bf16_channels_last_fit_learns_and_attacks_run_in_fp32(digits) -> None:
    model = tiny(digits.info)
    cfg = TrainConfig(recipe="pgd", epochs=3, attack_steps=2, batch_size=32, lr=0.1, val_samples=128,
                      bf16=True, channels_last=True, compile=True, device="cuda")
    res = fit(model, digits.train, digits.val, cfg, info=digits.info, progress=False)
    assert next(model.parameters()).is_cuda and res.val_clean > 0.3
    probe = DtypeProbe(model)  # after fit: the compiled graph is not traced through the hook
    try:
        result = evaluate_robustness(model, digits.val.x[:128], digits.val.y[:128], attacks=("clean", "pgd5"),
                                     eps=digits.info.default_eps, device="cuda")
        assert probe.dtypes(training=False) == {torch.float32}
    finally:
        probe.close()
    assert 0.0 <= result.attacks["pgd5"] <= result.clean


@needs_cuda
def test_the_final_evaluation_with_autoattack_runs_on_cuda(digits) -> None:
    """The comparison's evaluation (clean, PGD-20, CW-40, AutoAttack with the per-sample worst case) on
    CUDA (on CPU it is tests/test_evaluate.py's)."""
    device = "cuda"
    model = tiny(digits.info)
    fit(model, digits.train, digits.val, TrainConfig(recipe="pgd", epochs=2, attack_steps=2, batch_size=32,
                                                     lr=0.1, val_samples=64, device=device),
        info=digits.info, progress=False)
    result = evaluate_robustness(model, digits.test.x[:64], digits.test.y[:64], eps=digits.info.default_eps,
                                 device=device)
    assert set(result.attacks) >= {"pgd20", "cw40", "aa"} and result.clean > 0.3
    assert result.attacks["aa"] <= result.attacks["pgd20"] <= result.clean
    assert result.worst_case <= min(result.attacks.values())
