"""The closed-form cost equals torchprofile's count and the built module's parameter count."""
from __future__ import annotations

import random
import warnings

import pytest
import torch

from rcnas.cost import arch_cost, format_macs, parse_macs
from rcnas.errors import BadInput
from rcnas.models import build_model, count_params, teacher_arch
from rcnas.space.arch import Arch

profile_macs = pytest.importorskip("torchprofile").profile_macs


def _profile(arch: Arch, size: int, cin: int, classes: int) -> tuple[int, int]:
    model = build_model(arch, classes, cin).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs = profile_macs(model, torch.rand(1, cin, size, size))
    return macs, count_params(model)


def _random_arch(rng: random.Random) -> Arch:
    blocks = tuple(rng.choice(["basic", "robust"]) for _ in range(3))
    channels = tuple(rng.choice([16, 20, 24, 32, 40, 64]) if b == "robust" else rng.randint(1, 48)
                     for b in blocks)
    return Arch(tuple(rng.randint(1, 3) for _ in range(3)), channels, blocks)


@pytest.mark.parametrize("seed", range(24))
def test_random_archs_match_torchprofile(seed: int) -> None:
    rng = random.Random(seed)
    arch = _random_arch(rng)
    size, cin, classes = rng.choice([8, 9, 28, 32]), rng.choice([1, 3]), rng.choice([10, 100, 200])
    macs, params = _profile(arch, size, cin, classes)
    cost = arch_cost(arch, size, cin, classes)
    assert (cost.macs, cost.params) == (macs, params), arch


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wrn-28-10", "wrn-34-12", "wrn-46-14", "wrn-70-16"])
def test_named_teachers_match_torchprofile_at_32(name: str) -> None:
    arch = teacher_arch(name)
    macs, params = _profile(arch, 32, 3, 10)
    assert arch_cost(arch, 32, 3, 10) == type(arch_cost(arch))(macs, params)


def test_teacher_sizes_are_the_papers() -> None:
    # the paper's budgets: about 5, 10, 20, 40 GMACs at 32x32
    gmacs = [arch_cost(teacher_arch(n)).macs / 1e9 for n in ["wrn-28-10", "wrn-34-12", "wrn-46-14", "wrn-70-16"]]
    assert [round(g) for g in gmacs] == [5, 10, 19, 39]


@pytest.mark.parametrize("text,expected", [("5G", 5_000_000_000), ("300M", 300_000_000), ("12k", 12_000),
                                           ("123456", 123456), (7e6, 7_000_000)])
def test_parse_macs(text, expected) -> None:
    assert parse_macs(text) == expected


def test_parse_macs_relative_and_bad() -> None:
    assert parse_macs("0.5x", teacher_macs=1000) == 500
    for bad in ["abc", "-5G", "0", "nan", "0.5x"]:
        with pytest.raises(BadInput):
            parse_macs(bad)
    assert format_macs(13_400_000) == "13.4M"


def test_the_first_commands_answer_without_loading_torch(tmp_path) -> None:
    """`rcnas --help` and `rcnas cost` are what a newcomer types first: they must not pay torch's import
    (seconds; tens of seconds on a busy laptop). A search's arch.yaml is read the same way."""
    import subprocess
    import sys
    arch = tmp_path / "arch.yaml"
    arch.write_text("depths: [1, 1, 1]\nwidths: [1, 1, 1]\nblocks: [basic, basic, basic]\n"
                    "searched_for: {dataset: digits, input_size: 8, channels: 1, num_classes: 10}\n")
    code = ("import sys, contextlib, io\n"
            "from rcnas.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['cost', '--teacher', 'wrn-28-2']) == 0\n"
            f"    assert main(['cost', '--arch', {str(arch)!r}]) == 0\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'matplotlib')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
