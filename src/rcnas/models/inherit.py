"""Weight inheritance: a sub-network that starts from its teacher's weights.

Each kept stage keeps its first D_i blocks. Channels are sliced consistently: one index set R per
stage for the residual stream (every block of the stage writes to and reads from it), and one index
set I per block for its inner channels. `first` keeps the first k channels; `l1` keeps the k
channels of largest L1 importance (the stream's importance sums every filter that writes to it).
Where the teacher has an identity shortcut but the sub-network needs a projection, the projection
is set to the identity on the kept channels, so a full-size sub-network reproduces its teacher
exactly. Stages whose block type differs from the teacher's (e.g. a robust block inside a
basic-block teacher) start from a fresh initialisation, and so do the tensors that read from them.
"""
from __future__ import annotations

import torch
from torch import nn

from rcnas.errors import BadInput
from rcnas.models.blocks import BasicBlock
from rcnas.models.resnet import PreActResNet, build_model
from rcnas.space.arch import STEM_CHANNELS, Arch

STRATEGIES = ("l1", "first")
Index = torch.Tensor | None


def _select(scores: torch.Tensor, k: int, strategy: str) -> torch.Tensor:
    if strategy == "first":
        return torch.arange(k)
    return torch.topk(scores, k, sorted=False).indices.sort().values


def _filter_l1(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().flatten(1).sum(1)


@torch.no_grad()
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[idx])
    dst.bias.copy_(src.bias[idx])
    dst.running_mean.copy_(src.running_mean[idx])
    dst.running_var.copy_(src.running_var[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _stream_scores(blocks: list[BasicBlock]) -> torch.Tensor:
    """L1 importance of each residual-stream channel: every filter that writes to it."""
    score = sum(_filter_l1(b.conv2.weight) for b in blocks)
    for b in blocks:
        if b.shortcut is not None:
            score = score + _filter_l1(b.shortcut.weight)
    return score


@torch.no_grad()
def _inherit_basic(dst: BasicBlock, src: BasicBlock, in_idx: Index, stream: torch.Tensor,
                   strategy: str) -> None:
    inner = _select(_filter_l1(src.conv1.weight), dst.conv1.out_channels, strategy)
    _copy_bn(dst.bn2, src.bn2, inner)
    dst.conv2.weight.copy_(src.conv2.weight[stream][:, inner])
    if in_idx is None:
        return  # the block's input comes from a freshly initialised stage: nothing to map onto
    _copy_bn(dst.bn1, src.bn1, in_idx)
    dst.conv1.weight.copy_(src.conv1.weight[inner][:, in_idx])
    if dst.shortcut is not None:
        if src.shortcut is not None:
            dst.shortcut.weight.copy_(src.shortcut.weight[stream][:, in_idx])
        else:  # the teacher's identity, restricted to the kept channels
            eye = torch.eye(src.conv2.out_channels, dtype=dst.shortcut.weight.dtype)
            dst.shortcut.weight.copy_(eye[stream][:, in_idx].view_as(dst.shortcut.weight))


def inherit(teacher: PreActResNet, arch: Arch, strategy: str = "l1") -> PreActResNet:
    """Build `arch` as a sub-network of `teacher`, initialised from the teacher's weights."""
    if strategy not in STRATEGIES:
        raise BadInput(f"unknown inheritance strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    arch.check_within(teacher.arch)
    student = build_model(arch, teacher.num_classes, teacher.in_channels)
    with torch.no_grad():
        student.mean.copy_(teacher.mean)
        student.std.copy_(teacher.std)
        student.stem.weight.copy_(teacher.stem.weight)
    stream: Index = torch.arange(STEM_CHANNELS)
    for t_stage, s_stage, t_block, s_block in zip(teacher.stages, student.stages, teacher.arch.blocks,
                                                  arch.blocks):
        if not (t_block == s_block == "basic"):
            stream = None  # [choice] robust blocks are not sliced from a basic-block teacher
            continue
        kept = list(t_stage)[: len(s_stage)]
        in_stream = stream
        stream = _select(_stream_scores(kept), s_stage[0].conv2.out_channels, strategy)
        for b, (dst, src) in enumerate(zip(s_stage, kept)):
            _inherit_basic(dst, src, in_stream if b == 0 else stream, stream, strategy)
    if stream is not None:
        with torch.no_grad():
            _copy_bn(student.head_bn, teacher.head_bn, stream)
            student.fc.weight.copy_(teacher.fc.weight[:, stream])
            student.fc.bias.copy_(teacher.fc.bias)
    return student
