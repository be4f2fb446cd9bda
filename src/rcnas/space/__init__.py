"""The bottom floor: architectures (`Arch`) and the named teachers they are cut from (no torch here,
so costs and names answer without loading it)."""
from rcnas.space.arch import BLOCKS, STAGE_BASE, Arch, normalize_block

__all__ = ["Arch", "BLOCKS", "STAGE_BASE", "normalize_block"]
