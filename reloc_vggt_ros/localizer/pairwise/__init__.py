"""Late-fusion ``pairwise`` backend (Reloc3r-style): relative poses to retrieved keyframes, fused."""

from .config import PairwiseConfig
from .localizer import PairwiseLocalizer

__all__ = ["PairwiseConfig", "PairwiseLocalizer"]
