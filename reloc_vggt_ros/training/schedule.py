"""Learning-rate schedule: linear warmup then cosine decay to ``min_lr_ratio`` of the peak."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.05) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based), for ``LambdaLR``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
