"""Adversarial attacks on [0,1] images: clean, FGSM, PGD-N, CW-N, AutoAttack; local Lipschitz.

`make_attack("pgd20", 8/255)` builds one by name; `pgd(...)` is the projected-gradient core the
trainer also uses for TRADES/PGD-AT.
"""
from __future__ import annotations

from rcnas.attacks.base import ATTACKS, NORMS, Attack, check_eps, frozen_eval, make_attack, project
from rcnas.attacks.pgd import CW, FGSM, PGD, Clean, cross_entropy_sum, cw_margin, pgd
from rcnas.attacks.autoattack import AutoAttack
from rcnas.attacks.lipschitz import lipschitz_ratios, local_lipschitz

__all__ = [
    "ATTACKS", "NORMS", "Attack", "AutoAttack", "CW", "Clean", "FGSM", "PGD", "check_eps",
    "cross_entropy_sum", "cw_margin", "frozen_eval", "lipschitz_ratios", "local_lipschitz",
    "make_attack", "pgd", "project",
]
