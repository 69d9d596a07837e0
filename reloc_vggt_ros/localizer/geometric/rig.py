"""Camera rigs: one pose of the base from the 2D-3D matches of every camera present.

A rig is a list of cameras, each with its extrinsic ``T_base_cam`` (camera optical frame in the
base frame). A rig query (:meth:`GeometricLocalizer.localize_rig`) runs the single-camera stages
per camera up to the local map (features, undistortion, retrieval with the prior moved to that
camera, 2D-3D matching, ``local_map``; :func:`observe_camera`), then fuses every camera's
matches into one generalized absolute pose of the base (``pnp.solve_rig_pnp``, poselib's GP3P
LO-RANSAC) with one covariance (``pnp.rig_covariance``). Keyframes stay per camera: the map does
not know about rigs. Any subset of the cameras works (a camera without an image this time is
simply absent); each camera's matches and inliers are reported in the diagnostics.

With ``query.scale_weighted`` the inliers are LK-tracked per camera (``lk_refine``, when on) and
the base pose refined on every camera's inliers weighted by keypoint size
(``pnp.refine_rig_weighted``), as a single camera's is. Not (yet) for rigs: the look-alike place
search and the relative-pose fallback (a rig without enough 2D-3D matches is NO_MATCH).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...geometry import Intrinsics, apply_T, invert_T, is_valid_T
from .features import Features, extract_features, undistorted
from .local_map import LocalMap, select_local_map
from .matching import match_2d3d
from .pnp import RigObservations, keypoint_sigma_px, unique_inliers

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ..retrieval import VLADRetriever
    from .config import GeometricConfig
    from .indexing import KeyframeEntry

__all__ = ["RigCamera", "RigFrame", "CameraView", "rig_input_problem", "observe_camera", "rig_observations",
           "camera_inliers"]


@dataclass(frozen=True)
class RigCamera:
    """A camera of a rig: its name and where it sits on the base (camera optical frame in base)."""

    name: str
    T_base_cam: np.ndarray


@dataclass(frozen=True)
class RigFrame:
    """One camera's image of a rig query (BGR uint8) and its camera model."""

    camera: RigCamera
    image_bgr: np.ndarray
    intrinsics: Intrinsics


@dataclass(frozen=True)
class CameraView:
    """What one camera contributes: undistorted features, retrieved keyframes, its local map."""

    frame: RigFrame
    features: Features
    retrieved: list[int]
    local: LocalMap


def rig_input_problem(frames: Sequence[RigFrame], image_problem: Any) -> str:
    """Why a rig query cannot run ('' if it can): no frame, a camera twice, a non-rigid
    extrinsic, or a frame whose image/intrinsics ``image_problem(image, intrinsics)`` refuses."""
    if not frames:
        return "a rig query needs at least one camera image"
    names = [f.camera.name for f in frames]
    if len(set(names)) != len(names):
        return f"camera names must be unique in a rig query, got {names}"
    for f in frames:
        T = np.asarray(f.camera.T_base_cam, float)
        if T.shape != (4, 4) or not is_valid_T(T, tol=1e-6):
            return f"camera {f.camera.name!r}: T_base_cam is not a finite rigid 4x4 transform"
        bad = image_problem(f.image_bgr, f.intrinsics)
        if bad:
            return f"camera {f.camera.name!r}: {bad}"
    return ""


def observe_camera(entries: Mapping[int, "KeyframeEntry"], retriever: "VLADRetriever", frame: RigFrame,
                   T_prior_base: np.ndarray | None, config: "GeometricConfig", pool: "Executor | None"
                   ) -> CameraView:
    """The single-camera stages up to the local map, for one camera of a rig (the base prior is
    moved to the camera for retrieval)."""
    q = config.query
    feats = undistorted(extract_features(frame.image_bgr, q.features), frame.intrinsics)
    T_prior = None if T_prior_base is None else T_prior_base @ frame.camera.T_base_cam
    retrieved = retriever.retrieve(feats.descriptors, q.top_k, T_prior)
    matches = match_2d3d(entries, feats.descriptors, retrieved, q.match_ratio, pool)
    return CameraView(frame, feats, retrieved, select_local_map(entries, matches, config.acceptance.min_inliers))


def rig_observations(views: Sequence[CameraView], scale_weighted: bool) -> list[RigObservations]:
    """Each camera's matches as generalized-PnP input (ideal pixels, pinhole, sigmas if weighted)."""
    out = []
    for v in views:
        m = v.local.matches
        sigma = keypoint_sigma_px(v.features.scales_px[m.q_idx]) if scale_weighted else None
        out.append(RigObservations(v.features.keypoints_px[m.q_idx], m.x3d, v.frame.intrinsics.pinhole,
                                   np.asarray(v.frame.camera.T_base_cam, float), sigma))
    return out


def camera_inliers(T_world_base: np.ndarray, obs: RigObservations, q_idx: np.ndarray, inliers: np.ndarray
                   ) -> np.ndarray:
    """One camera's unique inliers (one per query keypoint, ``pnp.unique_inliers``) at the rig pose."""
    if not inliers.any():
        return inliers.copy()
    Xc = apply_T(invert_T(T_world_base @ obs.T_base_cam), obs.x3d[inliers])
    res = np.linalg.norm(obs.intr.project(Xc) - obs.x2d[inliers], axis=1)
    return unique_inliers(q_idx, inliers, res)
