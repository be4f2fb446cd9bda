"""`Arch`: per-stage depth, width and block type of a 3-stage pre-activation ResNet.

Widths are stored as channel counts (`channels[i]` is the stage's `planes`: 16*W1, 32*W2, 64*W3)
so an `Arch` is exact, hashable and usable as a cache key; `widths` gives the widen factors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rcnas.errors import BadInput, show

STAGES = 3
STAGE_BASE = (16, 32, 64)  # a stage of widen factor W has STAGE_BASE[i] * W channels
MAX_DEPTH = 1000      # blocks per stage: the paper's largest teacher (WRN-70-16) has 11
MAX_CHANNELS = 1 << 16  # channels per stage: WRN-70-16 has 1,024 in its last stage


def _short(value: Any) -> str:
    """A number as an error message may print it: never thousands of digits."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"
STEM_CHANNELS = 16
BLOCKS = ("basic", "robust")
_BLOCK_NAMES = {"basic": "basic", "basic_block": "basic", "robust": "robust", "robust_res_block": "robust"}
_LINEAGE_NAMES = {"basic": "basic_block", "robust": "robust_res_block"}

# RobustResBlock hyper-parameters of RobustResNet-A1..A4 (CVPR 2023), fixed across the space.
ROBUST_SCALES, ROBUST_BASE_WIDTH, ROBUST_CARDINALITY, ROBUST_SE_REDUCTION = 8, 10, 4, 64
ROBUST_EXPANSION = 4
# floor(planes * base_width / 160) must be >= 1 and 4*planes // se_reduction >= 1.
ROBUST_MIN_PLANES = 16


def normalize_block(name: str) -> str:
    try:
        return _BLOCK_NAMES[str(name)]
    except KeyError:
        raise BadInput(f"unknown block type {show(name)}; use basic or robust "
                       "(basic_block and robust_res_block are accepted too)") from None


def _stages(value: Any, what: str) -> tuple:
    """`value` as a tuple of one entry per stage; anything else is a `BadInput` (never a TypeError)."""
    if not isinstance(value, (tuple, list)) or len(value) != STAGES:
        raise BadInput(f"architecture {what} needs {STAGES} values (one per stage), got {value!r}")
    return tuple(value)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInput(f"{what} must be a whole number, got {value!r}")
    return value


@dataclass(frozen=True, order=True)
class Arch:
    depths: tuple[int, int, int]
    channels: tuple[int, int, int]
    blocks: tuple[str, str, str] = ("basic", "basic", "basic")

    def __post_init__(self) -> None:
        for field in ("depths", "channels", "blocks"):
            value = getattr(self, field)
            if not isinstance(value, (tuple, list)) or len(value) != STAGES:
                raise BadInput(f"architecture {field} needs {STAGES} values (one per stage), got {value!r}")
        object.__setattr__(self, "depths", tuple(_as_int(d, "a stage depth") for d in self.depths))
        object.__setattr__(self, "channels", tuple(_as_int(c, "a stage width in channels")
                                                   for c in self.channels))
        object.__setattr__(self, "blocks", tuple(normalize_block(b) for b in self.blocks))
        if min(self.depths) < 1:
            raise BadInput(f"every stage needs at least 1 block, got depths {list(self.depths)}")
        if max(self.depths) > MAX_DEPTH:
            raise BadInput(f"a stage may have at most {MAX_DEPTH} blocks, got {_short(max(self.depths))}")
        if min(self.channels) < 1:
            raise BadInput(f"every stage needs at least 1 channel, got {list(self.channels)}")
        if max(self.channels) > MAX_CHANNELS:
            raise BadInput(f"a stage may have at most {MAX_CHANNELS} channels (width {MAX_CHANNELS // STAGE_BASE[-1]} "
                           f"in the last stage), got {_short(max(self.channels))}")
        for i, (c, b) in enumerate(zip(self.channels, self.blocks)):
            if b == "robust" and c < ROBUST_MIN_PLANES:
                raise BadInput(f"stage {i + 1}: the robust block needs at least {ROBUST_MIN_PLANES} channels "
                               f"(width >= {ROBUST_MIN_PLANES / STAGE_BASE[i]:g}), got {c}; "
                               "widen the stage or use the basic block")

    # --- views -----------------------------------------------------------------------------
    @property
    def widths(self) -> tuple[float, float, float]:
        return tuple(c / base for c, base in zip(self.channels, STAGE_BASE))  # type: ignore[return-value]

    @property
    def out_channels(self) -> tuple[int, int, int]:
        """Channels each stage emits (the robust block expands by 4)."""
        return tuple(c * (ROBUST_EXPANSION if b == "robust" else 1)  # type: ignore[return-value]
                     for c, b in zip(self.channels, self.blocks))

    def key(self) -> str:
        """Compact, unique, human-readable identifier, e.g. `d4.4.2-c32.64.96-bbr`."""
        d = ".".join(map(str, self.depths))
        c = ".".join(map(str, self.channels))
        return f"d{d}-c{c}-{''.join(b[0] for b in self.blocks)}"

    def __str__(self) -> str:
        w = ", ".join(f"{x:g}" for x in self.widths)
        return f"depths {list(self.depths)}, widths [{w}], blocks {list(self.blocks)}"

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_widths(cls, depths: Any, widths: Any, blocks: Any = ("basic",) * STAGES) -> Arch:
        if not isinstance(widths, (tuple, list)) or len(widths) != STAGES:
            raise BadInput(f"widths needs {STAGES} values (one per stage), got {widths!r}")
        channels = []
        for i, (w, base) in enumerate(zip(widths, STAGE_BASE)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise BadInput(f"stage {i + 1} width must be a finite number, got {w!r}")
            c = Fraction(w).limit_denominator(1 << 20) * base
            if c.denominator != 1:
                raise BadInput(f"stage {i + 1} width {w:g} gives {float(c):g} channels; "
                               f"use a multiple of 1/{base}")
            channels.append(int(c))
        return cls(_stages(depths, "depths"), tuple(channels), _stages(blocks, "blocks"))  # type: ignore[arg-type]

    @classmethod
    def wrn(cls, depth: int, widen: float, block: str = "basic") -> Arch:
        """WRN-depth-widen: (depth - 4) / 6 basic blocks per stage."""
        if (depth - 4) % 6 or depth < 10:
            raise BadInput(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        n = (depth - 4) // 6
        return cls.from_widths((n,) * STAGES, (widen,) * STAGES, (block,) * STAGES)

    def to_dict(self) -> dict[str, list]:
        return {"depths": list(self.depths), "widths": [_plain(w) for w in self.widths],
                "blocks": list(self.blocks)}

    def to_robustresnet(self, num_classes: int | None = None) -> dict[str, Any]:
        """The RobustResNet / RC-NAS training-config `model:` section (the lineage's file format)."""
        model: dict[str, Any] = {
            "depth_configs": list(self.depths),
            "channel_configs": [STEM_CHANNELS, *self.channels],
            "stride_config": [1, 2, 2],
            "block_types": [_LINEAGE_NAMES[b] for b in self.blocks],
            "scales": ROBUST_SCALES, "base_width": ROBUST_BASE_WIDTH,
            "cardinality": ROBUST_CARDINALITY, "se_reduction": ROBUST_SE_REDUCTION,
        }
        if num_classes is not None:
            model["num_classes"] = num_classes
        return {"model": model}

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        """Accept rcnas's own file (`depths`, `widths` or `channels`, `blocks`), an `arch:` section,
        or a RobustResNet config (a `model:` section, or its keys at top level)."""
        if not isinstance(data, dict):
            raise BadInput("an architecture file must be a mapping with depths, widths and blocks "
                           "(or a RobustResNet config with a model: section)")
        if "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        if "depth_configs" in data:
            missing = [k for k in ("depth_configs", "channel_configs") if k not in data]
            if missing:
                raise BadInput(f"RobustResNet config lacks {missing[0]}")
            ch = data["channel_configs"]
            if not isinstance(ch, (list, tuple)) or len(ch) != STAGES + 1:
                raise BadInput(f"channel_configs needs {STAGES + 1} values [16, 16*W1, 32*W2, 64*W3], got {ch!r}")
            if ch[0] != STEM_CHANNELS:
                raise BadInput(f"channel_configs[0] (the stem) must be {STEM_CHANNELS}, got {ch[0]!r}")
            blocks = data.get("block_types", ["basic_block"] * STAGES)
            return cls(_stages(data["depth_configs"], "depth_configs"), tuple(ch[1:]),
                       _stages(blocks, "block_types"))
        known = {"depths", "widths", "channels", "blocks", SEARCHED_FOR}  # SEARCHED_FOR: read by searched_for()
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown architecture key {unknown[0]!r}; known keys: depths, widths (or channels), blocks")
        if "depths" not in data or ("widths" not in data and "channels" not in data):
            raise BadInput("an architecture needs depths and widths (or channels), e.g. "
                           "depths: [4, 4, 2], widths: [2, 2, 1]")
        blocks = data.get("blocks", ["basic"] * STAGES)
        if "channels" in data:
            return cls(_stages(data["depths"], "depths"), _stages(data["channels"], "channels"),
                       _stages(blocks, "blocks"))
        return cls.from_widths(data["depths"], data["widths"], blocks)

    # --- relation to a teacher ---------------------------------------------------------------
    def is_within(self, teacher: Arch) -> bool:
        return all(d <= td for d, td in zip(self.depths, teacher.depths)) and all(
            c <= tc for c, tc in zip(self.channels, teacher.channels))

    def check_within(self, teacher: Arch) -> None:
        if not self.is_within(teacher):
            raise BadInput(f"architecture ({self}) is not a sub-network of the teacher ({teacher}): "
                           "depths and widths may not exceed the teacher's")


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


SEARCHED_FOR = "searched_for"  # arch.yaml's record of the task setting a search found the network for


def searched_for(data: Any) -> dict[str, Any]:
    """The task setting a search's arch.yaml records (its parsed content); {} for a hand-written file."""
    rec = data.get(SEARCHED_FOR) if isinstance(data, dict) else None
    return rec if isinstance(rec, dict) else {}
