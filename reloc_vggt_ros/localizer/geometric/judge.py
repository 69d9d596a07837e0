"""The one place that judges a pose: its confidence and whether it is OK or LOW_CONFIDENCE.

Confidence of a PnP pose is the product of three saturating terms: the inlier count
(``1 - exp(-inliers / inliers_scale)``), the inlier ratio (full at ``good_inlier_ratio``) and the
inliers' image spread (full at ``good_spread`` of the image). A relative-pose (fallback) pose gets
0.8 of the count term. A pose is trusted when it has ``min_inliers``, ``min_confidence`` and a
positive definite covariance; otherwise it is returned as LOW_CONFIDENCE with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import RelocStatus
from .config import AcceptanceSettings

__all__ = ["Judgement", "pnp_confidence", "relative_confidence", "judge"]


@dataclass(frozen=True)
class Judgement:
    status: RelocStatus          # OK or LOW_CONFIDENCE
    reason: str                  # why it must not be trusted ('' when OK)


def pnp_confidence(n_inliers: int, inlier_ratio: float, spread: float, acc: AcceptanceSettings) -> float:
    """Confidence in [0, 1] of a PnP pose."""
    return ((1.0 - math.exp(-n_inliers / acc.inliers_scale)) * min(1.0, inlier_ratio / acc.good_inlier_ratio)
            * min(1.0, spread / acc.good_spread))


def relative_confidence(n_inliers: int, acc: AcceptanceSettings) -> float:
    """Confidence of a pose from relative poses (``n_inliers``: median per keyframe); at most 0.8."""
    return 0.8 * (1.0 - math.exp(-n_inliers / acc.inliers_scale))


def judge(n_inliers: int, confidence: float, covariance: np.ndarray, acc: AcceptanceSettings) -> Judgement:
    """OK, or LOW_CONFIDENCE with the first failed test."""
    if n_inliers < acc.min_inliers:
        reason = f"{n_inliers} inliers < min_inliers {acc.min_inliers}"
    elif confidence < acc.min_confidence:
        reason = f"confidence {confidence:.2f} < min_confidence {acc.min_confidence}"
    elif not np.all(np.isfinite(covariance)) or np.linalg.eigvalsh(covariance).min() <= 0:
        reason = "covariance is not positive definite"
    else:
        return Judgement(RelocStatus.OK, "")
    return Judgement(RelocStatus.LOW_CONFIDENCE, reason)
