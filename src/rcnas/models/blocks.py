"""The two blocks of the search space, as in RobustResNet's published code (so costs compare
with the lineage). Both are pre-activation: BN-ReLU first, and the projection shortcut takes the
pre-activated input.

[choice] RobustResNet's code feeds the *raw* input to the robust block's first 1x1 conv; we feed
the pre-activated input (true pre-activation, as method.md describes). MACs and parameters are
identical either way.
"""
from __future__ import annotations

import torch
from torch import nn

from rcnas.space.arch import (ROBUST_BASE_WIDTH, ROBUST_CARDINALITY, ROBUST_EXPANSION, ROBUST_SCALES,
                              ROBUST_SE_REDUCTION)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ 1x1 projection shortcut when stride or width changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return out + shortcut


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = self.fc(nn.functional.adaptive_avg_pool2d(x, 1).view(b, c)).view(b, c, 1, 1)
        return x * y.expand_as(x)


class RobustResBlock(nn.Module):
    """RobustResNet's block: 1x1 conv to width*scales channels, a Res2Net hierarchy of grouped 3x3
    convs over the `scales` chunks (each adds the previous chunk's output; with stride > 1 the chunks
    are independent and the last is average-pooled), 1x1 conv to 4*planes, plus SE(BN(.)).
    """

    expansion = ROBUST_EXPANSION

    def __init__(self, in_planes: int, planes: int, stride: int = 1, scales: int = ROBUST_SCALES,
                 base_width: int = ROBUST_BASE_WIDTH, cardinality: int = ROBUST_CARDINALITY,
                 se_reduction: int = ROBUST_SE_REDUCTION) -> None:
        super().__init__()
        width = (planes * base_width // 160) * cardinality
        out = planes * self.expansion
        self.scales, self.stride = scales, stride
        self.act = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, width * scales, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width * scales)
        self.conv2 = nn.ModuleList(conv3x3(width, width, stride, cardinality) for _ in range(scales - 1))
        self.bn3 = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scales - 1))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if stride > 1 else None
        self.conv3 = nn.Conv2d(width * scales, out, 1, bias=False)
        self.se_bn = nn.BatchNorm2d(out)
        self.se = SqueezeExcitation(out, se_reduction)
        self.shortcut = (nn.Conv2d(in_planes, out, 1, stride=stride, bias=False)
                         if stride > 1 or in_planes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        chunks = torch.chunk(self.act(self.bn2(self.conv1(pre))), self.scales, dim=1)
        ys: list[torch.Tensor] = []
        for s, (conv, bn) in enumerate(zip(self.conv2, self.bn3)):
            inp = chunks[s] if s == 0 or self.stride > 1 else chunks[s] + ys[-1]
            ys.append(self.act(bn(conv(inp))))
        ys.append(chunks[-1] if self.pool is None else self.pool(chunks[-1]))
        out = self.conv3(torch.cat(ys, dim=1))
        return out + shortcut + self.se(self.se_bn(out))


BLOCK_CLASSES: dict[str, type[nn.Module]] = {"basic": BasicBlock, "robust": RobustResBlock}
