"""Models: the two blocks, the staged pre-activation ResNet, named teachers and weight inheritance."""
from rcnas.models.blocks import BasicBlock, RobustResBlock
from rcnas.models.inherit import STRATEGIES, inherit
from rcnas.models.resnet import PreActResNet, build_model, count_params
from rcnas.space.teachers import DEFAULT_TEACHER, TEACHERS, default_teacher, teacher_arch

__all__ = ["BasicBlock", "RobustResBlock", "PreActResNet", "build_model", "count_params", "inherit",
           "STRATEGIES", "TEACHERS", "DEFAULT_TEACHER", "default_teacher", "teacher_arch"]
