"""rcnas: Reinforced Compressive Neural Architecture Search (RC-NAS, KDD 2024) as a toolkit.

Given a task setting (dataset, attack, teacher, MACs budget), an RL agent finds the sub-network of
the teacher that is most robust to the attack within the budget.
"""
from __future__ import annotations

__version__ = "0.1.0"

from rcnas.errors import BadInput
from rcnas.space.arch import Arch

__all__ = ["Arch", "BadInput", "__version__"]
