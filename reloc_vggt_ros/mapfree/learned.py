"""Learned map-free backends on our VGGT: point-map alignment, its PnP (MASt3R-style) variant,
and Reloc-VGGT with one keyframe.

**Point maps** (:class:`PointMapLocalizer`, ``vggt_pointmap`` and ``vggt_pnp``). VGGT runs on
``[reference, query]``; its frame is the reference camera's at the network's own scale, and its
point head gives every pixel of both views a 3D point in that frame. Stages:

1. ``predict``: point maps ``[2, h, w, 3]`` with confidences and the two cameras (camera head);
2. ``align``: a Sim(3) from the network frame to the metric reference camera, fitted by
   Umeyama + RANSAC (``geometry.umeyama_ransac``) between the reference's predicted points and
   its depth image back-projected (every valid depth pixel paired with the point of its network
   cell). Without a depth image the predicted reference camera defines the frame and the scale
   is **unknown**;
3. the query pose, either from the **camera head** (``pose_from = "camera"``: the predicted query
   camera mapped through the Sim(3); VGGT point-map alignment) or by **PnP** of the query's
   pixels against their predicted 3D points mapped through the Sim(3), with the query's own
   intrinsics (``pose_from = "pnp"``: the MASt3R recipe, pixel correspondences given by the
   query's point map in the reference frame). Both share stages 1-2 and the judge; only this
   step differs, so they are one class;
4. the judge: the reference's predicted geometry must agree with its depth (``align`` inlier
   ratio) and the query's confident points must reproject under the final pose with the query's
   intrinsics (reprojection inlier ratio and count). Untrained weights fail both.

**Reloc-VGGT, K = 1** (:class:`RelocVGGTK1Localizer`, ``reloc_vggt_k1``): the reference is the
only (anchor) keyframe: ``[reference, query]`` with the reference's pose token, the query's
camera read in the anchor frame. One keyframe fixes no metric scale, and Reloc-VGGT has no
dense head, so the translation is in the network's unit — the VGGT normalisation, the mean
distance of the scene points from the first camera — converted to metres with the reference
depth's mean point distance (``scale = "depth"``; without depth ``"unknown"``). The judge is the
anchor's own predicted pose (the network must put the reference at the identity).

Scale unknown (no reference depth): the translation is returned as a unit vector (direction
only), ``diagnostics["scale"] = "unknown"``, the covariance is :data:`UNKNOWN_SCALE_VAR_M2`
along the baseline (:func:`unbounded_along_baseline`), and the result is LOW_CONFIDENCE (as for
the weights-free backends: a pose without scale is never published).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import require_positive, setting
from ..errors import ConfigError
from ..geometry import Intrinsics, apply_T, invert_T, make_T, pose_error, umeyama_ransac
from ..localizer.base import RelocResult, RelocStatus
from ..localizer.geometric.relative_pose import UNBOUNDED_VARIANCE_M2
from .base import SCALE_UNKNOWN, QueryFrame, Reference
from .reference import check_reference, pixel_rays

__all__ = ["PointMapConfig", "PointMapLocalizer", "RelocVGGTK1Config", "RelocVGGTK1Localizer",
           "UNKNOWN_SCALE_VAR_M2", "unbounded_along_baseline", "network_intrinsics"]

logger = logging.getLogger(__name__)

UNKNOWN_SCALE_VAR_M2 = UNBOUNDED_VARIANCE_M2   # variance along the baseline when no scale is known (the two-view stage's)
NO_SCALE = "no source of metric scale (the reference has no depth): translation direction only, unit length"


def network_intrinsics(intrinsics: Intrinsics, image_hw: tuple[int, int]) -> Intrinsics:
    """The camera of the network input: the image resized (no crop) to ``image_hw``."""
    h, w = image_hw
    return intrinsics.scaled(w / intrinsics.width, h / intrinsics.height)


def unbounded_along_baseline(cov: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``cov`` plus :data:`UNKNOWN_SCALE_VAR_M2` along the (world-frame) baseline direction."""
    n = np.linalg.norm(baseline)
    d = baseline / n if n > 1e-12 else np.array([0.0, 0.0, 1.0])
    out = np.array(cov, float)
    out[:3, :3] += UNKNOWN_SCALE_VAR_M2 * np.outer(d, d)
    return out


def _unit_baseline(T_ref_query: np.ndarray) -> np.ndarray:
    """``T_ref_query`` with its translation scaled to length 1 (direction only)."""
    t = T_ref_query[:3, 3]
    n = float(np.linalg.norm(t))
    return make_T(T_ref_query[:3, :3], t / n if n > 1e-12 else t)


def _check_hw(image_hw: tuple[int, ...]) -> tuple[int, int]:
    hw = tuple(int(v) for v in image_hw)
    if len(hw) != 2 or any(v <= 0 or v % 14 for v in hw):
        raise ConfigError(f"image_hw must be two positive multiples of 14, got {image_hw}")
    return hw  # type: ignore[return-value]


# ----------------------------------------------------------------------------- point maps
@dataclass(frozen=True)
class PointMapConfig:
    """Weights, network size, and the thresholds of the point-map backends' judge."""

    weights: str = setting("", "VGGT weights with the point head (.safetensors/.pt; architecture from <stem>.json)")
    pose_from: str = setting("camera", "query pose from the camera head ('camera') or by PnP of its point map ('pnp')")
    image_hw: tuple[int, int] = setting((392, 518), "network input (height, width), multiples of 14")
    max_points: int = setting(4000, "most correspondences used per stage (highest point confidence first)")
    conf_quantile: float = setting(0.3, "query pixels at or below this quantile of point confidence are not used")
    align_threshold_rel: float = setting(0.05, "alignment inlier distance as a fraction of the median depth")
    min_align_inlier_ratio: float = setting(0.5, "reference depth pixels the aligned point map must fit (0..1)")
    min_depth_points: int = setting(20, "valid reference depth pixels the alignment needs")
    reproj_px: float = setting(2.0, "query reprojection inlier threshold, in network-input pixels")
    min_reproj_inlier_ratio: float = setting(0.3, "confident query points that must reproject under the pose (0..1)")
    min_inliers: int = setting(30, "query points that must reproject under the pose")
    device: str = setting("cpu", "torch device (cpu, cuda, cuda:1)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_hw", _check_hw(self.image_hw))
        if self.pose_from not in ("camera", "pnp"):
            raise ConfigError(f"pose_from must be 'camera' or 'pnp', got {self.pose_from!r}")
        for name in ("conf_quantile", "min_align_inlier_ratio", "min_reproj_inlier_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        require_positive(self, "", "align_threshold_rel", "reproj_px")
        if self.max_points < 10 or self.min_depth_points < 3 or self.min_inliers < 4:
            raise ConfigError("max_points must be >= 10, min_depth_points >= 3 and min_inliers >= 4")


@dataclass(frozen=True)
class PointMaps:
    """What the network predicts for ``[reference, query]``, at the network input size."""

    points: np.ndarray           # [2, h, w, 3] in the network frame (reference camera, network scale)
    conf: np.ndarray             # [2, h, w]
    T_net_cam: np.ndarray        # [2, 4, 4] predicted cameras (camera-to-network frame)


@dataclass(frozen=True)
class Alignment:
    """Sim(3) network frame -> metric reference camera, and how well the depth supports it."""

    S_ref_net: np.ndarray
    inlier_ratio: float          # 1.0 when there is no depth to check against
    num_points: int
    scale_known: bool


class PointMapLocalizer:
    """VGGT point maps of ``[reference, query]`` -> metric query pose (see the module docstring)."""

    def __init__(self, config: PointMapConfig, model: torch.nn.Module | None = None) -> None:
        from ..localizer.vggt.vggt_align import load_vggt

        self.config = config
        self.name = "vggt_pointmap" if config.pose_from == "camera" else "vggt_pnp"
        self.model = (model if model is not None
                      else load_vggt(config.weights, config.device, point_head=True, backend=self.name)).eval()
        if getattr(self.model, "point_head", None) is None:
            raise ConfigError(f"{self.name} needs a VGGT with the point head (enable_point)")
        self.reference: Reference | None = None
        self._ref_image: torch.Tensor | None = None
        logger.info("%s: %s", self.name, config)

    def set_reference(self, reference: Reference) -> None:
        from ..localizer.vggt.common import to_model_image

        self.reference = check_reference(reference)
        self._ref_image = to_model_image(reference.image_bgr, self.config.image_hw)

    # -- stages ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, query_image: torch.Tensor) -> PointMaps:
        """Stage 1: point maps, confidences and cameras of ``[reference, query]``."""
        from ..localizer.vggt.common import decode_cameras

        images = torch.stack([self._ref_image, query_image]).unsqueeze(0).to(self.config.device)
        out = self.model(images)
        return PointMaps(out["world_points"][0].float().cpu().numpy().astype(np.float64),
                         out["world_points_conf"][0].float().cpu().numpy().astype(np.float64),
                         decode_cameras(out["pose_enc"][0].float().cpu().numpy(), self.config.image_hw))

    def align(self, maps: PointMaps) -> Alignment | str:
        """Stage 2: the Sim(3) from the reference's depth (without one: the rigid inverse of the
        predicted reference camera), or why not."""
        ref, cfg = self.reference, self.config
        if ref.depth_m is None:   # the predicted reference camera defines the frame, scale unknown
            return Alignment(invert_T(maps.T_net_cam[0]), 1.0, 0, False)
        rows, cols = np.nonzero(np.isfinite(ref.depth_m) & (ref.depth_m > 0))
        z = ref.depth_m[rows, cols].astype(np.float64)
        xy = np.stack([cols, rows], axis=1).astype(np.float64)
        h, w = cfg.image_hw
        net = np.stack([(xy[:, 0] + 0.5) * w / ref.intrinsics.width - 0.5,
                        (xy[:, 1] + 0.5) * h / ref.intrinsics.height - 0.5], axis=1)
        r = np.clip(np.round(net[:, 1]).astype(int), 0, h - 1)
        c = np.clip(np.round(net[:, 0]).astype(int), 0, w - 1)
        src, dst, conf = maps.points[0, r, c], pixel_rays(xy, ref.intrinsics) * z[:, None], maps.conf[0, r, c]
        keep = np.all(np.isfinite(src), axis=1) & np.isfinite(conf)
        if keep.sum() < cfg.min_depth_points:
            return (f"only {int(keep.sum())} reference depth pixels with a finite prediction "
                    f"(min_depth_points {cfg.min_depth_points})")
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-conf[idx], kind="stable")[: cfg.max_points]]
        threshold = cfg.align_threshold_rel * float(np.median(z[idx]))
        fit = umeyama_ransac(src[idx], dst[idx], threshold, iterations=300)
        return Alignment(fit.S, float(fit.inliers.mean()), len(idx), True)

    def query_points(self, maps: PointMaps) -> tuple[np.ndarray, np.ndarray]:
        """The query's confident cells: pixels [N, 2] (network input) and points [N, 3] (network frame)."""
        pts, conf = maps.points[1], maps.conf[1]
        finite = np.all(np.isfinite(pts), axis=-1) & np.isfinite(conf)
        if not finite.any():
            return np.zeros((0, 2)), np.zeros((0, 3))
        ok = finite & (conf > np.quantile(conf[finite], self.config.conf_quantile))
        rows, cols = np.nonzero(ok)
        order = np.argsort(-conf[rows, cols], kind="stable")[: self.config.max_points]
        rows, cols = rows[order], cols[order]
        return np.stack([cols, rows], axis=1).astype(np.float64), pts[rows, cols]

    def query_pose(self, maps: PointMaps, align: Alignment, x2d: np.ndarray, X_world: np.ndarray,
                   intr: Intrinsics) -> np.ndarray | None:
        """Stage 3: ``T_world_query`` from the camera head or by PnP of the query's points (None: no pose)."""
        from ..localizer.geometric.pnp import solve_pnp
        from ..localizer.vggt.vggt_align import apply_alignment

        if self.config.pose_from == "camera":
            return self.reference.T_world_cam @ apply_alignment(align.S_ref_net, maps.T_net_cam[1])
        pnp = solve_pnp(x2d, X_world, intr, self.config.reproj_px)
        return None if pnp is None else pnp.T_world_cam

    def judge(self, T_world_query: np.ndarray, align: Alignment, x2d: np.ndarray, X_world: np.ndarray,
              intr: Intrinsics, diagnostics: dict[str, Any]) -> RelocResult:
        """Stage 4: reprojection check, covariance, confidence and status; a unit baseline when
        the scale is unknown."""
        from ..localizer.geometric.pnp import pose_covariance

        ref, cfg = self.reference, self.config
        X_cam = apply_T(invert_T(T_world_query), X_world)
        inl = (X_cam[:, 2] > 0) & (np.linalg.norm(intr.project(X_cam) - x2d, axis=1) < cfg.reproj_px)
        n_in, ratio = int(inl.sum()), float(inl.mean())
        diagnostics.update(reproj_inliers=n_in, reproj_inlier_ratio=ratio)
        if n_in >= 6:
            cov, diagnostics["reproj_rms_px"] = pose_covariance(T_world_query, x2d[inl], X_world[inl], intr)
        else:
            cov = np.diag([1.0] * 3 + [math.radians(10.0) ** 2] * 3)
        if not align.scale_known:
            T_ref_query = invert_T(ref.T_world_cam) @ T_world_query
            cov[:3, :3] /= max(float(np.linalg.norm(T_ref_query[:3, 3])), 1e-12) ** 2
            T_world_query = ref.T_world_cam @ _unit_baseline(T_ref_query)
            cov = unbounded_along_baseline(cov, T_world_query[:3, 3] - ref.T_world_cam[:3, 3])
        if not align.scale_known:
            status, reason = RelocStatus.LOW_CONFIDENCE, NO_SCALE
        elif align.inlier_ratio < cfg.min_align_inlier_ratio:
            status, reason = RelocStatus.LOW_CONFIDENCE, (
                f"the predicted reference geometry fits its depth at {align.inlier_ratio:.0%} of "
                f"{align.num_points} pixels (min_align_inlier_ratio {cfg.min_align_inlier_ratio})")
        elif n_in < cfg.min_inliers or ratio < cfg.min_reproj_inlier_ratio:
            status, reason = RelocStatus.LOW_CONFIDENCE, (
                f"{n_in} of {len(x2d)} query points reproject within {cfg.reproj_px} px "
                f"(min_inliers {cfg.min_inliers}, min_reproj_inlier_ratio {cfg.min_reproj_inlier_ratio})")
        else:
            status, reason = RelocStatus.OK, ""
        return RelocResult(status, T_world_query, cov, align.inlier_ratio * ratio, n_in, reason, diagnostics)

    def localize(self, query: QueryFrame) -> RelocResult:
        """The four stages on one query."""
        from ..localizer.vggt.common import to_model_image

        ref, cfg = self.reference, self.config
        if ref is None:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=f"{self.name}: no reference set")
        maps = self.predict(to_model_image(query.image_bgr, cfg.image_hw))
        diagnostics: dict[str, Any] = {"reference": ref.name, "pose_from": cfg.pose_from}
        if not (np.all(np.isfinite(maps.T_net_cam)) and np.isfinite(maps.points).any()):
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="non-finite network output",
                               diagnostics=diagnostics)
        align = self.align(maps)
        if isinstance(align, str):
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason=align, diagnostics=diagnostics)
        diagnostics.update(scale="depth" if align.scale_known else SCALE_UNKNOWN,
                           align_inlier_ratio=align.inlier_ratio, align_points=align.num_points,
                           align_scale=float(np.cbrt(np.linalg.det(align.S_ref_net[:3, :3]))))
        x2d, X_net = self.query_points(maps)
        if len(x2d) < cfg.min_inliers:
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason=f"only {len(x2d)} confident query points "
                               f"(min_inliers {cfg.min_inliers})", diagnostics=diagnostics)
        raw = network_intrinsics(query.intrinsics, cfg.image_hw)
        x2d, intr = raw.undistort_px(x2d), raw.pinhole       # PnP and its covariance on ideal pixels
        X_world = apply_T(ref.T_world_cam @ align.S_ref_net, X_net)
        T_world_query = self.query_pose(maps, align, x2d, X_world, intr)
        if T_world_query is None:
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="PnP found no pose", diagnostics=diagnostics)
        return self.judge(T_world_query, align, x2d, X_world, intr, diagnostics)

    def localize_sequence(self, queries: list[QueryFrame]) -> list[RelocResult]:
        """Track 2 is not used by this backend yet: each frame on its own."""
        return [self.localize(q) for q in queries]


# ----------------------------------------------------------------------------- Reloc-VGGT K = 1
@dataclass(frozen=True)
class RelocVGGTK1Config:
    """Weights / engine and the judge of Reloc-VGGT with the reference as its only keyframe."""

    weights: str = setting("", "Reloc-VGGT checkpoint (.safetensors/.pt with its .json) or exported graph")
    device: str = setting("cpu", "torch device of a checkpoint (cpu, cuda, cuda:1)")
    engine_kind: str = setting("auto", "auto (by file suffix), torch, onnxruntime or tensorrt")
    engine_fallback: tuple[str, ...] = setting((), "engine kinds to try, in order, when engine_kind cannot run here")
    anchor_t_rel: float = setting(0.1, "anchor translation error (network units) at which confidence falls by 1/e")
    anchor_rot_deg: float = setting(5.0, "anchor rotation error (degrees) at which confidence falls by 1/e")
    min_confidence: float = setting(0.3, "results below this confidence (0..1) are not OK")

    def __post_init__(self) -> None:
        from ..engine.factory import check_engine_choice

        object.__setattr__(self, "engine_fallback", check_engine_choice(self.engine_kind, self.engine_fallback))
        if not (self.anchor_t_rel > 0 and self.anchor_rot_deg > 0):
            raise ConfigError("anchor_t_rel and anchor_rot_deg must be > 0")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


class RelocVGGTK1Localizer:
    """Reloc-VGGT on ``[reference, query]`` (see the module docstring)."""

    name = "reloc_vggt_k1"

    def __init__(self, config: RelocVGGTK1Config, model: torch.nn.Module | None = None) -> None:
        from ..localizer.vggt.reloc_vggt import RelocVGGTLocalizerConfig, open_network
        from ..model.kv_cache import KeyframeCache

        self.config = config
        self.network = open_network(RelocVGGTLocalizerConfig(
            weights=config.weights, device=config.device, engine_kind=config.engine_kind,
            engine_fallback=config.engine_fallback), model)
        k_min, _ = self.network.keyframe_range
        if k_min > 1:
            raise ConfigError(f"{self.name}: the exported graph needs >= {k_min} keyframes; export it "
                              "with a keyframe range starting at 1")
        self.image_hw: tuple[int, int] = tuple(self.network.config.image_hw)  # type: ignore[assignment]
        self.kv_cache: KeyframeCache[Any] = KeyframeCache()
        self.reference: Reference | None = None
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None
        self._scale_m: float | None = None
        self._generation = 0
        logger.info("%s: engine=%s image_hw=%s %s", self.name, self.network.name, self.image_hw, config)

    def set_reference(self, reference: Reference) -> None:
        from ..localizer.vggt.common import to_model_image
        from ..model.pose_tokenizer import relative_pose_encoding

        ref = check_reference(reference)
        known, _ = relative_pose_encoding([ref.T_world_cam], [ref.intrinsics])
        self._ref = (to_model_image(ref.image_bgr, self.image_hw)[None, None],
                     torch.from_numpy(known).float()[None])
        self._scale_m = None
        if ref.depth_m is not None:
            rows, cols = np.nonzero(np.isfinite(ref.depth_m) & (ref.depth_m > 0))
            z = ref.depth_m[rows, cols].astype(np.float64)
            X = pixel_rays(np.stack([cols, rows], axis=1).astype(np.float64), ref.intrinsics) * z[:, None]
            self._scale_m = float(np.mean(np.linalg.norm(X, axis=1)))
        self.reference = ref
        self._generation += 1
        self.kv_cache.clear()

    def localize(self, query: QueryFrame) -> RelocResult:
        from ..localizer.vggt.common import decode_cameras, to_model_image
        from ..localizer.vggt.reloc_vggt import run_network

        ref, cfg = self.reference, self.config
        if ref is None or self._ref is None:
            return RelocResult(RelocStatus.INVALID_INPUT, reason=f"{self.name}: no reference set")
        image = to_model_image(query.image_bgr, self.image_hw)[None, None]
        pose_enc = run_network(self.network, self.kv_cache, self._generation, *self._ref, image)
        diagnostics: dict[str, Any] = {"reference": ref.name, "engine": self.network.name}
        if not np.all(np.isfinite(pose_enc)):
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="non-finite network output", diagnostics=diagnostics)
        T_anchor_cam = decode_cameras(pose_enc, self.image_hw)
        t_anchor, r_anchor = pose_error(T_anchor_cam[0], np.eye(4))
        confidence = math.exp(-t_anchor / cfg.anchor_t_rel) * math.exp(-r_anchor / cfg.anchor_rot_deg)
        T_ref_query = T_anchor_cam[1]
        scale = self._scale_m
        var_t = max(t_anchor, 0.01) ** 2
        cov = np.diag([var_t] * 3 + [max(math.radians(r_anchor), math.radians(0.5)) ** 2] * 3)
        if scale is not None:
            T_ref_query = make_T(T_ref_query[:3, :3], T_ref_query[:3, 3] * scale)
            cov[:3, :3] *= scale**2
            diagnostics.update(scale="depth", scale_m_per_unit=scale)
        else:
            T_ref_query = _unit_baseline(T_ref_query)
            diagnostics["scale"] = SCALE_UNKNOWN
        T_world_query = ref.T_world_cam @ T_ref_query
        R = ref.T_world_cam[:3, :3]
        cov[:3, :3], cov[3:, 3:] = R @ cov[:3, :3] @ R.T, R @ cov[3:, 3:] @ R.T
        if scale is None:
            cov = unbounded_along_baseline(cov, T_world_query[:3, 3] - ref.T_world_cam[:3, 3])
        diagnostics.update(anchor_t_err=t_anchor, anchor_rot_err_deg=r_anchor)
        ok = confidence >= cfg.min_confidence and scale is not None
        reason = "" if ok else NO_SCALE if scale is None else (
            f"anchor self-consistency {confidence:.2f} < min_confidence {cfg.min_confidence} "
            f"(the reference predicted {t_anchor:.2f} units / {r_anchor:.1f} deg off identity)")
        return RelocResult(RelocStatus.OK if ok else RelocStatus.LOW_CONFIDENCE, T_world_query, cov,
                           float(confidence), 1 if ok else 0, reason, diagnostics)

    def localize_sequence(self, queries: list[QueryFrame]) -> list[RelocResult]:
        """Track 2 is not used by this backend yet: each frame on its own."""
        return [self.localize(q) for q in queries]
