"""The search space: architectures (`Arch`) and what a sub-network of a teacher may be."""
from rcnas.space.arch import BLOCKS, STAGE_BASE, Arch, normalize_block

__all__ = ["Arch", "BLOCKS", "STAGE_BASE", "normalize_block"]
