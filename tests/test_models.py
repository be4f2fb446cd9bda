"""Architecture values, the two blocks and weight inheritance."""
from __future__ import annotations

import pytest
import torch
import yaml

from rcnas.config import from_dict, to_dict
from rcnas.errors import BadInput
from rcnas.models import build_model, inherit, teacher_arch
from rcnas.space.arch import Arch


def test_arch_is_hashable_and_round_trips() -> None:
    a = Arch.from_widths([4, 3, 1], [2, 1.5, 0.25], ["basic", "robust_res_block", "basic"])
    assert a.channels == (32, 48, 16) and a.blocks == ("basic", "robust", "basic")
    assert {a: 1}[Arch((4, 3, 1), (32, 48, 16), ("basic", "robust", "basic"))] == 1
    assert Arch.from_dict(yaml.safe_load(yaml.safe_dump(a.to_dict()))) == a
    assert Arch.from_dict(a.to_robustresnet(10)) == a
    assert from_dict(Arch, to_dict(a)) == a
    assert a.to_robustresnet()["model"]["channel_configs"] == [16, 32, 48, 16]


@pytest.mark.parametrize("data,needle", [
    ({"depths": [0, 1, 1], "widths": [1, 1, 1]}, "at least 1 block"),
    ({"depths": [1, 1], "widths": [1, 1, 1]}, "3 values"),
    ({"depths": [1, 1, 1], "widths": [1, 1, 0.3]}, "multiple of 1/64"),
    ({"depths": [1, 1, 1], "widths": [1, 1, 1], "blocks": ["basic", "x", "basic"]}, "unknown block"),
    ({"depths": [1, 1, 1], "widths": [0.5, 1, 1], "blocks": ["robust", "basic", "basic"]}, "robust block needs"),
    ({"depths": [1, 1, 1], "width": [1, 1, 1]}, "unknown architecture key"),
    ({"model": {"depth_configs": [1, 1, 1], "channel_configs": [8, 16, 32, 64]}}, "stem"),
    ([1, 2, 3], "mapping"),
])
def test_bad_arch_is_a_clear_error(data, needle) -> None:
    with pytest.raises(BadInput, match=needle):
        Arch.from_dict(data)


def test_within_teacher() -> None:
    t = teacher_arch("wrn-28-2")
    assert Arch.from_widths([4, 2, 1], [2, 1, 0.5]).is_within(t)
    with pytest.raises(BadInput, match="not a sub-network"):
        Arch.from_widths([5, 2, 1], [2, 1, 0.5]).check_within(t)
    with pytest.raises(BadInput, match="6n\\+4"):
        teacher_arch("wrn-27-2")
    with pytest.raises(BadInput, match="unknown teacher"):
        teacher_arch("resnet50")


@pytest.mark.parametrize("blocks", [("basic",) * 3, ("robust", "basic", "robust")])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_model_runs_any_input(blocks, size) -> None:
    model = build_model(Arch((2, 1, 1), (16, 32, 64), blocks), num_classes=7, in_channels=1)
    assert model(torch.rand(2, 1, size, size)).shape == (2, 7)


def _teacher_with_random_stats(seed: int = 0):
    torch.manual_seed(seed)
    teacher = build_model(teacher_arch("wrn-28-2"), 10, 1, [0.3], [0.2])
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return teacher.eval()


@pytest.mark.parametrize("strategy", ["l1", "first"])
def test_full_size_subnetwork_reproduces_teacher(strategy) -> None:
    teacher = _teacher_with_random_stats()
    student = inherit(teacher, teacher.arch, strategy).eval()
    x = torch.rand(8, 1, 8, 8)
    assert torch.equal(student(x), teacher(x))


def test_sliced_subnetwork_takes_teacher_weights() -> None:
    teacher = _teacher_with_random_stats()
    arch = Arch((2, 3, 1), (16, 48, 96))
    first = inherit(teacher, arch, "first").eval()
    assert first(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    t_block, s_block = teacher.stages[1][1], first.stages[1][1]
    assert torch.equal(s_block.conv1.weight, t_block.conv1.weight[:48, :48])
    assert torch.equal(s_block.bn2.running_var, t_block.bn2.running_var[:48])
    assert torch.equal(first.fc.weight, teacher.fc.weight[:, :96])
    l1 = inherit(teacher, arch, "l1")
    # every l1-inherited inner filter is one of the teacher's, and the kept ones are the largest
    w_t, w_s = teacher.stages[2][0].conv1.weight, l1.stages[2][0].conv1.weight
    norms = w_t.abs().flatten(1).sum(1)
    kept = norms.topk(96).indices.sort().values
    stream2 = l1.stages[2][0].conv1.in_channels
    assert w_s.shape[0] == 96 and stream2 == 48
    assert torch.equal(l1.stages[2][0].bn2.weight, teacher.stages[2][0].bn2.weight[kept])
    assert not torch.equal(w_s, first.stages[2][0].conv1.weight)


def test_robust_stage_inside_basic_teacher_is_fresh_but_runs() -> None:
    teacher = _teacher_with_random_stats()
    arch = Arch((2, 2, 2), (32, 32, 64), ("basic", "robust", "basic"))
    student = inherit(teacher, arch)
    # stage 1 is inherited; the robust stage 2 keeps its fresh initialisation (same seed, same init)
    assert torch.equal(student.stages[0][0].bn1.running_var, teacher.stages[0][0].bn1.running_var)
    torch.manual_seed(0)
    fresh = build_model(arch, 10, 1)
    torch.manual_seed(0)
    student = inherit(teacher, arch)
    assert torch.equal(student.stages[1][0].conv3.weight, fresh.stages[1][0].conv3.weight)
    assert student(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(BadInput):
        inherit(teacher, arch, "random")
