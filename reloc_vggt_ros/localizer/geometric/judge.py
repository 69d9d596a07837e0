"""The one place that judges a pose: its confidence and whether it is OK or LOW_CONFIDENCE.

Confidence of a PnP pose is the product of three saturating terms: the inlier count
(``1 - exp(-inliers / inliers_scale)``), the inlier ratio (full at ``good_inlier_ratio``) and the
inliers' image spread (full at ``good_spread`` of the image). A relative-pose (fallback) pose gets
0.8 of the count term. A pose is trusted when it has ``min_inliers``, ``min_confidence`` and a
positive definite covariance; otherwise it is returned as LOW_CONFIDENCE with the reason.

Where the matches fit more than one place of the map (``places``), :func:`choose_place` says
which one the answer is, or that it is ambiguous (then LOW_CONFIDENCE, reason "ambiguous: ...").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import RelocStatus
from .config import AcceptanceSettings

__all__ = ["Judgement", "pnp_confidence", "relative_confidence", "judge", "PlaceChoice", "choose_place"]


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


def judge(n_inliers: int, confidence: float, covariance: np.ndarray, acc: AcceptanceSettings,
          ambiguity: str = "") -> Judgement:
    """OK, or LOW_CONFIDENCE with the first failed test (``ambiguity``: :func:`choose_place`'s reason)."""
    if ambiguity:
        reason = ambiguity
    elif n_inliers < acc.min_inliers:
        reason = f"{n_inliers} inliers < min_inliers {acc.min_inliers}"
    elif confidence < acc.min_confidence:
        reason = f"confidence {confidence:.2f} < min_confidence {acc.min_confidence}"
    elif not np.all(np.isfinite(covariance)) or np.linalg.eigvalsh(covariance).min() <= 0:
        reason = "covariance is not positive definite"
    else:
        return Judgement(RelocStatus.OK, "")
    return Judgement(RelocStatus.LOW_CONFIDENCE, reason)


@dataclass(frozen=True)
class PlaceChoice:
    index: int                   # the place answered with (the best one when ambiguous)
    rivals: list[int]            # the places that fit about as well (the chosen one included)
    reason: str                  # "ambiguous: ..." when none can be preferred ('' otherwise)


def choose_place(inliers: list[int], centres: list[np.ndarray], radius_m: float, acc: AcceptanceSettings,
                 prior_centre: np.ndarray | None = None, prior_covariance: np.ndarray | None = None
                 ) -> PlaceChoice:
    """Which of the places (unique inliers, camera centres; one frame, the prior's too) is the answer.

    Rivals of the best place (most inliers) are the places with ``ambiguity_ratio`` of its inliers
    whose pose is farther than ``radius_m`` from it. With none the best place is the answer. With
    rivals, a prior picks the one place that fits it (centre within ``radius_m`` of the prior's, or
    within ``prior_gate_sigmas`` of its largest position sigma); otherwise the answer is ambiguous.
    """
    best = int(np.argmax(inliers))
    rivals = [i for i in range(len(inliers)) if i == best or (
        inliers[i] >= acc.ambiguity_ratio * inliers[best]
        and np.linalg.norm(centres[i] - centres[best]) > radius_m)]
    if len(rivals) == 1:
        return PlaceChoice(best, rivals, "")
    if prior_centre is not None:
        gate = radius_m
        if prior_covariance is not None and np.all(np.isfinite(prior_covariance)):
            sigma = math.sqrt(max(float(np.linalg.eigvalsh(np.asarray(prior_covariance)[:3, :3]).max()), 0.0))
            gate = max(gate, acc.prior_gate_sigmas * sigma)
        fits = [i for i in rivals if np.linalg.norm(centres[i] - prior_centre) <= gate]
        if len(fits) == 1:
            return PlaceChoice(fits[0], rivals, "")
        why = f"the pose prior fits {len(fits)} of them (gate {gate:.3g} m)"
    else:
        why = "no pose prior to choose one"
    where = ", ".join(f"{inliers[i]} inliers at ({', '.join(f'{v:.2f}' for v in centres[i])})" for i in rivals)
    return PlaceChoice(best, rivals, f"ambiguous: {len(rivals)} look-alike places fit ({where}); {why}")
