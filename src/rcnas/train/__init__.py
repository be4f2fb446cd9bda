"""Training: standard and adversarial recipes (PGD-AT, TRADES, FGSM-RS, N-FGSM), checkpoints, resume.

    from rcnas.train import TrainConfig, fit
    result = fit(model, splits.train, splits.val, TrainConfig(recipe="pgd", epochs=10), info=splits.info,
                 out_dir="runs/teacher")
"""
from __future__ import annotations

from rcnas.train.checkpoint import load_weights, save_weights
from rcnas.train.config import ADVERSARIAL_RECIPES, FAST_RECIPES, RECIPE_NAMES, TrainConfig
from rcnas.train.loop import EMA, TrainResult, accuracy, epoch_seed, fit, guard_trips, lr_at
from rcnas.train.recipes import RECIPES, forward

__all__ = [
    "ADVERSARIAL_RECIPES", "EMA", "FAST_RECIPES", "RECIPES", "RECIPE_NAMES", "TrainConfig", "TrainResult",
    "accuracy", "epoch_seed", "fit", "forward", "guard_trips", "load_weights", "lr_at", "save_weights",
]
