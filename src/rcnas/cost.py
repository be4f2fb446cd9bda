"""Exact closed-form MACs and parameter counts of an `Arch`.

MACs are counted exactly as torchprofile's `profile_macs` counts them on one image (the lineage's
counter, whose "FLOPs" budgets are MACs): convolutions (out numel x in/groups x k x k), linear
layers, affine batch-norms (out numel), average pools and means (out numel) and elementwise
multiplications (the SE gate, out numel); additions, ReLU, sigmoid, concatenation and the
input normalisation count zero. `tests/test_cost.py` checks equality with torchprofile.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rcnas.errors import BadInput
from rcnas.space.arch import (ROBUST_BASE_WIDTH, ROBUST_CARDINALITY, ROBUST_EXPANSION, ROBUST_SCALES,
                              ROBUST_SE_REDUCTION, STEM_CHANNELS, Arch)

STAGE_STRIDES = (1, 2, 2)


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int


def _out(h: int, stride: int) -> int:
    # 3x3/pad 1, 1x1/pad 0 and 3x3 avg-pool/pad 1 all give floor((h - 1) / stride) + 1
    return (h - 1) // stride + 1


def _basic(cin: int, planes: int, stride: int, h: int) -> tuple[int, int, int]:
    ho = _out(h, stride)
    a_in, a_out = h * h, ho * ho
    macs = cin * a_in + 9 * cin * planes * a_out + planes * a_out + 9 * planes * planes * a_out
    params = 2 * cin + 9 * cin * planes + 2 * planes + 9 * planes * planes
    if stride != 1 or cin != planes:
        macs += cin * planes * a_out
        params += cin * planes
    return macs, params, ho


def _robust(cin: int, planes: int, stride: int, h: int) -> tuple[int, int, int]:
    ho = _out(h, stride)
    a_in, a_out = h * h, ho * ho
    width = (planes * ROBUST_BASE_WIDTH // 160) * ROBUST_CARDINALITY
    ws, out = width * ROBUST_SCALES, planes * ROBUST_EXPANSION
    k = ROBUST_SCALES - 1                      # grouped 3x3 convs, one per chunk but the last
    hidden = out // ROBUST_SE_REDUCTION
    conv2 = 9 * width * (width // ROBUST_CARDINALITY)
    macs = (cin * a_in                          # bn1
            + cin * ws * a_in + ws * a_in       # conv1 (1x1, stride 1) + bn2
            + k * (conv2 + width) * a_out       # grouped convs + their BNs
            + ws * out * a_out + out * a_out    # conv3 + se_bn
            + out + 2 * out * hidden + out * a_out)  # SE: pool, two linears, gating multiply
    if stride > 1:
        macs += width * a_out                   # average-pooled last chunk
    params = (2 * cin + cin * ws + 2 * ws + k * (conv2 + 2 * width) + ws * out + 2 * out
              + 2 * out * hidden)
    if stride > 1 or cin != out:
        macs += cin * out * a_out
        params += cin * out
    return macs, params, ho


def cost(arch: Arch, input_size: int = 32, in_channels: int = 3, num_classes: int = 10) -> Cost:
    """Exact MACs (one image) and parameters, the input checked first (`arch_cost` trusts its caller)."""
    for name, v in (("input size", input_size), ("channels", in_channels), ("classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100_000:
            raise BadInput(f"{name} must be a whole number in 1..100000, got {v!r}")
    return arch_cost(arch, input_size, in_channels, num_classes)


@lru_cache(maxsize=1 << 18)
def arch_cost(arch: Arch, input_size: int = 32, in_channels: int = 3, num_classes: int = 10) -> Cost:
    """MACs for one `input_size` x `input_size` image, and the parameter count."""
    h = input_size
    macs = 9 * in_channels * STEM_CHANNELS * h * h
    params = 9 * in_channels * STEM_CHANNELS
    cin = STEM_CHANNELS
    for depth, planes, block, stride in zip(arch.depths, arch.channels, arch.blocks, STAGE_STRIDES):
        fn = _robust if block == "robust" else _basic
        for b in range(depth):
            m, p, h = fn(cin, planes, stride if b == 0 else 1, h)
            macs, params = macs + m, params + p
            cin = planes * (ROBUST_EXPANSION if block == "robust" else 1)
    macs += cin * h * h + cin + cin * num_classes   # head BN, global pool, linear
    params += 2 * cin + cin * num_classes + num_classes
    return Cost(macs, params)


def parse_macs(text: str | float, teacher_macs: int | None = None) -> int:
    """`5G`, `300M`, `12k`, `123456`, or a fraction of the teacher `0.5x` -> integer MACs."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        mult = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
        try:
            if s.endswith("x"):
                if teacher_macs is None:
                    raise BadInput(f"budget {s!r} is relative to the teacher, but no teacher is known")
                value = float(s[:-1]) * teacher_macs
            elif s and s[-1] in mult:
                value = float(s[:-1]) * mult[s[-1]]
            else:
                value = float(s)
        except ValueError:
            raise BadInput(f"cannot read budget {text!r}; write MACs as 5G, 300M, 12k, an integer, "
                           "or a fraction of the teacher as 0.5x") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise BadInput(f"budget must be a positive number of MACs, got {text!r}")
    if round(value) < 1:
        raise BadInput(f"budget {text!r} is less than one MAC; write MACs as 5G, 300M, 12k, an integer, "
                       "or a fraction of the teacher as 0.5x")
    return round(value)


def format_macs(macs: float, keep_zeros: bool = False) -> str:
    """Three significant digits and a unit: 5795274 -> 5.8M (`keep_zeros`: 5.80M, for table columns)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(macs) >= scale:
            return (f"{macs / scale:#.3g}".rstrip(".") if keep_zeros else f"{macs / scale:.3g}") + unit
    return str(int(macs))
