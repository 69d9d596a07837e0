"""``vggt_align``: training-free relocalization with official VGGT weights.

Run VGGT on ``[retrieved keyframes…, query]``; it predicts every camera in its own frame
(frame 0 = world, arbitrary scale). The keyframes' true poses are known, so a similarity
``S_world_pred`` fitted between predicted and known keyframe cameras maps the predicted query
camera into the map. The fit (:func:`align_cameras`):

1. RANSAC over minimal Umeyama Sim(3) fits on camera centres (K ≥ 4) finds outlier keyframes
   (a wrong retrieval, a badly predicted camera);
2. the rotation is the weighted chordal mean of ``R_world_i · R_pred_iᵀ`` over the inliers —
   every camera contributes a full orientation, so straight-line trajectories (collinear
   centres, where Umeyama's rotation is ill-posed) still align;
3. scale and translation are the weighted least-squares fit of the centres given that rotation;
4. inliers are re-decided on the final fit (centre residual and rotation residual) and the
   fit is repeated once on them.

Weights are per-keyframe (uniform by default; the retrieval score is a natural choice).
Confidence and covariance come from the residuals of the inlier keyframes. The judge: the result
is OK iff at least ``min_inliers`` keyframes agree with the fit (``num_inliers`` counts them) and
the confidence reaches ``min_confidence``; the node publishes iff ``result.ok``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...config import setting
from ...errors import ConfigError
from ...geometry import Intrinsics, apply_T, make_sim3, make_T, project_to_SO3, umeyama_ransac
from ...geometry.metrics import rotation_error_deg
from ...keyframes import KeyframeStore
from ..base import PosePrior, RelocResult, RelocStatus
from .common import KeyframeSet, decode_cameras, require_weights, to_model_image

__all__ = ["CameraAlignment", "align_cameras", "apply_alignment", "VGGTAlignConfig",
           "VGGTAlignLocalizer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraAlignment:
    """``S_world_pred`` (4x4 similarity, predicted frame -> world) and per-keyframe residuals."""

    S_world_pred: np.ndarray
    inliers: np.ndarray          # [K] bool
    residuals: np.ndarray        # [K] camera-centre distance after alignment (world units)
    rot_residuals_deg: np.ndarray  # [K]
    threshold: float             # centre threshold used (world units)

    @property
    def scale(self) -> float:
        return float(np.cbrt(np.linalg.det(self.S_world_pred[:3, :3])))


def _fit(T_world: np.ndarray, T_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Similarity from orientation mean (rotation) + weighted centre least squares (s, t)."""
    M = np.einsum("k,kij,klj->il", w, T_world[:, :3, :3], T_pred[:, :3, :3])
    R = project_to_SO3(M)
    c_w, c_p = T_world[:, :3, 3], T_pred[:, :3, 3]
    wn = w / w.sum()
    mu_w, mu_p = wn @ c_w, wn @ c_p
    xp = (c_p - mu_p) @ R.T
    var_p = float(wn @ np.sum(xp**2, axis=1))
    s = float(wn @ np.sum(xp * (c_w - mu_w), axis=1)) / var_p if var_p > 1e-12 else 1.0
    s = s if s > 0 else 1.0
    return make_sim3(s, R, mu_w - s * R @ mu_p)


def _residuals(S: np.ndarray, T_world: np.ndarray, T_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    res = np.linalg.norm(apply_T(S, T_pred[:, :3, 3]) - T_world[:, :3, 3], axis=1)
    R_S = S[:3, :3] / np.cbrt(np.linalg.det(S[:3, :3]))
    rot = np.array([rotation_error_deg(R_S @ Rp, Rw) for Rp, Rw in zip(T_pred[:, :3, :3], T_world[:, :3, :3])])
    return res, rot


def align_cameras(T_world_cam: np.ndarray, T_pred_cam: np.ndarray, threshold: float,
                  weights: np.ndarray | None = None, max_rot_deg: float = 15.0,
                  iterations: int = 200, rng: np.random.Generator | None = None) -> CameraAlignment:
    """Fit ``S_world_pred`` with ``T_world_cam[i] ≈ S · T_pred_cam[i]`` (both camera-to-frame, [K,4,4]).

    ``threshold`` is the camera-centre inlier distance in world units; K ≥ 2 cameras needed
    (K = 2 fixes scale from one baseline and cannot reject outliers).
    """
    T_world = np.asarray(T_world_cam, float).reshape(-1, 4, 4)
    T_pred = np.asarray(T_pred_cam, float).reshape(-1, 4, 4)
    K = len(T_world)
    if K < 2 or len(T_pred) != K:
        raise ValueError(f"need >= 2 matching camera pairs, got {K} known and {len(T_pred)} predicted")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    w = np.ones(K) if weights is None else np.asarray(weights, float)
    inl = np.ones(K, bool)
    if K >= 4:
        inl = umeyama_ransac(T_pred[:, :3, 3], T_world[:, :3, 3], threshold, weights=w,
                             iterations=iterations, rng=rng).inliers
        if inl.sum() < 2:
            inl = np.ones(K, bool)
    S = _fit(T_world[inl], T_pred[inl], w[inl])
    res, rot = _residuals(S, T_world, T_pred)
    final = (res < threshold) & (rot < max_rot_deg)
    if final.sum() >= 2 and not np.array_equal(final, inl):
        S = _fit(T_world[final], T_pred[final], w[final])
        res, rot = _residuals(S, T_world, T_pred)
        final = (res < threshold) & (rot < max_rot_deg)
    return CameraAlignment(S, final, res, rot, float(threshold))


def apply_alignment(S_world_pred: np.ndarray, T_pred_cam: np.ndarray) -> np.ndarray:
    """Rigid ``T_world_cam`` of a predicted camera: rotation by ``S``'s rotation, centre by ``S``."""
    s = np.cbrt(np.linalg.det(S_world_pred[:3, :3]))
    R = project_to_SO3(S_world_pred[:3, :3] / s)
    c = apply_T(S_world_pred, T_pred_cam[:3, 3][None])[0]
    return make_T(R @ T_pred_cam[:3, :3], c)


def scene_extent(T_world_cam: np.ndarray) -> float:
    """Median distance of camera centres from their median: the unit for relative thresholds."""
    c = np.asarray(T_world_cam)[:, :3, 3]
    return float(np.median(np.linalg.norm(c - np.median(c, axis=0), axis=1)))


def alignment_result(align: CameraAlignment, T_world_query: np.ndarray, extent: float,
                     min_inliers: int, min_confidence: float, diagnostics: dict) -> RelocResult:
    """Confidence, covariance and status (the judge) of an aligned query pose."""
    n_in = int(align.inliers.sum())
    K = len(align.inliers)
    if not np.all(np.isfinite(T_world_query)):
        return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="non-finite aligned pose", diagnostics=diagnostics)
    used = align.inliers if n_in else np.ones(K, bool)     # no inlier: report the spread of all
    res_m = float(np.median(align.residuals[used]))
    rot_deg = float(np.median(align.rot_residuals_deg[used]))
    confidence = (n_in / K) * math.exp(-res_m / align.threshold) * math.exp(-rot_deg / 15.0)
    var_t = max(res_m**2, (0.01 * max(extent, 1e-3)) ** 2)
    var_r = max(math.radians(rot_deg) ** 2, math.radians(0.5) ** 2)
    cov = np.diag([var_t] * 3 + [var_r] * 3)
    ok = n_in >= min_inliers and confidence >= min_confidence
    if n_in < min_inliers:
        reason = f"only {n_in} of {K} keyframes agree with the predicted cameras (need {min_inliers})"
    else:
        reason = "" if ok else f"confidence {confidence:.2f} < min_confidence {min_confidence}"
    diagnostics.update(inlier_keyframes=n_in, median_centre_residual=res_m, median_rot_residual_deg=rot_deg,
                       scale=align.scale)
    return RelocResult(RelocStatus.OK if ok else RelocStatus.LOW_CONFIDENCE, T_world_query, cov,
                       float(confidence), n_in, reason=reason, diagnostics=diagnostics)


@dataclass(frozen=True)
class VGGTAlignConfig:
    """Weights, network input size and the backend's own acceptance thresholds (its judge).

    Distances are relative to the retrieved keyframes' extent (median centre distance from their
    median)."""

    weights: str = setting("", "VGGT weights (.safetensors/.pt; architecture from <stem>.json, else VGGT-1B)")
    num_keyframes: int = setting(8, "keyframes retrieved per query (>= 2: scale needs a baseline)")
    image_hw: tuple[int, int] = setting((392, 518), "network input (height, width), multiples of 14")
    ransac_threshold_rel: float = setting(
        0.25, "a keyframe agrees with the fit when its camera centre lands within this fraction of the extent")
    max_rot_residual_deg: float = setting(
        15.0, "a keyframe agrees with the fit only if its orientation residual is below this (degrees)")
    min_inliers: int = setting(3, "results with fewer agreeing keyframes (num_inliers) are not OK")
    min_confidence: float = setting(0.3, "results below this confidence (0..1) are not OK")
    device: str = setting("cpu", "torch device (cpu, cuda, cuda:1)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_hw", tuple(int(v) for v in self.image_hw))
        if self.num_keyframes < 2:
            raise ConfigError(f"num_keyframes must be >= 2 (scale needs a baseline), got {self.num_keyframes}")
        if len(self.image_hw) != 2 or any(v <= 0 or v % 14 for v in self.image_hw):
            raise ConfigError(f"image_hw must be two positive multiples of 14, got {self.image_hw}")
        if not self.ransac_threshold_rel > 0 or not self.max_rot_residual_deg > 0:
            raise ConfigError("ransac_threshold_rel and max_rot_residual_deg must be > 0")
        if self.min_inliers < 2:
            raise ConfigError(f"min_inliers must be >= 2, got {self.min_inliers}")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


def load_vggt(weights: str | Path, device: str = "cpu", point_head: bool = False,
              backend: str = "vggt_align") -> torch.nn.Module:
    """VGGT aggregator + camera head (+ the point head with ``point_head``) from a weights file
    (architecture from ``<stem>.json`` beside it, else VGGT-1B); heads not built have their keys
    reported as ignored. ``backend`` names who needs the weights in the missing-file error."""
    from ...model.config import VGGTConfig
    from ...model.weights import config_path_for, load_vggt as load_vggt_file

    path = require_weights(weights, backend)
    cfg_path = config_path_for(path)
    cfg = VGGTConfig.from_json(cfg_path) if cfg_path.is_file() else VGGTConfig()
    cfg = dataclasses.replace(cfg, enable_depth=False, enable_point=point_head, enable_track=False)
    model, report = load_vggt_file(path, cfg, strict=True, map_location=device)
    logger.info("%s weights: %s", backend, report.summary())
    return model


class VGGTAlignLocalizer:
    """Localizer: retrieve K keyframes, run VGGT on them + the query, align, apply."""

    name = "vggt_align"

    def __init__(self, store: KeyframeStore, config: VGGTAlignConfig, model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.model = model if model is not None else load_vggt(config.weights, config.device)
        self.keyframes = KeyframeSet(store, config.image_hw)
        logger.info("vggt_align: %s", config)

    def refresh(self) -> None:
        self.keyframes.refresh()

    @torch.inference_mode()
    def predict_cameras(self, images: torch.Tensor) -> np.ndarray:
        """images [S, 3, H, W] -> predicted camera-to-frame-0 poses [S, 4, 4] (VGGT scale)."""
        x = images.unsqueeze(0).to(self.config.device)
        tokens, _ = self.model.aggregator(x)
        pose_enc = self.model.camera_head(tokens)[-1][0].float().cpu().numpy()
        return decode_cameras(pose_enc, self.config.image_hw)

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        if len(self.keyframes) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="keyframe database is empty")
        kf_ids = self.keyframes.retrieve(image_bgr, self.config.num_keyframes, prior)
        if len(kf_ids) < 2:
            return RelocResult(RelocStatus.NO_MATCH, reason=f"vggt_align needs >= 2 keyframes, have {len(kf_ids)}")
        images = torch.stack([*(self.keyframes.image(i) for i in kf_ids),
                              to_model_image(image_bgr, self.config.image_hw)])
        T_pred = self.predict_cameras(images)
        T_world_kf = np.stack([self.keyframes.pose(i) for i in kf_ids])
        extent = max(scene_extent(T_world_kf), 1e-3)
        diagnostics = {"keyframes": kf_ids}
        if not np.all(np.isfinite(T_pred)):
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="non-finite camera prediction",
                               diagnostics=diagnostics)
        align = align_cameras(T_world_kf, T_pred[:-1], self.config.ransac_threshold_rel * extent,
                              max_rot_deg=self.config.max_rot_residual_deg)
        T_world_query = apply_alignment(align.S_world_pred, T_pred[-1])
        return alignment_result(align, T_world_query, extent, self.config.min_inliers,
                                self.config.min_confidence, diagnostics)
