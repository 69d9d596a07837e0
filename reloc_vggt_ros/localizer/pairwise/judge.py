"""The ``pairwise`` backend's judge: confidence and OK / LOW_CONFIDENCE.

Confidence ``1 - exp(-median pair inliers / inliers_scale)``. OK needs ``min_pairs`` consistent
pairs whose rays span ``min_ray_angle_deg`` (nearly parallel rays leave the position along them
open), ``min_confidence`` and a positive definite covariance.
"""

from __future__ import annotations

import math

import numpy as np

from ..base import RelocStatus
from .config import PairwiseConfig
from .fusion import Fused

__all__ = ["confidence", "judge"]


def confidence(fused: Fused, cfg: PairwiseConfig) -> float:
    return 1.0 - math.exp(-float(np.median(fused.diagnostics["pair_inliers"])) / cfg.inliers_scale)


def judge(fused: Fused, conf: float, cfg: PairwiseConfig) -> tuple[RelocStatus, str]:
    if len(fused.used) < cfg.min_pairs:
        return RelocStatus.LOW_CONFIDENCE, f"{len(fused.used)} consistent pairs < min_pairs {cfg.min_pairs}"
    if fused.span_deg < cfg.min_ray_angle_deg:
        return RelocStatus.LOW_CONFIDENCE, (f"the keyframes' rays span {fused.span_deg:.2f} deg "
                                            f"< min_ray_angle_deg {cfg.min_ray_angle_deg}: no position along them")
    if conf < cfg.min_confidence:
        return RelocStatus.LOW_CONFIDENCE, f"confidence {conf:.2f} < min_confidence {cfg.min_confidence}"
    cov = fused.covariance
    if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov).min() <= 0:
        return RelocStatus.LOW_CONFIDENCE, "covariance is not positive definite"
    return RelocStatus.OK, ""
