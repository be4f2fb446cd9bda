"""Robustness evaluation (clean, PGD-20, CW-40, AutoAttack with per-sample worst case), CPU
latency, and the model card that records them."""
from __future__ import annotations

from rcnas.evaluate.card import ModelCard
from rcnas.evaluate.robustness import (DEFAULT_ATTACKS, GRAD_MASKING_FRACTION, RobustnessResult,
                                       evaluate_robustness, latency_method, measure_latency)

__all__ = ["DEFAULT_ATTACKS", "GRAD_MASKING_FRACTION", "ModelCard", "RobustnessResult",
           "evaluate_robustness", "latency_method", "measure_latency"]
