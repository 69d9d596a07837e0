"""Weights-free map-free localizer: two-view geometry against one posed reference image.

Track 1 (:meth:`GeometricMapFree.localize`), stages:

1. features (``localizer.geometric.features``): RootSIFT of the query (the reference's once);
2. two-view pose (``localizer.geometric.relative_pose.two_view``): matches, 5-point LO-RANSAC,
   optional guided re-matching -> rotation and translation *direction*;
3. metric scale, in order of availability: the reference's depth image (its inlier keypoints
   back-projected, PnP of the query on them: ``scale = "depth"``), a second posed reference view
   (the reference's keypoints triangulated with it under the known poses, then the same PnP:
   ``scale = "stereo"``), else none: the translation
   has unit length, ``scale = "unknown"``, the covariance is unbounded along the baseline and
   the result is LOW_CONFIDENCE (never an invented scale);
4. covariance and judgement (:func:`_judge`).

Track 2 (:meth:`GeometricMapFree.localize_sequence`), with the device's own tracking
(``QueryFrame.T_odom_cam``): the query frames are posed views in the odometry frame, so the
*reference* is the unknown camera there. Points triangulated across the query frames (known
odometry poses) give the reference a PnP pose in the odometry frame; with reference depth (or a
second reference view) the frames, a rig with the odometry as extrinsics, get a generalized PnP on
the reference's 3D keypoints too, and both registrations are fused by their covariances (after
checking that they agree on the scale); without either, the per-frame relative poses are
intersected (``relative_pose.intersect_rays``) and refined on all frames' Sampson errors. The
registration must agree with the frames' own two-view rotations and directions (at least half of
them); every frame's pose follows from its odometry (``scale = "odometry"``, ``"odometry+depth"``
or ``"depth"``). Without odometry each frame is localized alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config import setting
from ..errors import ConfigError, DataError
from ..geometry import Intrinsics, invert_T, is_valid_T, rotation_error_deg, transform_pose_covariance
from ..geometry.gating import fuse_poses
from ..geometry.multiview import pose_covariance_of
from ..localizer.base import RelocResult, RelocStatus
from ..localizer.geometric.config import FeatureConfig, TriangulationConfig
from ..localizer.geometric.features import Features, extract_features, undistorted
from ..localizer.geometric.pnp import RigObservations, pose_covariance, rig_pose_covariance, solve_pnp, solve_rig_pnp
from ..localizer.geometric.relative_pose import (RelativeObservation, TwoView, TwoViewSettings, intersect_rays,
                                                 joint_covariance, observation, refine_jointly,
                                                 relative_covariance, two_view)
from ..localizer.geometric.triangulation import View, backproject_depth, triangulate_keyframe
from .base import SCALE_UNKNOWN, QueryFrame, Reference
from .reference import check_reference

__all__ = ["GeometricMapFreeConfig", "GeometricMapFree", "metric_depth"]

logger = logging.getLogger(__name__)

MAX_DEPTH_M = 500.0      # a larger median is millimetres (or garbage) read as metres


@dataclass(frozen=True)
class GeometricMapFreeConfig:
    """Settings of the weights-free map-free localizer."""

    features: FeatureConfig = setting(factory=lambda: FeatureConfig(max_keypoints=4096, max_edge_px=1024),
                                      doc="RootSIFT of reference and query")
    two_view: TwoViewSettings = setting(factory=TwoViewSettings, doc="matching and essential matrix")
    pnp_max_reproj_px: float = setting(4.0, "PnP inlier threshold on depth-backprojected points (px)")
    min_scale_inliers: int = setting(12, "PnP inliers the depth (or triangulated-point) scale needs")
    max_scale_rotation_deg: float = setting(5.0, "PnP and essential-matrix rotations must agree within this")
    max_two_view_gap_deg: float = setting(5.0, "Track 2: at least half of the frames' own two-view rotations and "
                                               "directions must agree with the registration within this")
    max_scale_disagreement: float = setting(0.1, "Track 2 with depth: odometry and depth registrations at most "
                                                 "this fraction of the reference's distance apart")
    depth_rel_sigma: float = setting(0.05, "relative error of the depth image (scales the baseline sigma)")
    triangulation: TriangulationConfig = setting(factory=TriangulationConfig, doc="Track 2 points across frames")
    min_inliers: int = setting(30, "inliers (two-view, summed over Track 2 frames) an OK pose needs")
    inliers_scale: float = setting(40.0, "confidence 1 - exp(-inliers / inliers_scale)")
    min_confidence: float = setting(0.5, "confidence an OK pose needs")

    def __post_init__(self) -> None:
        for name in ("pnp_max_reproj_px", "max_scale_rotation_deg", "max_two_view_gap_deg", "max_scale_disagreement",
                     "depth_rel_sigma", "inliers_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_scale_inliers < 4:
            raise ConfigError(f"min_scale_inliers must be >= 4, got {self.min_scale_inliers}")
        if self.min_inliers < 5:
            raise ConfigError(f"min_inliers must be >= 5, got {self.min_inliers}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


def check_image(image: np.ndarray, intr: Intrinsics, what: str) -> str:
    """'' or why ``image`` cannot be used with ``intr`` (wrong type, or the intrinsics of another size)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        return f"{what} image must be a uint8 [H,W] or [H,W,3] array"
    h, w = image.shape[:2]
    if (w, h) != (intr.width, intr.height):
        return f"{what} image is {w}x{h} but its intrinsics are for {intr.width}x{intr.height}"
    return ""


def metric_depth(depth_m: np.ndarray) -> np.ndarray:
    """A checked reference depth (``reference.check_reference``) as float64 metres, 0 where
    invalid; DataError where its median reads as millimetres rather than metres."""
    depth = np.asarray(depth_m, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    med = float(np.median(depth[valid]))
    if med > MAX_DEPTH_M:
        raise DataError(f"reference depth median {med:g} is not plausible in metres (> {MAX_DEPTH_M:g}); "
                        "millimetres? divide by 1000")
    return np.where(valid, depth, 0.0)


def _confidence(n_inliers: int, cfg: GeometricMapFreeConfig) -> float:
    return 1.0 - math.exp(-n_inliers / cfg.inliers_scale)


def _judge(n_inliers: int, confidence: float, cov: np.ndarray, scale: str, cfg: GeometricMapFreeConfig,
           veto: str = "") -> tuple[RelocStatus, str]:
    """OK only with a metric scale, enough inliers and confidence, a positive definite covariance
    and no ``veto`` (a failed consistency check of the estimate, its reason)."""
    if scale == SCALE_UNKNOWN:
        return RelocStatus.LOW_CONFIDENCE, "no source of metric scale (no depth, no odometry): " \
                                           "translation direction only, unit length"
    if n_inliers < cfg.min_inliers:
        return RelocStatus.LOW_CONFIDENCE, f"{n_inliers} inliers < min_inliers {cfg.min_inliers}"
    if confidence < cfg.min_confidence:
        return RelocStatus.LOW_CONFIDENCE, f"confidence {confidence:.2f} < min_confidence {cfg.min_confidence}"
    if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov).min() <= 0:
        return RelocStatus.LOW_CONFIDENCE, "covariance is not positive definite"
    if veto:
        return RelocStatus.LOW_CONFIDENCE, veto
    return RelocStatus.OK, ""


class GeometricMapFree:
    """:class:`~reloc_vggt_ros.mapfree.base.MapFreeLocalizer`, weights-free (module docstring)."""

    name = "geometric"

    def __init__(self, config: GeometricMapFreeConfig | None = None) -> None:
        self.config = config or GeometricMapFreeConfig()
        self._ref: Reference | None = None
        self._ref_feats: Features | None = None
        self._ref_points: np.ndarray | None = None     # [N,3] keypoints in the reference camera (depth)
        self._scale_source = "depth"                   # where _ref_points come from: "depth" or "stereo"

    def set_reference(self, reference: Reference) -> None:
        check_reference(reference)
        depth = None if reference.depth_m is None else metric_depth(reference.depth_m)
        feats = self._features(reference.image_bgr, reference.intrinsics)
        # geometry runs on ideal pixels of the pinhole camera (keypoints undistorted)
        self._ref = replace(reference, intrinsics=reference.intrinsics.pinhole)
        self._ref_feats = feats
        self._scale_source = "depth"
        if depth is not None:
            self._ref_points = backproject_depth(feats, self._ref.intrinsics, np.eye(4), depth)
        elif reference.second is not None:
            self._ref_points, self._scale_source = self._stereo_points(reference, feats), "stereo"
        else:
            self._ref_points = None

    def _stereo_points(self, reference: Reference, feats: Features) -> np.ndarray | None:
        """The reference keypoints [N,3] in its camera frame (NaN where none), triangulated with
        the second posed view (the map's triangulation settings); None if fewer than
        ``min_scale_inliers`` triangulate."""
        second = reference.second
        assert second is not None and self._ref is not None
        T_ref = np.asarray(reference.T_world_cam, float)
        other = View(self._features(second.image_bgr, second.intrinsics), second.intrinsics.pinhole,
                     invert_T(T_ref) @ np.asarray(second.T_world_cam, float))
        with np.errstate(divide="ignore", invalid="ignore"):
            points, _ = triangulate_keyframe(View(feats, self._ref.intrinsics, np.eye(4)), [other],
                                             self.config.triangulation)
        n = int(np.all(np.isfinite(points), axis=1).sum())
        logger.info("reference %s: %d keypoints triangulated with the second view", reference.name, n)
        return points if n >= self.config.min_scale_inliers else None

    def _features(self, image: np.ndarray, camera: Intrinsics) -> Features:
        return undistorted(extract_features(image, self.config.features), camera)

    def _reference(self) -> tuple[Reference, Features]:
        if self._ref is None or self._ref_feats is None:
            raise DataError("no reference set: call set_reference first")
        return self._ref, self._ref_feats

    # --- Track 1 ---------------------------------------------------------------------------

    def localize(self, query: QueryFrame) -> RelocResult:
        ref, ref_feats = self._reference()
        t0 = time.perf_counter()
        bad = check_image(query.image_bgr, query.intrinsics, "query")
        if bad:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=bad)
        cfg = self.config
        feats = self._features(query.image_bgr, query.intrinsics)
        query = replace(query, intrinsics=query.intrinsics.pinhole)
        tv, why = two_view(ref_feats, ref.intrinsics, feats, query.intrinsics, cfg.two_view)
        diag: dict[str, Any] = {"method": "two_view", "num_features": len(feats)}
        if tv is None:
            diag.update(scale=SCALE_UNKNOWN, total_ms=1e3 * (time.perf_counter() - t0))
            return RelocResult(RelocStatus.NO_MATCH, reason=why, diagnostics=diag)
        diag.update(num_matches=tv.num_matches, num_inliers=tv.num_inliers, first_inliers=tv.num_first_inliers)
        obs = observation(0, tv, ref.intrinsics, np.eye(4), query.intrinsics)
        T_ref_q = invert_T(tv.T_b_a)                       # unit baseline
        # the essential-matrix pose itself (unit baseline), also when depth scales the answer
        diag["two_view_T_world_cam"] = (np.asarray(ref.T_world_cam, float) @ T_ref_q).tolist()
        scaled = self._depth_pose(tv, query.intrinsics, diag)
        if scaled is not None:
            T_ref_q, cov, scale = scaled[0], scaled[1], self._scale_source
        else:
            cov, scale = relative_covariance(obs, T_ref_q, query.intrinsics), SCALE_UNKNOWN
        diag.update(scale=scale, total_ms=1e3 * (time.perf_counter() - t0))
        return self._result(T_ref_q, cov, tv.num_inliers, scale, diag)

    def _result(self, T_ref_q: np.ndarray, cov_ref: np.ndarray, n_inliers: int, scale: str,
                diag: dict[str, Any], veto: str = "") -> RelocResult:
        """The query pose in the reference's world frame, judged."""
        T_world_ref = np.asarray(self._reference()[0].T_world_cam, float)
        T = T_world_ref @ T_ref_q
        cov = transform_pose_covariance(cov_ref, T_ref_q, T_a_b=T_world_ref)
        confidence = _confidence(n_inliers, self.config)
        status, reason = _judge(n_inliers, confidence, cov, scale, self.config, veto)
        return RelocResult(status, T, cov, confidence, n_inliers, reason, diag)

    def _depth_pose(self, tv: TwoView, intr_q: Intrinsics, diag: dict[str, Any]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(T_ref_query, covariance)`` in metres from the reference depth, or None (noted why)."""
        if self._ref_points is None:
            return None
        cfg = self.config
        X = self._ref_points[tv.pairs[:, 0]]
        ok = np.all(np.isfinite(X), axis=1)
        diag["depth_matches"] = int(ok.sum())
        if ok.sum() < cfg.min_scale_inliers:
            diag["depth_scale"] = f"only {int(ok.sum())} inliers have depth (< {cfg.min_scale_inliers})"
            return None
        pnp = solve_pnp(tv.x_b[ok], X[ok], intr_q, cfg.pnp_max_reproj_px)
        n = 0 if pnp is None else int(pnp.inliers.sum())
        diag["depth_pnp_inliers"] = n
        if pnp is None or n < cfg.min_scale_inliers:
            diag["depth_scale"] = f"PnP on the depth points has {n} inliers (< {cfg.min_scale_inliers})"
            return None
        T_ref_q = pnp.T_world_cam
        disagree = rotation_error_deg(T_ref_q[:3, :3], invert_T(tv.T_b_a)[:3, :3])
        diag["depth_rotation_disagreement_deg"] = disagree
        if disagree > cfg.max_scale_rotation_deg:
            diag["depth_scale"] = f"PnP rotation {disagree:.1f} deg from the essential matrix's"
            return None
        cov, _ = pose_covariance(T_ref_q, tv.x_b[ok][pnp.inliers], X[ok][pnp.inliers], intr_q)
        b = T_ref_q[:3, 3]
        cov[:3, :3] += (cfg.depth_rel_sigma ** 2) * np.outer(b, b)    # depth error scales the baseline
        return T_ref_q, cov

    # --- Track 2 ---------------------------------------------------------------------------

    def localize_sequence(self, queries: Sequence[QueryFrame]) -> list[RelocResult]:
        if not queries:
            return []
        ref, ref_feats = self._reference()
        bad = [check_image(q.image_bgr, q.intrinsics, f"query {q.name or i}") for i, q in enumerate(queries)]
        bad += ["" if q.T_odom_cam is None or is_valid_T(np.asarray(q.T_odom_cam, float))
                else f"query {q.name or i}: T_odom_cam is not a finite rigid transform" for i, q in enumerate(queries)]
        if any(q.T_odom_cam is None for q in queries) or len(queries) < 2 or any(bad):
            if any(bad):
                logger.warning("Track 2 falls back to single frames: %s", next(b for b in bad if b))
            return [self.localize(q) for q in queries]
        t0 = time.perf_counter()
        cfg = self.config
        feats = [self._features(q.image_bgr, q.intrinsics) for q in queries]
        queries = [replace(q, intrinsics=q.intrinsics.pinhole) for q in queries]
        poses = [np.asarray(q.T_odom_cam, float) for q in queries]
        obs: list[RelativeObservation] = []
        tvs: dict[int, TwoView] = {}                 # a = query frame k, b = the reference
        for k, (q, f) in enumerate(zip(queries, feats)):
            tv, _ = two_view(f, q.intrinsics, ref_feats, ref.intrinsics, cfg.two_view)
            if tv is not None:
                obs.append(observation(k, tv, q.intrinsics, poses[k], ref.intrinsics))
                tvs[k] = tv
        diag: dict[str, Any] = {"method": "sequence", "frames": len(queries), "frames_matched": len(obs),
                                "inliers_per_frame": [o.num_inliers for o in obs]}
        n_inl = sum(o.num_inliers for o in obs)
        regs = {"odometry": self._register_reference(queries, feats, poses, tvs, diag),
                self._scale_source: self._register_on_depth(queries, poses, tvs, diag)}
        regs = {k: v for k, v in regs.items() if v is not None}
        veto = ""
        if len(regs) == 2:
            (T_o, P_o), (T_d, P_d) = regs["odometry"], regs[self._scale_source]
            veto = self._scale_disagreement(T_o, T_d, poses, diag)
            T_odom_ref, cov_ref = fuse_poses(T_d, P_d, T_o, P_o)
            how, scale = "triangulated_pnp+depth_rig_pnp", f"odometry+{self._scale_source}"
        elif regs:
            scale, (T_odom_ref, cov_ref) = next(iter(regs.items()))
            how = "triangulated_pnp" if scale == "odometry" else "depth_rig_pnp"
        elif len(obs) >= 2 and (solved := intersect_rays(obs)) is not None:
            # no structure to register on: the rays' intersection, refined on the Sampson errors
            # (weak along the rays when the window is short next to the reference's distance)
            T_odom_ref = refine_jointly(obs, solved[0], ref.intrinsics)
            cov_ref, how, scale = joint_covariance(obs, T_odom_ref, ref.intrinsics), "ray_intersection", "odometry"
            diag["joint_refinement_shift"] = float(np.linalg.norm(T_odom_ref[:3, 3] - solved[0][:3, 3]))
        else:
            diag["scale"] = SCALE_UNKNOWN
            logger.info("Track 2: no metric registration of the reference (%d frames matched); single frames",
                        len(obs))
            return [self.localize(q) for q in queries]
        veto = veto or self._ray_disagreement(T_odom_ref, obs, diag)
        diag.update(registration=how, scale=scale, total_ms=1e3 * (time.perf_counter() - t0))
        out = []
        for T_odom_k in poses:
            def ref_q(T_or: np.ndarray, T_ok: np.ndarray = T_odom_k) -> np.ndarray:
                return invert_T(T_or) @ T_ok
            cov_k = pose_covariance_of(ref_q, T_odom_ref, cov_ref)
            out.append(self._result(ref_q(T_odom_ref), cov_k, n_inl, scale, dict(diag), veto))
        return out

    def _register_reference(self, queries: Sequence[QueryFrame], feats: list[Features], poses: list[np.ndarray],
                            tvs: dict[int, TwoView], diag: dict[str, Any]
                            ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(T_odom_ref, covariance)`` by PnP of the reference on points triangulated across the
        query frames under their odometry (the scale is the odometry's)."""
        ref, ref_feats = self._reference()
        cfg = self.config
        x2d, x3d = [], []
        for k, tv in tvs.items():
            others = [View(feats[j], queries[j].intrinsics, poses[j]) for j in range(len(queries)) if j != k]
            with np.errstate(divide="ignore", invalid="ignore"):     # points at infinity are dropped there
                points, _ = triangulate_keyframe(View(feats[k], queries[k].intrinsics, poses[k]), others,
                                                 cfg.triangulation)
            X = points[tv.pairs[:, 0]]
            ok = np.all(np.isfinite(X), axis=1)
            x2d.append(ref_feats.keypoints_px[tv.pairs[ok, 1]])
            x3d.append(X[ok])
        diag["triangulated_matches"] = sum(len(x) for x in x2d)
        if diag["triangulated_matches"] < cfg.min_scale_inliers:
            return None
        x2d_all, x3d_all = np.concatenate(x2d), np.concatenate(x3d)
        pnp = solve_pnp(x2d_all, x3d_all, ref.intrinsics, cfg.pnp_max_reproj_px)
        n = 0 if pnp is None else int(pnp.inliers.sum())
        diag["triangulated_pnp_inliers"] = n
        if pnp is None or n < cfg.min_scale_inliers:
            return None
        cov, _ = pose_covariance(pnp.T_world_cam, x2d_all[pnp.inliers], x3d_all[pnp.inliers], ref.intrinsics)
        return pnp.T_world_cam, cov

    def _register_on_depth(self, queries: Sequence[QueryFrame], poses: list[np.ndarray], tvs: dict[int, TwoView],
                           diag: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(T_odom_ref, covariance)`` from the reference depth: the query frames, a rig with the
        odometry as extrinsics, by generalized PnP on the reference's back-projected keypoints."""
        if self._ref_points is None:
            return None
        cfg = self.config
        cams = []
        for k, tv in tvs.items():
            X = self._ref_points[tv.pairs[:, 1]]
            ok = np.all(np.isfinite(X), axis=1)
            cams.append(RigObservations(tv.x_a[ok], X[ok], queries[k].intrinsics, poses[k]))
        diag["depth_matches"] = sum(len(c.x2d) for c in cams)
        if diag["depth_matches"] < cfg.min_scale_inliers:
            return None
        solved = solve_rig_pnp(cams, cfg.pnp_max_reproj_px)
        n = 0 if solved is None else sum(int(m.sum()) for m in solved[1])
        diag["depth_pnp_inliers"] = n
        if solved is None or n < cfg.min_scale_inliers:
            return None
        T_ref_odom = solved[0]
        cov, _ = rig_pose_covariance(T_ref_odom, [c.subset(m) for c, m in zip(cams, solved[1])])
        T_odom_ref = invert_T(T_ref_odom)
        cov = pose_covariance_of(invert_T, T_ref_odom, cov)
        b = T_odom_ref[:3, 3] - np.mean([T[:3, 3] for T in poses], axis=0)
        cov[:3, :3] += (cfg.depth_rel_sigma ** 2) * np.outer(b, b)    # depth error scales the distance
        return T_odom_ref, cov

    def _scale_disagreement(self, T_odom: np.ndarray, T_depth: np.ndarray, poses: list[np.ndarray],
                            diag: dict[str, Any]) -> str:
        """'' or why the odometry's and the depth's registrations of the reference are too far apart
        (relative to the reference's distance from the query frames) to be fused."""
        c = np.mean([T[:3, 3] for T in poses], axis=0)
        gap = float(np.linalg.norm(T_odom[:3, 3] - T_depth[:3, 3]) / max(np.linalg.norm(T_depth[:3, 3] - c), 1e-9))
        diag["odometry_depth_gap_rel"] = gap
        if gap > self.config.max_scale_disagreement:
            return (f"odometry and reference depth place the reference {100 * gap:.0f}% of its distance apart "
                    f"(> max_scale_disagreement {self.config.max_scale_disagreement:g}): one scale is wrong")
        return ""

    def _ray_disagreement(self, T_odom_ref: np.ndarray, obs: list[RelativeObservation], diag: dict[str, Any]) -> str:
        """'' or why the registered reference contradicts the frames' own two-view poses: each
        frame's essential matrix gives the reference's rotation and the direction towards it,
        independent of any scale, and with exact odometry the registration agrees with them. A
        single wide-angle pair can be several degrees off on its own, so at least half of the
        frames must agree within ``max_two_view_gap_deg``. A frame within 10 % of the window's
        largest distance to the reference (e.g. the node's remembered reference frame itself)
        has no baseline: its direction is not compared."""
        if not obs:
            return ""
        C = T_odom_ref[:3, 3]
        rot = np.array([rotation_error_deg(T_odom_ref[:3, :3], o.R_world_query) for o in obs])
        dist = np.array([float(np.linalg.norm(C - o.centre_kf)) for o in obs])
        ray = np.array([float(np.degrees(np.arccos(np.clip(o.direction @ (C - o.centre_kf) / max(d, 1e-12), -1, 1))))
                        if d > 0.1 * dist.max() else 0.0 for o, d in zip(obs, dist)])
        diag.update(two_view_rotation_gap_deg=rot.tolist(), two_view_direction_gap_deg=ray.tolist())
        limit = self.config.max_two_view_gap_deg
        agree = int(np.sum((rot <= limit) & (ray <= limit)))
        if 2 * agree < len(obs):
            return (f"only {agree} of {len(obs)} frames' own two-view poses agree with the registered reference "
                    f"within max_two_view_gap_deg {limit:g} (gaps {np.round(rot, 1).tolist()} deg rotation, "
                    f"{np.round(ray, 1).tolist()} deg direction): odometry and images disagree")
        return ""
