"""The staged pre-activation ResNet that every teacher and sub-network is an instance of."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rcnas.models.blocks import BLOCK_CLASSES
from rcnas.space.arch import STEM_CHANNELS, Arch

STAGE_STRIDES = (1, 2, 2)


class PreActResNet(nn.Module):
    """stem conv3x3(16) -> 3 stages (strides 1, 2, 2) -> BN-ReLU-avgpool-linear.

    Inputs are in [0, 1]; normalisation by the dataset's mean/std happens inside the model, so
    attack budgets are in pixel units (as AutoAttack expects).
    """

    def __init__(self, arch: Arch, num_classes: int = 10, in_channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes, self.in_channels = num_classes, in_channels
        mean = torch.tensor(mean if mean is not None else [0.0] * in_channels, dtype=torch.float32)
        std = torch.tensor(std if std is not None else [1.0] * in_channels, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        self.stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, padding=1, bias=False)
        stages, cin = [], STEM_CHANNELS
        for depth, planes, block, stride in zip(arch.depths, arch.channels, arch.blocks, STAGE_STRIDES):
            cls = BLOCK_CLASSES[block]
            layers = []
            for b in range(depth):
                layers.append(cls(cin, planes, stride if b == 0 else 1))
                cin = planes * cls.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convs (fan-out, as WRN/RobustResNet), unit BN, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem((x - self.mean) / self.std)
        for stage in self.stages:
            out = stage(out)
        out = torch.relu(self.head_bn(out))
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def build_model(arch: Arch, num_classes: int = 10, in_channels: int = 3,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> PreActResNet:
    return PreActResNet(arch, num_classes, in_channels, mean, std)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
