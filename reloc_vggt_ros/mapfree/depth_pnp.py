"""``depth_pnp``: the smallest weights-free map-free backend — PnP against the reference's depth.

The reference's SIFT keypoints with a valid depth become 3D points (the geometric backend's
``backproject_depth``); a query is matched to them (ratio test) and solved by PnP LO-RANSAC with
the geometric backend's covariance. It needs a reference depth image (it answers NO_MATCH with
the reason otherwise: no scale, and no essential-matrix path). It is the node's ``map_free``
mode default until the full weights-free two-view backend is registered; every stage is a
function of ``localizer/geometric``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import setting
from ..errors import ConfigError
from ..localizer.base import RelocResult, RelocStatus
from .base import QueryFrame, Reference
from .reference import check_reference

__all__ = ["DepthPnPConfig", "DepthPnPLocalizer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthPnPConfig:
    """Features, matching and the judge of ``depth_pnp``."""

    max_keypoints: int = setting(4096, "SIFT keypoints of the reference and of each query")
    max_edge_px: int = setting(1600, "longest image edge the detector sees (0 = native)")
    match_ratio: float = setting(0.8, "ratio test of query-reference matches")
    pnp_max_reproj_px: float = setting(4.0, "PnP RANSAC inlier threshold (px)")
    min_inliers: int = setting(30, "PnP inliers an OK pose needs")

    def __post_init__(self) -> None:
        if self.max_keypoints < 10 or self.min_inliers < 6:
            raise ConfigError("max_keypoints must be >= 10 and min_inliers >= 6")
        if not (0 < self.match_ratio <= 1 and self.pnp_max_reproj_px > 0):
            raise ConfigError("match_ratio must be in (0, 1] and pnp_max_reproj_px > 0")


class DepthPnPLocalizer:
    """Reference keypoints with depth -> 3D points; queries by 2D-3D matches and PnP."""

    name = "depth_pnp"

    def __init__(self, config: DepthPnPConfig) -> None:
        from ..localizer.geometric.config import FeatureConfig

        self.config = config
        self.features = FeatureConfig(max_keypoints=config.max_keypoints, max_edge_px=config.max_edge_px)
        self.reference: Reference | None = None
        self._points: np.ndarray = np.zeros((0, 3))
        self._descriptors: np.ndarray = np.zeros((0, 128), np.float32)

    def set_reference(self, reference: Reference) -> None:
        from ..localizer.geometric.features import extract_features
        from ..localizer.geometric.triangulation import backproject_depth

        ref = check_reference(reference)
        self.reference, self._points = ref, np.zeros((0, 3))
        if ref.depth_m is None:
            return
        feats = extract_features(ref.image_bgr, self.features)
        feats.keypoints_px = ref.intrinsics.undistort_px(feats.keypoints_px)     # ideal pixels of a lens camera
        X = backproject_depth(feats, ref.intrinsics, ref.T_world_cam, ref.depth_m)
        ok = np.all(np.isfinite(X), axis=1)
        self._points, self._descriptors = X[ok], feats.descriptors[ok]
        logger.info("depth_pnp: reference %s: %d of %d keypoints have depth", ref.name, int(ok.sum()), len(feats))

    def localize(self, query: QueryFrame) -> RelocResult:
        from ..localizer.geometric.features import extract_features
        from ..localizer.geometric.matching import match_descriptors
        from ..localizer.geometric.pnp import pose_covariance, solve_pnp

        ref, cfg = self.reference, self.config
        if ref is None:
            return RelocResult(RelocStatus.INVALID_INPUT, reason="depth_pnp: no reference set")
        if len(self._points) < cfg.min_inliers:
            why = "has no depth image" if ref.depth_m is None else f"has {len(self._points)} keypoints with depth"
            return RelocResult(RelocStatus.NO_MATCH, reason=f"depth_pnp: the reference {why}; it needs "
                               f">= min_inliers {cfg.min_inliers} (no other source of scale)", diagnostics={"scale": "unknown"})
        feats = extract_features(query.image_bgr, self.features)
        pairs = match_descriptors(feats.descriptors, self._descriptors, cfg.match_ratio)
        diagnostics = {"scale": "depth", "matches": len(pairs), "reference_points": len(self._points)}
        intr = query.intrinsics.pinhole
        x2d, x3d = query.intrinsics.undistort_px(feats.keypoints_px[pairs[:, 0]]), self._points[pairs[:, 1]]
        pnp = solve_pnp(x2d, x3d, intr, cfg.pnp_max_reproj_px) if len(pairs) >= 4 else None
        if pnp is None or pnp.inliers.sum() < 6:
            return RelocResult(RelocStatus.NO_MATCH, reason=f"depth_pnp: no pose from {len(pairs)} matches",
                               diagnostics=diagnostics)
        n_in = int(pnp.inliers.sum())
        cov, rms = pose_covariance(pnp.T_world_cam, x2d[pnp.inliers], x3d[pnp.inliers], intr)
        diagnostics["reproj_rms_px"] = rms
        confidence = float(1.0 - np.exp(-n_in / 40.0))
        ok = n_in >= cfg.min_inliers
        return RelocResult(RelocStatus.OK if ok else RelocStatus.LOW_CONFIDENCE, pnp.T_world_cam, cov, confidence,
                           n_in, "" if ok else f"{n_in} PnP inliers < min_inliers {cfg.min_inliers}", diagnostics)

    def localize_sequence(self, queries: Sequence[QueryFrame]) -> list[RelocResult]:
        return [self.localize(q) for q in queries]
