"""Gradient attacks on one projected-gradient core: FGSM, PGD (cross-entropy), CW (margin loss).

`pgd` is also the trainer's inner maximisation (TRADES passes a KL loss to the clean
probabilities), so it takes any `loss_fn(logits, target)` and touches nothing but the input.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcnas.attacks.base import ATTACKS, Attack, check_norm, project


def _random_delta(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform L-inf start, or an L2 start with a uniform direction and radius in [0, eps]."""
    device = generator.device if generator is not None else x.device
    shape, n = x.shape, x.shape[0]
    if norm == "Linf":
        delta = torch.rand(shape, generator=generator, device=device, dtype=x.dtype) * 2 - 1
        return (delta * eps).to(x.device)
    direction = torch.randn(shape, generator=generator, device=device, dtype=x.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, *([1] * (x.dim() - 1)))
    radius = torch.rand(n, generator=generator, device=device, dtype=x.dtype) * eps
    return (direction * radius.view(n, *([1] * (x.dim() - 1)))).to(x.device)


def _ascent_direction(grad: Tensor, norm: str) -> Tensor:
    if norm == "Linf":
        return grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, *([1] * (grad.dim() - 1)))


def pgd(model: nn.Module, x: Tensor, target: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], *,
        eps: float, step_size: float, steps: int, random_start: bool, norm: str = "Linf",
        generator: torch.Generator | None = None) -> Tensor:
    """Maximise `loss_fn(model(x_adv), target)` over the `norm` ball of radius `eps`, inside [0,1].

    Gradients are taken w.r.t. the input only (`torch.autograd.grad`), so parameter `.grad` is never
    touched and this is safe inside a training step. It does not change the model's mode: callers
    that must not update BN statistics (TRADES does) put the model in eval mode first. A per-sample
    loss is summed, so each sample's step is independent of the batch. `generator=None` draws the
    random start from torch's global RNG.
    """
    check_norm(norm)
    x = x.detach()
    if random_start and eps > 0:
        x_adv = project(x + _random_delta(x, eps, norm, generator), x, eps, norm)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), target)
            if loss.dim():
                loss = loss.sum()
        grad = torch.autograd.grad(loss, x_adv, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:  # the loss does not depend on the input: a fully masked model
            grad = torch.zeros_like(x_adv)
        x_adv = project(x_adv.detach() + step_size * _ascent_direction(grad, norm), x, eps, norm)
    return x_adv.detach()


def cross_entropy_sum(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="sum")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin summed over the batch: max_{j != y} z_j - z_y (> 0 once misclassified)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return (other - true).sum()


@ATTACKS.register("clean")
class Clean(Attack):
    """No attack: the clean accuracy goes through the same code path as the attacks."""

    kind = "clean"
    default_steps = 0

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """One signed-gradient step of size eps on the cross-entropy, no random start."""

    kind = "fgsm"
    default_steps = 1

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return pgd(model, x, y, cross_entropy_sum, eps=self.eps, step_size=self.step_size,
                   steps=self.steps, random_start=self.random_start, norm=self.norm,
                   generator=self.generator())


class _Iterative(Attack):
    """Multi-step PGD with a random start; the name carries the step count (pgd20, cw40)."""

    default_random_start = True
    loss: Callable[[Tensor, Tensor], Tensor]

    def __init__(self, eps: float, *, norm: str = "Linf", steps: int | None = None,
                 step_size: float | None = None, random_start: bool | None = None,
                 seed: int | None = 0) -> None:
        super().__init__(eps, norm=norm, steps=steps, step_size=step_size, random_start=random_start,
                         seed=seed)
        self.name = f"{self.kind}{self.steps}"

    def default_step_size(self, eps: float, steps: int) -> float:
        return eps / 10 if steps >= 20 else 2.5 * eps / max(steps, 1)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return pgd(model, x, y, type(self).loss, eps=self.eps, step_size=self.step_size,
                   steps=self.steps, random_start=self.random_start, norm=self.norm,
                   generator=self.generator())


@ATTACKS.register("pgd")
class PGD(_Iterative):
    """PGD on the cross-entropy (Madry et al.), 20 steps of eps/10 by default."""

    kind = "pgd"
    default_steps = 20
    loss = staticmethod(cross_entropy_sum)


@ATTACKS.register("cw")
class CW(_Iterative):
    """The lineage's "CW-40": PGD on the CW margin loss (kappa 0), 40 steps by default."""

    kind = "cw"
    default_steps = 40
    loss = staticmethod(cw_margin)
