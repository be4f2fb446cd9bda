"""The attack base class, the shared projection, and `make_attack`.

Inputs are images in [0, 1] (models normalise internally), so `eps` is in pixel units: 8/255 on
CIFAR-10, 0.1 on Fashion-MNIST, 0.15 on digits. Subclasses override `perturb`; the base
`__call__` does the bookkeeping that makes an attack a measurement rather than an intervention:
eval mode, fp32, no parameter gradients, the caller's modes restored, the result projected.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rcnas.errors import BadInput
from rcnas.registry import Registry

NORMS = ("Linf", "L2")

# Attack classes by kind ("clean", "fgsm", "pgd", "cw", "aa"); `make_attack` parses step counts.
ATTACKS: Registry[type[Attack]] = Registry("attack")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise BadInput(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    return norm


def check_eps(eps: float, norm: str = "Linf") -> float:
    """A perturbation radius in pixel units: finite, > 0, and <= 1 for L-inf (the whole range)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise BadInput(f"eps must be a number, got {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps <= 0:
        raise BadInput(f"eps must be a finite number > 0, got {eps!r}; e.g. 8/255 = 0.0314 for CIFAR-10")
    if norm == "Linf" and eps > 1:
        hint = f" (did you mean {eps:g}/255 = {eps / 255:.4f}?)" if eps <= 255 else ""
        raise BadInput(f"L-inf eps {eps:g} is above 1: inputs are in [0,1], give eps in pixel units{hint}")
    return eps


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """Project `x_adv` onto the `norm` ball of radius `eps` around `x`, then into [0, 1].

    Clamping to [0, 1] after the ball projection never leaves the ball: for both norms it only
    moves each coordinate towards `x`.
    """
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "L2":
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        delta = delta * factor.view(-1, *([1] * (x.dim() - 1)))
    else:
        check_norm(norm)
    return (x + delta).clamp(0.0, 1.0)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, fp32 (autocast off), parameters not requiring grad; all restored on exit.

    Why: measuring robustness must not change the model (BN running statistics, parameter `.grad`
    as FAB's `backward()` would leave) nor the caller's state (per-module train/eval flags, an
    enclosing bf16 autocast or inference_mode context).
    """
    modes = [(m, m.training) for m in model.modules()]
    frozen = [p for p in model.parameters() if p.requires_grad]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        try:
            for p in frozen:
                p.requires_grad_(False)
            model.eval()
            yield model
        finally:
            for m, training in modes:
                m.training = training
            for p in frozen:
                p.requires_grad_(True)


def check_batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate an (images, labels) batch; return fp32 images and int64 labels on x's device."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise BadInput("attack inputs must be torch tensors (images x, labels y)")
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise BadInput(f"expected images (N, ...) and labels (N,), got shapes {tuple(x.shape)} and "
                       f"{tuple(y.shape)}")
    if not x.dtype.is_floating_point or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise BadInput(f"expected float images and integer labels, got {x.dtype} and {y.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise BadInput("images contain NaN or inf; check the data pipeline")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise BadInput(f"images must be in [0,1] (models normalise internally), got range "
                       f"[{float(x.min()):.3f}, {float(x.max()):.3f}]; pass unnormalised images")
    return x.detach().to(torch.float32), y.detach().to(x.device, torch.long)


class Attack:
    """An attack with fixed settings. Subclasses override `perturb`; callers batch the data.

    `seed` fixes the random start: same seed and batch -> the same adversarial examples (a fresh
    CPU generator per call, so random starts do not depend on the device or on global RNG state).
    """

    kind: ClassVar[str] = "attack"
    default_steps: ClassVar[int] = 1
    default_random_start: ClassVar[bool] = False

    def __init__(self, eps: float, *, norm: str = "Linf", steps: int | None = None,
                 step_size: float | None = None, random_start: bool | None = None,
                 seed: int | None = 0) -> None:
        self.norm = check_norm(norm)
        self.eps = check_eps(eps, self.norm)
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise BadInput(f"{self.kind}: steps must be an integer >= 0, got {steps!r}")
        self.steps = steps
        if step_size is None:
            step_size = self.default_step_size(self.eps, steps)
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) \
                or not math.isfinite(step_size) or step_size <= 0:
            raise BadInput(f"{self.kind}: step_size must be a finite number > 0, got {step_size!r}")
        self.step_size = float(step_size)
        self.random_start = self.default_random_start if random_start is None else bool(random_start)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadInput(f"{self.kind}: seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.name: str = self.kind

    def default_step_size(self, eps: float, steps: int) -> float:
        return eps

    def generator(self) -> torch.Generator | None:
        """A fresh CPU generator from `seed` (None: use torch's global RNG, i.e. not reproducible)."""
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for (x, y), same shape and dtype as x, within the eps ball and [0,1]."""
        x32, y = check_batch(x, y)
        with frozen_eval(model), torch.enable_grad():
            x32, y = x32.clone(), y.clone()  # also turns inference-mode tensors into normal ones
            x_adv = self.perturb(model, x32, y)
            x_adv = project(x_adv.detach().to(torch.float32), x32, self.eps, self.norm)
        return x_adv.to(x.dtype)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples; the model is in eval mode with frozen parameters."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, eps={self.eps:g}, norm={self.norm!r}, "
                f"steps={self.steps}, step_size={self.step_size:g}, seed={self.seed})")


_NAME = re.compile(r"^(?P<kind>[a-z]+?)(?:[-_]?(?P<steps>\d+))?$")
_ALIASES = {"autoattack": "aa", "none": "clean"}


def make_attack(name: str, eps: float, *, seed: int = 0, **overrides: Any) -> Attack:
    """An attack by name: clean, fgsm, pgd (20 steps), pgdN (pgd7, PGD-20), cw (40), cwN, aa.

    Step sizes follow the robust-NAS lineage: eps/10 for >= 20 steps (0.8/255 at 8/255), else
    2.5*eps/steps; FGSM takes one step of eps. `overrides` go to the class (norm, step_size, ...).
    """
    known = "clean, fgsm, pgd, pgdN (e.g. pgd7, pgd20), cw, cwN (e.g. cw40), aa"
    if not isinstance(name, str):
        raise BadInput(f"attack name must be a string, got {name!r}; known: {known}")
    m = _NAME.match(name.strip().lower())
    kind = _ALIASES.get(m["kind"], m["kind"]) if m else None
    if m is None or kind not in ATTACKS:
        raise BadInput(f"unknown attack {name!r}; known: {known}")
    cls = ATTACKS.get(kind)
    params = inspect.signature(cls.__init__).parameters
    if m["steps"] is not None:
        if "steps" not in params or kind == "fgsm":
            raise BadInput(f"attack {kind!r} takes no step count in its name ({name!r}); use {kind!r}")
        if "steps" in overrides:
            raise BadInput(f"attack {name!r}: give the step count in the name or as steps=, not both")
        steps = int(m["steps"])
        if steps < 1:
            raise BadInput(f"attack {name!r}: the step count must be >= 1")
        overrides["steps"] = steps
    allowed = [p for p in params if p not in ("self", "eps", "seed")]
    unknown = [k for k in overrides if k not in allowed]
    if unknown:
        raise BadInput(f"attack {kind!r} has no setting {unknown[0]!r}; settings: {', '.join(allowed)}")
    return cls(eps, seed=seed, **overrides)
