"""Weights-free geometric localizer: VLAD retrieval, 2D-3D matching, PnP, honest covariance.

Query pipeline: RootSIFT at the configured working resolution -> top-k keyframes by VLAD
similarity (half of them by distance to the prior pose when one is given) -> ratio + mutual
matching against each keyframe's triangulated keypoints -> poselib LO-RANSAC P3P with Cauchy
refinement -> covariance from the refinement Jacobian -> confidence from inlier count, inlier
ratio and image spread. When the retrieved keyframes hold too few 3D points, relative poses to
several keyframes (essential matrices) are intersected instead (``relative_fallback``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ...errors import ConfigError
from ...geometry import Intrinsics, so3_log
from ..retrieval import nearest_by_pose
from ..base import PosePrior, RelocResult, RelocStatus
from .features import FeatureConfig, extract_features
from .indexing import GeometricMap, consistent_keyframes, index_store
from .vocabulary import vlad
from .matching import match_descriptors, single_thread_blas
from .pnp import inlier_spread, pose_covariance, solve_pnp
from .scale_weighted import keypoint_sigma_px, refine_scale_weighted
from .relative_pose import intersect_rays, joint_covariance, refine_jointly, relative_observation
from .lk_refine import KeyframeImages, TrackSettings, track_inliers
from .triangulation import TriangulationConfig

if TYPE_CHECKING:
    from ...keyframes import KeyframeStore

__all__ = ["GeometricConfig", "PRESETS", "GeometricLocalizer", "index_store"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeometricConfig:
    """Map-side (``features``, ``triangulation``, ``vocabulary_words``) and query-side settings."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    query_features: FeatureConfig | None = None      # None = the keyframes' ``features``
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    vocabulary_words: int = 64
    top_k: int = 8
    match_ratio: float = 0.8
    max_points_per_keyframe: int = 0  # match only the N points seen in most views (0 = all)
    pnp_max_reproj_px: float = 4.0
    # refine the RANSAC pose with each match weighted by its query keypoint's size (finer SIFT
    # keypoints are localised better; see scale_weighted.py); the covariance is weighted alike
    scale_weighted: bool = False
    # after the first PnP, track each inlier's 3D point from its keyframe pixel into the query
    # (Lucas-Kanade, track_refine.py) and refine on the tracked points (sigma lk_sigma_px, the
    # rest keep their size sigma); needs scale_weighted. Keyframe images decoded on first use,
    # the most recently used kept up to lk_cache_mb (grayscale, 0.3 MB per 640x480 keyframe).
    refine_lk: bool = False
    lk_window_px: int = 7
    lk_max_shift_px: float = 1.0      # a track farther than this from its keypoint is dropped
    lk_max_fb_px: float = 0.25        # forward-backward disagreement allowed (keyframe pixels)
    # only points seen from the keyframe and the (PnP) query centre within this angle: LK moves a
    # window without warping it, which biases the track where the views differ much
    lk_max_angle_deg: float = 15.0
    lk_sigma_px: float = 0.15
    lk_cache_mb: float = 256.0
    min_inliers: int = 30
    min_confidence: float = 0.5
    inliers_scale: float = 40.0       # confidence term 1 - exp(-inliers / inliers_scale)
    good_inlier_ratio: float = 0.25   # inlier ratio at which that confidence term saturates
    good_spread: float = 0.05         # inlier hull / image area at which that term saturates
    # Map errors (keyframe poses, triangulation) are shared by many correspondences, so the
    # information stops growing like the inlier count: the PnP covariance is scaled by
    # max(1, inliers / max_independent_inliers). 0 disables (pure 2D-noise covariance).
    max_independent_inliers: int = 100
    relative_fallback: bool = True
    fallback_min_inliers: int = 30    # per keyframe, for the essential-matrix fallback
    num_threads: int = 0              # OpenCV threads; 0 = leave OpenCV's setting alone
    # retrieved keyframes matched concurrently (Python threads, each product on one BLAS thread:
    # the threads sleep when done, unlike OpenBLAS's own workers, which spin)
    match_threads: int = 1

    def __post_init__(self) -> None:
        if self.vocabulary_words < 1:
            raise ConfigError(f"vocabulary_words must be >= 1, got {self.vocabulary_words}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.match_ratio <= 1.0:
            raise ConfigError(f"match_ratio must be in (0, 1], got {self.match_ratio}")
        if self.max_points_per_keyframe < 0:
            raise ConfigError(f"max_points_per_keyframe must be >= 0, got {self.max_points_per_keyframe}")
        if self.pnp_max_reproj_px <= 0:
            raise ConfigError(f"pnp_max_reproj_px must be > 0, got {self.pnp_max_reproj_px}")
        if self.min_inliers < 6:
            raise ConfigError(f"min_inliers must be >= 6, got {self.min_inliers}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        for name in ("inliers_scale", "good_inlier_ratio", "good_spread"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_independent_inliers < 0:
            raise ConfigError(f"max_independent_inliers must be >= 0, got {self.max_independent_inliers}")
        if self.fallback_min_inliers < 5:
            raise ConfigError(f"fallback_min_inliers must be >= 5, got {self.fallback_min_inliers}")
        if not 1 <= self.match_threads <= 16:
            raise ConfigError(f"match_threads must be in [1, 16], got {self.match_threads}")
        if self.num_threads < 0:
            raise ConfigError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.refine_lk and not self.scale_weighted:
            raise ConfigError("refine_lk needs scale_weighted=True (the tracked points enter the weighted "
                              "refinement)")
        if self.lk_window_px < 5 or self.lk_window_px % 2 == 0:
            raise ConfigError(f"lk_window_px must be odd and >= 5, got {self.lk_window_px}")
        if not 0.0 < self.lk_max_angle_deg <= 90.0:
            raise ConfigError(f"lk_max_angle_deg must be in (0, 90], got {self.lk_max_angle_deg}")
        for name in ("lk_max_shift_px", "lk_max_fb_px", "lk_sigma_px"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.lk_cache_mb > 0:
            raise ConfigError(f"lk_cache_mb must be > 0, got {self.lk_cache_mb}")

    @classmethod
    def from_options(cls, preset: str = "default", **options: Any) -> "GeometricConfig":
        """A preset with overrides; feature/triangulation fields may be given flat by name.

        ``query_<feature field>`` (e.g. ``query_max_edge_px=768``) sets the query-side features.
        """
        if preset not in PRESETS:
            raise ConfigError(f"unknown geometric preset {preset!r}; choose from {sorted(PRESETS)}")
        base = PRESETS[preset]
        nested: dict[str, dict[str, Any]] = {"features": {}, "triangulation": {}}
        query: dict[str, Any] = {}
        top: dict[str, Any] = {}
        own = {f.name for f in dataclasses.fields(cls)}
        feature_fields = {f.name for f in dataclasses.fields(FeatureConfig)}
        for key, value in options.items():
            if key in own:
                top[key] = value
            elif key.startswith("query_") and key[6:] in feature_fields:
                query[key[6:]] = value
            elif key in feature_fields:
                nested["features"][key] = value
            elif key in {f.name for f in dataclasses.fields(TriangulationConfig)}:
                nested["triangulation"][key] = value
            else:
                raise ConfigError(f"unknown option {key!r} for the geometric backend")
        for name, values in nested.items():
            if values:
                top[name] = dataclasses.replace(getattr(base, name), **values)
        if query:
            start = base.query_features or top.get("features", base.features)
            top["query_features"] = dataclasses.replace(start, **query)
        return dataclasses.replace(base, **top)


PRESETS: dict[str, GeometricConfig] = {
    "default": GeometricConfig(),
    # map side as default (computed once); queries with 1024 keypoints at <= 640 px: latency first
    "fast": GeometricConfig(query_features=FeatureConfig(max_keypoints=1024, max_edge_px=640)),
    "accurate": GeometricConfig(features=FeatureConfig(max_keypoints=8192, max_edge_px=0)),
    # map as default; queries as fast but the pyramid never finer than 1.1x the input (a 640x480
    # query: SIFT on 352x264, about 4x cheaper than fast's 1280x960 first octave; a 1536x1024
    # one is unaffected) and only keypoints of contrast >= 0.04 (the 1024 strongest of a large
    # image are above it anyway), the pose refined with each match weighted by its keypoint's
    # size, the inliers' keyframe observations tracked into the query (LK) and refined on, the
    # keyframes matched on 2 threads. Meets the accuracy bar at native size at a fraction of
    # fast's cost (docs/geometric.md); what the node ships.
    "realtime": GeometricConfig(
        query_features=FeatureConfig(max_keypoints=1024, max_edge_px=640, max_upsample=1.1,
                                     contrast_threshold=0.04),
        scale_weighted=True, refine_lk=True, match_threads=2),
}


class GeometricLocalizer:
    """Localizer protocol over a KeyframeStore; indexes missing blobs on construction/refresh."""

    name = "geometric"

    def __init__(self, store: "KeyframeStore", config: GeometricConfig | None = None) -> None:
        self.store = store
        self.config = config or GeometricConfig()
        if self.config.num_threads:
            cv2.setNumThreads(self.config.num_threads)
        logger.info("geometric localizer: %s", self.config)
        self._lock = threading.Lock()
        self._pool = (ThreadPoolExecutor(self.config.match_threads, thread_name_prefix="geometric-match")
                      if self.config.match_threads > 1 else None)
        self._state = _Snapshot.of(index_store(store, self.config))
        self._kf_images = KeyframeImages(store, int(self.config.lk_cache_mb * 2**20))
        c = self.config
        self._track_settings = TrackSettings(c.lk_window_px, c.lk_max_shift_px, c.lk_max_fb_px, c.lk_max_angle_deg,
                                             c.lk_sigma_px)
        self._warm_images()

    def _warm_images(self) -> None:
        """Keyframe images for LK decoded at start-up / refresh, not inside the first queries."""
        if self.config.refine_lk:
            self._kf_images.warm([int(i) for i in self._state.ids])

    @property
    def _map(self) -> GeometricMap:
        return self._state.map

    def refresh(self) -> None:
        """Index keyframes added or removed since the last call (cheap when nothing changed).

        Safe to call from another thread than :meth:`localize`: the new map is swapped in as one
        snapshot, a running query finishes on the old one.
        """
        with self._lock:
            if self.store.revision != self._state.map.revision:
                old = self._state.map
                self._state = _Snapshot.of(index_store(self.store, self.config, previous=old))
                # unchanged keyframes keep their Features object (index_store reuses it)
                self._kf_images.forget({i for i, e in self._state.map.entries.items()
                                        if i in old.entries and old.entries[i].features is e.features})
                self._warm_images()

    # ------------------------------------------------------------------ query side
    def _retrieve(self, state: "_Snapshot", q_vlad: np.ndarray, prior: PosePrior | None) -> list[int]:
        k = min(self.config.top_k, len(state.ids))
        order = [int(state.ids[j]) for j in np.argsort(-(state.vlads @ q_vlad), kind="stable")]
        if prior is None:
            return order[:k]
        near, _ = nearest_by_pose(state.ids, state.poses, prior.T_world_cam, max(1, k // 2))
        chosen = [int(i) for i in near]
        chosen += [i for i in order if i not in chosen][: k - len(chosen)]
        return chosen

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        # Every product of a query is small; OpenBLAS's own workers, once woken, spin on the
        # other core after it (measured on temple with the rest of the machine stopped: p50 75-84
        # -> 60-63 ms, CPU 146-166 -> 88-91 ms per query), so the whole query runs BLAS on the
        # calling thread; the match pool parallelises instead.
        with single_thread_blas():
            return self._localize(image_bgr, intrinsics, stamp_ns, prior)

    def _localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int,
                  prior: PosePrior | None) -> RelocResult:
        t0 = time.perf_counter()
        bad = _check_input(image_bgr, intrinsics)
        if bad:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=bad)
        state = self._state
        if len(state.ids) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="the keyframe database is empty")
        cfg = self.config
        feats = extract_features(image_bgr, cfg.query_features or cfg.features)
        t_feat = time.perf_counter()
        retrieved = self._retrieve(state, vlad(feats.descriptors, state.map.vocabulary), prior)
        q_idx, x3d, kf_of, kf_kp = [], [], [], []
        for kf_id, m in zip(retrieved, self._match_keyframes(state.map, feats.descriptors, retrieved)):
            e = state.map.entries[kf_id]
            q_idx.append(m[:, 0])
            kf_kp.append(e.point_index[m[:, 1]])
            x3d.append(e.points_world[kf_kp[-1]])
            kf_of.append(np.full(len(m), kf_id))
        q_idx_a, x3d_a, kf_a = np.concatenate(q_idx), np.concatenate(x3d), np.concatenate(kf_of)
        kf_kp_a = np.concatenate(kf_kp)
        t_match = time.perf_counter()
        diag: dict[str, Any] = {"stamp_ns": stamp_ns, "num_features": len(feats), "retrieved": retrieved,
                                "num_matches_2d3d": int(len(q_idx_a)),
                                "feature_ms": 1e3 * (t_feat - t0), "match_ms": 1e3 * (t_match - t_feat)}
        if len(np.unique(q_idx_a)) < cfg.min_inliers:
            if cfg.relative_fallback:
                return self._fallback(state.map, feats, intrinsics, retrieved, diag, t0)
            return _done(RelocResult(RelocStatus.NO_MATCH, reason=f"only {len(q_idx_a)} 2D-3D matches "
                                     f"(< min_inliers {cfg.min_inliers})", diagnostics=diag), t0)
        sel, other = _one_local_map(state.map, q_idx_a, x3d_a, kf_a, cfg.min_inliers, diag)
        q_idx_a, x3d_a, kf_a, kf_kp_a = q_idx_a[sel], x3d_a[sel], kf_a[sel], kf_kp_a[sel]
        x2d_a = feats.keypoints_px[q_idx_a]
        pnp = solve_pnp(x2d_a, x3d_a, intrinsics, cfg.pnp_max_reproj_px)
        diag["pnp_ms"] = 1e3 * (time.perf_counter() - t_match)
        if pnp is None:
            return _done(RelocResult(RelocStatus.NO_MATCH, reason="PnP RANSAC found no pose",
                                     diagnostics=diag), t0)
        keep = _one_per_keypoint(q_idx_a, pnp.inliers, pnp.residuals_px)
        n_inl = int(keep.sum())
        n_matched = len(np.unique(q_idx_a))
        if cfg.scale_weighted:
            sig = keypoint_sigma_px(feats.scales_px[q_idx_a])
            inl = pnp.inliers
            if cfg.refine_lk:
                t_lk = time.perf_counter()
                x2d_a, sig, n_tracked = track_inliers(
                    state.map.entries, self._kf_images, image_bgr, pnp.T_world_cam, x2d_a, sig, kf_a, kf_kp_a,
                    inl, self._track_settings)
                diag.update({"lk_tracked": n_tracked, "lk_attempted": int(inl.sum()),
                             "lk_ms": 1e3 * (time.perf_counter() - t_lk)})
            T = refine_scale_weighted(pnp.T_world_cam, x2d_a[inl], x3d_a[inl], sig[inl], intrinsics)
            pnp = dataclasses.replace(pnp, T_world_cam=T)
            cov, sigma = pose_covariance(T, x2d_a[keep], x3d_a[keep], intrinsics, sigma_px=sig[keep])
        else:
            cov, sigma = pose_covariance(pnp.T_world_cam, x2d_a[keep], x3d_a[keep], intrinsics)
        inflation = max(1.0, n_inl / cfg.max_independent_inliers) if cfg.max_independent_inliers else 1.0
        cov = cov * inflation
        cov = cov + _other_session_offset(other, feats.keypoints_px, intrinsics, pnp.T_world_cam, cfg, diag)
        spread = inlier_spread(x2d_a[keep], intrinsics)
        ratio = n_inl / max(n_matched, 1)
        confidence = ((1.0 - math.exp(-n_inl / cfg.inliers_scale)) * min(1.0, ratio / cfg.good_inlier_ratio)
                      * min(1.0, spread / cfg.good_spread))
        per_kf = {int(k): int(np.sum(keep & (kf_a == k))) for k in retrieved}
        diag.update({"num_inliers": n_inl, "inlier_ratio": ratio, "inlier_spread": spread,
                     "reproj_rms_px": sigma, "covariance_inflation": inflation,
                     "ransac_iterations": pnp.iterations, "inliers_per_keyframe": per_kf,
                     "method": "pnp"})
        reason = _weakness(n_inl, confidence, cov, cfg)
        status = RelocStatus.LOW_CONFIDENCE if reason else RelocStatus.OK
        return _done(RelocResult(status, pnp.T_world_cam, cov, float(confidence), n_inl, reason, diag), t0)

    def _match_keyframes(self, gmap: GeometricMap, desc: np.ndarray, kf_ids: list[int]) -> list[np.ndarray]:
        """2D-3D index pairs per keyframe (ratio + mutual), on ``match_threads`` threads."""
        def one(kf_id: int) -> np.ndarray:
            return match_descriptors(desc, gmap.entries[kf_id].point_descriptors, self.config.match_ratio,
                                     block_rows=_QUERY_BLOCK_ROWS)

        if self._pool is None:
            return [one(k) for k in kf_ids]
        return list(self._pool.map(one, kf_ids))     # under localize's BLAS limit: nested ones are no-ops

    def _fallback(self, gmap: GeometricMap, feats: Any, intrinsics: Intrinsics, retrieved: list[int],
                  diag: dict[str, Any], t0: float) -> RelocResult:
        """Relative poses to the retrieved keyframes, centre from the intersection of their rays."""
        cfg = self.config
        obs = []
        for kf_id in retrieved:
            e = gmap.entries[kf_id]
            m = match_descriptors(feats.descriptors, e.features.descriptors, cfg.match_ratio)
            if len(m) < cfg.fallback_min_inliers:
                continue
            o = relative_observation(kf_id, e.features.keypoints_px[m[:, 1]], e.intrinsics, e.T_world_cam,
                                     feats.keypoints_px[m[:, 0]], intrinsics, cfg.triangulation.max_epipolar_px)
            if o is not None and o.num_inliers >= cfg.fallback_min_inliers:
                obs.append(o)
        diag.update({"method": "relative", "relative_keyframes": [o.kf_id for o in obs],
                     "relative_inliers": [o.num_inliers for o in obs]})
        solved = intersect_rays(obs)
        if solved is None:
            return _done(RelocResult(RelocStatus.NO_MATCH, reason=f"too few 2D-3D matches and only {len(obs)} "
                                     "keyframe(s) with a consistent relative pose", diagnostics=diag), t0)
        T, cov, extra = solved
        T_refined = refine_jointly(obs, T, intrinsics)
        extra["joint_refinement_shift_m"] = float(np.linalg.norm(T_refined[:3, 3] - T[:3, 3]))
        T = T_refined
        n_matches = sum(o.num_inliers for o in obs)
        inflation = max(1.0, n_matches / cfg.max_independent_inliers) if cfg.max_independent_inliers else 1.0
        cov = joint_covariance(obs, T, intrinsics) * inflation
        extra["covariance_inflation"] = inflation
        diag.update(extra)
        n_inl = int(np.median([o.num_inliers for o in obs]))
        confidence = 0.8 * (1.0 - math.exp(-n_inl / cfg.inliers_scale))
        reason = _weakness(n_inl, confidence, cov, cfg)
        status = RelocStatus.LOW_CONFIDENCE if reason else RelocStatus.OK
        return _done(RelocResult(status, T, cov, float(confidence), n_inl, reason, diag), t0)


def _one_local_map(gmap: GeometricMap, q_idx: np.ndarray, x3d: np.ndarray, kf_of: np.ndarray,
                   min_inliers: int, diag: dict[str, Any]
                   ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Mask of the matches of the keyframes consistent with the best-matched one
    (``consistent_keyframes``), all of them if that leaves fewer than ``min_inliers`` query
    keypoints; the rest go to diagnostics and are returned as ``(query keypoint index, world
    point)`` for :func:`_other_session_offset`."""
    group = consistent_keyframes(gmap, kf_of)
    sel = np.isin(kf_of, group)
    if sel.all() or len(np.unique(q_idx[sel])) < min_inliers:
        return np.ones(len(q_idx), bool), None
    diag["inconsistent_keyframes"] = sorted(int(k) for k in np.unique(kf_of[~sel]))
    return sel, (q_idx[~sel], x3d[~sel])


def _other_session_offset(other: tuple[np.ndarray, np.ndarray] | None, keypoints_px: np.ndarray,
                          intr: Intrinsics, T_world_cam: np.ndarray, cfg: GeometricConfig,
                          diag: dict[str, Any]) -> np.ndarray:
    """Covariance term ``d d^T`` for the disagreement ``d`` (centre, rotation vector) between the
    pose and the pose the excluded keyframes give on their own: where sessions of the map
    disagree, which one the answer follows is a choice, and the covariance says so. Zero if the
    excluded keyframes hold fewer than ``min_inliers`` inliers."""
    if other is None or len(np.unique(other[0])) < cfg.min_inliers:
        return np.zeros((6, 6))
    pnp = solve_pnp(keypoints_px[other[0]], other[1], intr, cfg.pnp_max_reproj_px)
    if pnp is None or len(np.unique(other[0][pnp.inliers])) < cfg.min_inliers:
        return np.zeros((6, 6))
    d = np.concatenate([pnp.T_world_cam[:3, 3] - T_world_cam[:3, 3],
                        so3_log(pnp.T_world_cam[:3, :3] @ T_world_cam[:3, :3].T)])
    diag["other_session_offset_m"] = float(np.linalg.norm(d[:3]))
    diag["other_session_offset_deg"] = float(np.degrees(np.linalg.norm(d[3:])))
    return np.outer(d, d)


# A query has ~1k descriptors: one product per keyframe measured faster than cache-sized row
# blocks there (fewer numpy calls); the map side keeps match_descriptors' default blocks.
_QUERY_BLOCK_ROWS = 4096


@dataclass(frozen=True)
class _Snapshot:
    """The map plus the stacked arrays retrieval needs, replaced as a whole on refresh."""

    map: GeometricMap
    ids: np.ndarray
    poses: np.ndarray
    vlads: np.ndarray

    @classmethod
    def of(cls, gmap: GeometricMap) -> "_Snapshot":
        ids = gmap.ids()
        if len(ids) == 0:
            return cls(gmap, ids, np.zeros((0, 4, 4)), np.zeros((0, 0), np.float32))
        return cls(gmap, ids, np.stack([gmap.entries[i].T_world_cam for i in ids]),
                   np.stack([gmap.entries[i].vlad for i in ids]))


def _check_input(image: np.ndarray, intr: Intrinsics) -> str:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        return "image must be a uint8 [H,W] or [H,W,3] array"
    h, w = image.shape[:2]
    if (w, h) != (intr.width, intr.height):
        return f"image is {w}x{h} but the intrinsics are for {intr.width}x{intr.height}"
    return ""


def _one_per_keypoint(q_idx: np.ndarray, inliers: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Inlier mask keeping one correspondence per query keypoint (smallest residual).

    A keypoint matched to the same physical point through several keyframes must count once,
    in the confidence and in the covariance.
    """
    res = np.full(len(q_idx), np.inf)
    res[inliers] = residuals
    order = np.lexsort((res, q_idx))
    first = np.ones(len(order), bool)
    first[1:] = q_idx[order][1:] != q_idx[order][:-1]
    keep = np.zeros(len(q_idx), bool)
    keep[order[first]] = True
    return keep & inliers


def _weakness(n_inliers: int, confidence: float, cov: np.ndarray, cfg: GeometricConfig) -> str:
    """Why a pose must not be trusted ('' if it may be)."""
    if n_inliers < cfg.min_inliers:
        return f"{n_inliers} inliers < min_inliers {cfg.min_inliers}"
    if confidence < cfg.min_confidence:
        return f"confidence {confidence:.2f} < min_confidence {cfg.min_confidence}"
    if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov).min() <= 0:
        return "covariance is not positive definite"
    return ""


def _done(result: RelocResult, t0: float) -> RelocResult:
    result.diagnostics["total_ms"] = 1e3 * (time.perf_counter() - t0)
    return result
