"""Training losses, one per recipe: `(model, x, y, cfg, eps, generator) -> scalar fp32 loss`.

Every adversarial example is crafted by the single PGD in `rcnas.attacks` with the model in eval
mode (BatchNorm running statistics never see the attack's intermediate iterates) and in fp32; the
model is back in train mode for the forward pass whose loss is returned. The caller backpropagates.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from rcnas.attacks import cross_entropy_sum, pgd
from rcnas.registry import Registry
from rcnas.train.config import TrainConfig

Recipe = Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainConfig, float, "torch.Generator | None"],
                  torch.Tensor]
RECIPES: Registry[Recipe] = Registry("training recipe")


def forward(model: nn.Module, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Logits as fp32. With `cfg.bf16` only this forward runs under autocast: the loss, backward and
    optimizer step stay in fp32 (autocast around backward/step on CPU trained a chance-level net)."""
    if not cfg.bf16:
        return model(x)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        logits = model(x)
    return logits.float()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block (attack crafting), the previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _kl_to_clean(logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(logits.float(), dim=1), p_clean, reduction="sum")


def _like_input(x_adv: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Detached, and NHWC again when training channels_last (the attack's arithmetic may not keep it)."""
    x_adv = x_adv.detach()
    return x_adv.contiguous(memory_format=torch.channels_last) if cfg.channels_last and x_adv.dim() == 4 \
        else x_adv


def _train_ce(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)


@RECIPES.register("standard")
def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain cross-entropy on clean inputs (the non-robust teacher)."""
    return _train_ce(forward(model, x, cfg), y, cfg)


@RECIPES.register("pgd")
def pgd_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al. 2018: cross-entropy on a PGD example from a uniform random start."""
    with eval_mode(model):
        x_adv = pgd(model, x, y, cross_entropy_sum, eps=eps, step_size=cfg.resolve_step_size(eps, "pgd"),
                    steps=cfg.attack_steps, random_start=True, generator=generator)
    return _train_ce(forward(model, _like_input(x_adv, cfg), cfg), y, cfg)


@RECIPES.register("trades")
def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Zhang et al. 2019: CE(clean) + beta * KL(p(x_adv) || p(x)), x_adv maximising that KL.

    The PGD starts uniformly in the eps-ball (the paper: x + 0.001*N(0,1)); from x itself the KL's
    gradient is exactly zero and sign-steps would never move.
    """
    with eval_mode(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x).float(), dim=1)  # (B, K) fixed target of the inner max
        x_adv = pgd(model, x, p_clean, _kl_to_clean, eps=eps, step_size=cfg.resolve_step_size(eps, "trades"),
                    steps=cfg.attack_steps, random_start=True, generator=generator)
    logits_clean = forward(model, x, cfg)
    logits_adv = forward(model, _like_input(x_adv, cfg), cfg)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return _train_ce(logits_clean, y, cfg) + cfg.trades_beta * kl


@RECIPES.register("fgsm-rs")
def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Wong et al. 2020 ("fast is better than free"): uniform start in the eps-ball, one signed step
    of 1.25*eps, projected back to the ball: exactly one-step PGD with a random start."""
    with eval_mode(model):
        x_adv = pgd(model, x, y, cross_entropy_sum, eps=eps, step_size=cfg.resolve_step_size(eps, "fgsm-rs"),
                    steps=1, random_start=True, generator=generator)
    return _train_ce(forward(model, _like_input(x_adv, cfg), cfg), y, cfg)


@RECIPES.register("n-fgsm")
def n_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """de Jorge et al. 2022: noise U(-2eps, 2eps), one signed step of alpha=eps, NO projection to the
    eps-ball (perturbations reach 3*eps), only clipping to [0,1].

    Still the one PGD: one step of size alpha from `x_noisy`, with radius alpha around `x_noisy`, never
    leaves that ball, so PGD's projection is a no-op and only its [0,1] clamp acts, as in the paper.
    """
    where = generator.device if generator is not None else x.device  # draw where the generator lives
    noise = ((torch.rand(x.shape, generator=generator, device=where) * 2 - 1) * (2 * eps)).to(x.device)
    x_noisy = (x + noise).clamp(0.0, 1.0)  # (B, C, H, W)
    alpha = cfg.resolve_step_size(eps, "n-fgsm")
    with eval_mode(model):
        x_adv = pgd(model, x_noisy, y, cross_entropy_sum, eps=alpha, step_size=alpha, steps=1,
                    random_start=False, generator=generator)
    return _train_ce(forward(model, _like_input(x_adv, cfg), cfg), y, cfg)
