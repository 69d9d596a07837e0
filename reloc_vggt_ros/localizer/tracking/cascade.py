"""Escalation cascade: the cheap query first, a fuller pass where it fails or is weak.

The cheap pass is the node's configured localizer (the ``realtime`` preset ships); the fuller
pass is another preset's query settings over the same map (``GeometricLocalizer.variant``: finer
pyramid, more keypoints, more keyframes). A cheap answer is *weak* when it is OK with fewer than
``weak_below_inliers`` unique inliers; then, or when it is not OK, the fuller pass runs if the
cheap pass's time plus the fuller pass's expected time (running mean of its past runs) fits
``budget_ms``. An OK answer is also weak when its :func:`expected_error` (1 px per inlier, as a
fraction of the map's keyframe spacing) is above ``weak_above_expected_error``: the two rules
see different weaknesses (little evidence; evidence too coarse for the map's scale, e.g. a
half-size image) and were each chosen leave-one-scene-out (``bench/cascade.py``). The fuller answer replaces the cheap one when it is OK or the cheap one was not.
"""

from __future__ import annotations

import time

import numpy as np

from ...geometry import Intrinsics, apply_T, invert_T
from ..base import Localizer, PosePrior, RelocResult
from ..geometric.pnp import Correspondences
from .config import CascadeSettings

__all__ = ["Cascade", "expected_error", "full_pass"]


def expected_error(result: RelocResult, intrinsics: Intrinsics, baseline_m: float) -> float | None:
    """The answer's expected position error as a fraction of the map's keyframe spacing: median
    inlier depth / (focal length in px x sqrt(inliers)), i.e. what N points each 1 px off give,
    over ``baseline_m`` (the median nearest-keyframe distance, the unit recall is measured in).
    Scale-free and resolution-aware: the same cheap answer is weaker in a half-size image (half
    the focal length) or seen from twice as far; the covariance is not used (on the shared scenes
    it was 1-2x the real error on the facades and 3-5x on the temple object scan). None without a
    pose, inliers or baseline."""
    corr = result.diagnostics.get("correspondences")
    if result.T_world_cam is None or not isinstance(corr, Correspondences) or len(corr.x3d) == 0 or baseline_m <= 0:
        return None
    depth = float(np.median(apply_T(invert_T(result.T_world_cam), np.asarray(corr.x3d, float))[:, 2]))
    focal = 0.5 * (intrinsics.pinhole.fx + intrinsics.pinhole.fy)
    if depth <= 0 or focal <= 0:
        return None
    return depth / (focal * np.sqrt(len(corr.x3d))) / baseline_m


def full_pass(cheap: Localizer, settings: CascadeSettings) -> Localizer | None:
    """The fuller pass over ``cheap``'s map, or None when there is none (disabled, or a backend
    without presets over a shared map)."""
    if not settings.enabled:
        return None
    from ...config import from_mapping, to_mapping
    from ..geometric import PRESETS, GeometricLocalizer

    if not isinstance(cheap, GeometricLocalizer):
        return None
    base = PRESETS[settings.full_preset]
    top_k = settings.full_top_k or 2 * cheap.config.query.top_k
    query = {**to_mapping(base.query), "top_k": top_k}
    config = from_mapping(type(base), {"map": to_mapping(cheap.config.map), "query": query,
                                       "lk": to_mapping(base.lk), "acceptance": to_mapping(cheap.config.acceptance),
                                       "num_threads": cheap.config.num_threads}, "tracking.cascade")
    return cheap.variant(config)


class Cascade:
    """A :class:`Localizer`: ``cheap``, then ``full`` where the cheap answer fails or is weak."""

    def __init__(self, cheap: Localizer, full: Localizer | None, settings: CascadeSettings) -> None:
        self.cheap, self.full, self.settings = cheap, full, settings
        self.name = cheap.name
        self._full_ms: list[float] = []

    def baseline_m(self) -> float:
        """The map's median nearest-keyframe distance (0 when the backend does not say)."""
        return float(getattr(self.cheap, "keyframe_spacing_m", 0.0))

    def weak(self, result: RelocResult, intrinsics: Intrinsics | None = None) -> str:
        """Why ``result`` should be escalated ('' when it is good enough)."""
        if not result.ok:
            return f"cheap pass {result.status.value}"
        s = self.settings
        if result.num_inliers < s.weak_below_inliers:
            return f"cheap pass weak: {result.num_inliers} inliers < {s.weak_below_inliers}"
        if s.weak_above_expected_error and intrinsics is not None:
            err = expected_error(result, intrinsics, self.baseline_m())
            if err is not None and err > s.weak_above_expected_error:
                return (f"cheap pass weak: expected error {err:.2e} of the keyframe spacing > "
                        f"{s.weak_above_expected_error:.2e}")
        return ""

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        t0 = time.perf_counter()
        res = self.cheap.localize(image_bgr, intrinsics, stamp_ns, prior)
        cheap_ms = 1e3 * (time.perf_counter() - t0)
        res.diagnostics.update(cascade="cheap", cheap_ms=cheap_ms)
        why = self.weak(res, intrinsics) if self.full is not None else ""
        if not why:
            return res
        expected = float(np.mean(self._full_ms)) if self._full_ms else 0.0
        budget = self.settings.budget_ms
        if budget and cheap_ms + expected > budget:
            res.diagnostics.update(cascade_skipped=f"{why}; fuller pass expected {expected:.0f} ms, over the "
                                                   f"budget ({cheap_ms:.0f} + {expected:.0f} > {budget:.0f} ms)")
            return res
        t1 = time.perf_counter()
        full = self.full.localize(image_bgr, intrinsics, stamp_ns, prior)
        full_ms = 1e3 * (time.perf_counter() - t1)
        self._full_ms = (self._full_ms + [full_ms])[-20:]
        if not full.ok and res.ok:
            res.diagnostics.update(cascade="cheap", escalated=why, full_ms=full_ms,
                                   full_reason=f"{full.status.value}: {full.reason}")
            return res
        full.diagnostics.update(cascade="full", escalated=why, cheap_ms=cheap_ms, full_ms=full_ms)
        return full

    def refresh(self) -> None:
        self.cheap.refresh()
        if self.full is not None:
            self.full.refresh()
