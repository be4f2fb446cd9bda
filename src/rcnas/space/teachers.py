"""Named teachers: the paper's four WideResNets and small ones that train on a CPU.

| name | blocks/stage | widen | use |
|---|---|---|---|
| wrn-28-10, wrn-34-12, wrn-46-14, wrn-70-16 | 4, 5, 7, 11 | 10-16 | the paper's teachers (about 5, 10, 19, 39 GMACs at 32x32) |
| wrn-28-2 | 4 | 2 | digits default: 13.4M MACs at 8x8, 4 depth choices per stage |
| wrn-10-2, wrn-16-2, wrn-22-2, wrn-16-4 | 1, 2, 3, 2 | 2-4 | small teachers for meta-training variety; wrn-10-2 is mnist5k's default (34M MACs at 28x28), wrn-16-2 MNIST's and Fashion-MNIST's |

Any `wrn-D-W` with D = 6n + 4 is accepted too.
"""
from __future__ import annotations

import re

from rcnas.errors import BadInput
from rcnas.registry import Registry
from rcnas.space.arch import Arch

TEACHERS: Registry[Arch] = Registry("teacher")
for _depth, _widen in [(28, 10), (34, 12), (46, 14), (70, 16), (28, 2), (16, 2), (22, 2), (16, 4), (10, 2)]:
    TEACHERS.register(f"wrn-{_depth}-{_widen}", Arch.wrn(_depth, _widen))

DEFAULT_TEACHER = {"digits": "wrn-28-2", "mnist5k": "wrn-10-2", "mnist": "wrn-16-2",
                   "fashion-mnist": "wrn-16-2", "cifar10": "wrn-28-10", "cifar100": "wrn-28-10",
                   "tinyimagenet": "wrn-28-10"}
_WRN = re.compile(r"^wrn-(\d+)-(\d+(?:\.\d+)?)$")


def teacher_arch(name: str) -> Arch:
    if name in TEACHERS:
        return TEACHERS.get(name)
    m = _WRN.match(name)
    if m:
        return Arch.wrn(int(m.group(1)), float(m.group(2)))
    raise BadInput(f"unknown teacher {name!r}; known: {', '.join(TEACHERS.names())} "
                   "(or any wrn-D-W with D = 6n+4)")


def default_teacher(dataset: str) -> str:
    return DEFAULT_TEACHER.get(dataset, "wrn-16-2")
