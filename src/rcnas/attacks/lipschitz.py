"""Empirical local Lipschitz constant of the logits around the data (the RL agent's LIPS feature).

For each sample, ||f(x) - f(x_adv)||_1 / ||x - x_adv||_inf with f the logits and x_adv found by
an attack: a lower bound on the local Lipschitz constant (L-inf to L1) in the eps ball, larger
for models whose outputs move more under a small input change.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rcnas.attacks.base import Attack, check_batch, frozen_eval


def lipschitz_ratios(logits: Tensor, logits_adv: Tensor, x: Tensor, x_adv: Tensor) -> Tensor:
    """Per-sample ||logits - logits_adv||_1 / ||x - x_adv||_inf; NaN where x_adv == x."""
    num = (logits.float() - logits_adv.float()).abs().flatten(1).sum(dim=1)
    den = (x.float() - x_adv.float()).abs().flatten(1).amax(dim=1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float32).tiny),
                       torch.full_like(num, float("nan")))


def mean_ratio(ratios: Tensor) -> float:
    """Mean over the samples that were perturbed; 0.0 when none was (nothing was measured)."""
    kept = ratios[~torch.isnan(ratios)]
    return float(kept.mean()) if kept.numel() else 0.0


def local_lipschitz(model: nn.Module, x: Tensor, y: Tensor, attack: Attack) -> float:
    """Mean over samples of ||f(x) - f(x_adv)||_1 / ||x - x_adv||_inf; unperturbed samples skipped."""
    x_adv = attack(model, x, y)
    x32, _ = check_batch(x, y)
    with frozen_eval(model), torch.no_grad():
        ratios = lipschitz_ratios(model(x32), model(x_adv.to(torch.float32)), x32, x_adv)
    return mean_ratio(ratios)
