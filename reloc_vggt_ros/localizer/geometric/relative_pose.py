"""Fallback when the map has too few 3D points: relative poses to >= 2 keyframes, scale from their baseline.

Each keyframe j gives, from an essential matrix (poselib 5-point LO-RANSAC + refinement), the
query rotation, the *direction* from its centre towards the query centre, and its inlier
matches. The rotation is the chordal mean of the per-keyframe estimates. With the rotation
fixed, every inlier match says the query centre lies on the plane spanned by the keyframe
centre and the two viewing rays: ``n . C = n . C_kf`` with ``n = ray_kf x ray_query``. Planes
from >= 2 keyframes fix C, and the known keyframe centres fix the scale (robust least squares).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import poselib

from ...geometry import Intrinsics, invert_T, make_T, project_to_SO3, rotation_error_deg, so3_exp
from .config import QuerySettings
from .features import Features
from .matching import fundamental_from_poses, match_descriptors
from .pnp import camera_dict

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["RelativeObservation", "relative_observation", "intersect_rays", "refine_jointly",
           "joint_covariance", "RelativePose", "relative_fallback"]


@dataclass
class RelativeObservation:
    """What one keyframe says about the query: rotation and unit ray from the keyframe centre."""

    kf_id: int
    R_world_query: np.ndarray
    centre_kf: np.ndarray
    direction: np.ndarray
    num_inliers: int
    rays_kf_world: np.ndarray       # [M,3] unit viewing rays of the inliers, world axes
    rays_query_cam: np.ndarray      # [M,3] unit viewing rays of the inliers, query camera axes
    pixels_kf: np.ndarray           # [M,2] the inliers' pixels, for the joint refinement
    pixels_query: np.ndarray
    intrinsics_kf: Intrinsics
    T_world_kf: np.ndarray


def relative_observation(kf_id: int, x_kf: np.ndarray, intr_kf: Intrinsics, T_world_kf: np.ndarray,
                         x_query: np.ndarray, intr_query: Intrinsics, max_epipolar_px: float
                         ) -> RelativeObservation | None:
    """Relative pose keyframe -> query from matched pixels [M,2]; None if it fails."""
    if len(x_kf) < 5:
        return None
    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(x_kf, np.float64), np.ascontiguousarray(x_query, np.float64),
        camera_dict(intr_kf), camera_dict(intr_query), {"max_epipolar_error": float(max_epipolar_px)}, {})
    inl = np.asarray(info["inliers"], bool)
    n_inl = int(inl.sum())
    if n_inl < 5:
        return None
    R_q_kf, t_q_kf = np.asarray(pose.R), np.asarray(pose.t)      # X_query = R X_kf + t
    R_world_kf = T_world_kf[:3, :3]
    direction = R_world_kf @ (-R_q_kf.T @ t_q_kf)                  # query centre seen from kf
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    rays_kf = _rays(x_kf[inl], intr_kf) @ R_world_kf.T
    return RelativeObservation(kf_id, R_world_kf @ R_q_kf.T, T_world_kf[:3, 3].copy(), direction, n_inl,
                               rays_kf, _rays(x_query[inl], intr_query), x_kf[inl], x_query[inl], intr_kf,
                               T_world_kf)


def _rays(x: np.ndarray, intr: Intrinsics) -> np.ndarray:
    r = np.column_stack([(x[:, 0] - intr.cx) / intr.fx, (x[:, 1] - intr.cy) / intr.fy, np.ones(len(x))])
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def _planes(obs: list[RelativeObservation], R_world_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit plane normals [P,3] and offsets [P] with ``n . C = offset`` for the query centre C."""
    normals, offsets = [], []
    for o in obs:
        n = np.cross(o.rays_kf_world, o.rays_query_cam @ R_world_query.T)
        norm = np.linalg.norm(n, axis=1)
        ok = norm > 1e-3                      # parallel rays (no parallax) say nothing about C
        normals.append(n[ok] / norm[ok, None])
        offsets.append(normals[-1] @ o.centre_kf)
    return np.concatenate(normals), np.concatenate(offsets)


def intersect_rays(obs: list[RelativeObservation], iterations: int = 5
                   ) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(T_world_query, 6x6 covariance, diagnostics) from >= 2 observations, or None if degenerate.

    Position covariance: ``sigma^2 (A^T A)^-1`` of the plane constraints (sigma = robust RMS
    distance of C to the planes); rotation covariance: the spread of the per-keyframe rotations,
    floored at 0.1 degrees.
    """
    if len(obs) < 2:
        return None
    R = project_to_SO3(sum(o.R_world_query for o in obs))
    A, b = _planes(obs, R)
    if len(A) < 6 or np.linalg.cond(A.T @ A) > 1e8:
        return None
    w = np.ones(len(A))
    for _ in range(iterations):               # IRLS, Cauchy weights at the median residual
        C = np.linalg.lstsq(A * w[:, None], b * w, rcond=None)[0]
        r = A @ C - b
        scale = max(float(np.median(np.abs(r))) * 1.4826, 1e-12)
        w = np.sqrt(1.0 / (1.0 + (r / (2.0 * scale)) ** 2))
    for o in obs:                             # cheirality: the query lies ahead of each ray origin
        if (C - o.centre_kf) @ o.direction <= 0:
            return None
    Aw = A * w[:, None]
    sigma2 = float(np.sum((w * r) ** 2) / max(len(A) - 3, 1))
    rot_dev = np.array([np.radians(rotation_error_deg(R, o.R_world_query)) for o in obs])
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.linalg.inv(Aw.T @ Aw) * sigma2
    cov[3:, 3:] = np.eye(3) * max(float(np.mean(rot_dev**2)), np.radians(0.1) ** 2)
    diag = {"plane_rms_m": float(np.sqrt(sigma2)), "num_planes": int(len(A)),
            "rotation_spread_deg": np.degrees(rot_dev).tolist()}
    return make_T(R, C), 0.5 * (cov + cov.T), diag


def _pose(T: np.ndarray) -> "poselib.CameraPose":
    p = poselib.CameraPose()
    p.R, p.t = T[:3, :3], T[:3, 3]
    return p


def refine_jointly(obs: list[RelativeObservation], T_world_query: np.ndarray, intr_query: Intrinsics
                   ) -> np.ndarray:
    """Rotation and centre refined together on all keyframes' inlier matches (Sampson error).

    The keyframes form one generalized camera with known extrinsics (poselib's generalized
    relative pose refinement), so the metric scale comes from the keyframe centres as well.
    """
    matches = []
    for j, o in enumerate(obs):
        m = poselib.PairwiseMatches()
        m.cam_id1, m.cam_id2 = j, 0
        m.x1, m.x2 = np.ascontiguousarray(o.pixels_kf, np.float64), np.ascontiguousarray(o.pixels_query, np.float64)
        matches.append(m)
    pose, _ = poselib.refine_generalized_relative_pose(
        matches, _pose(invert_T(T_world_query)), [_pose(invert_T(o.T_world_kf)) for o in obs],
        [camera_dict(o.intrinsics_kf) for o in obs], [_pose(np.eye(4))], [camera_dict(intr_query)],
        {"loss_type": "CAUCHY", "loss_scale": 1.0})
    return invert_T(make_T(np.asarray(pose.R), np.asarray(pose.t)))


def _signed_sampson(obs: list[RelativeObservation], T_world_query: np.ndarray, intr_query: Intrinsics
                    ) -> np.ndarray:
    out = []
    for o in obs:
        F = fundamental_from_poses(o.T_world_kf, o.intrinsics_kf, T_world_query, intr_query)
        ha = np.column_stack([o.pixels_kf, np.ones(len(o.pixels_kf))])
        hb = np.column_stack([o.pixels_query, np.ones(len(o.pixels_query))])
        Fa, Ftb = ha @ F.T, hb @ F
        den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
        out.append(np.einsum("ij,ij->i", hb, Fa) / np.sqrt(np.maximum(den, 1e-30)))
    return np.concatenate(out)


def joint_covariance(obs: list[RelativeObservation], T_world_query: np.ndarray, intr_query: Intrinsics,
                     step: float = 1e-6) -> np.ndarray:
    """6x6 ``sigma^2 (J^T J)^-1`` of the signed Sampson errors (px) w.r.t. (rho, phi) of T_world_query.

    Same parameterisation as the PnP covariance (centre + rho, rotation exp(phi) on the left);
    J by central differences, sigma from the residuals (robust, 1.4826 MAD), 3-sigma outliers out.
    """
    r0 = _signed_sampson(obs, T_world_query, intr_query)
    J = np.zeros((len(r0), 6))
    for k in range(6):
        cols = []
        for sign in (1.0, -1.0):
            xi = np.zeros(6)
            xi[k] = sign * step
            T = make_T(so3_exp(xi[3:]) @ T_world_query[:3, :3], T_world_query[:3, 3] + xi[:3])
            cols.append(_signed_sampson(obs, T, intr_query))
        J[:, k] = (cols[0] - cols[1]) / (2 * step)
    sigma = max(1.4826 * float(np.median(np.abs(r0))), 1e-12)
    keep = np.abs(r0) < 3.0 * sigma
    cov = np.linalg.inv(J[keep].T @ J[keep]) * sigma**2
    return 0.5 * (cov + cov.T)



@dataclass(frozen=True)
class RelativePose:
    """The fallback's answer: ``T_world_cam`` None (and ``reason``) when it found no pose."""

    T_world_cam: np.ndarray | None
    covariance: np.ndarray | None
    num_inliers: int                      # median inliers of the keyframes used
    reason: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)


def relative_fallback(entries: Mapping[int, "KeyframeEntry"], feats: Features, intr: Intrinsics,
                      kf_ids: list[int], query: QuerySettings, max_epipolar_px: float) -> RelativePose:
    """Relative poses to the keyframes ``kf_ids`` (2D-2D matches, essential matrices), the centre
    from the intersection of their rays, refined jointly; its covariance scaled like PnP's."""
    obs = []
    for kf_id in kf_ids:
        e = entries[kf_id]
        m = match_descriptors(feats.descriptors, e.features.descriptors, query.match_ratio)
        if len(m) < query.fallback_min_inliers:
            continue
        o = relative_observation(kf_id, e.features.keypoints_px[m[:, 1]], e.intrinsics, e.T_local_cam,
                                 feats.keypoints_px[m[:, 0]], intr, max_epipolar_px)
        if o is not None and o.num_inliers >= query.fallback_min_inliers:
            obs.append(o)
    diag: dict[str, Any] = {"method": "relative", "relative_keyframes": [o.kf_id for o in obs],
                            "relative_inliers": [o.num_inliers for o in obs]}
    solved = intersect_rays(obs)
    if solved is None:
        return RelativePose(None, None, 0, f"too few 2D-3D matches and only {len(obs)} keyframe(s) with a "
                            "consistent relative pose", diag)
    T, _, extra = solved
    T_refined = refine_jointly(obs, T, intr)
    extra["joint_refinement_shift_m"] = float(np.linalg.norm(T_refined[:3, 3] - T[:3, 3]))
    n_matches = sum(o.num_inliers for o in obs)
    inflation = (max(1.0, n_matches / query.max_independent_inliers) if query.max_independent_inliers
                 else 1.0)
    cov = joint_covariance(obs, T_refined, intr) * inflation
    extra["covariance_inflation"] = inflation
    diag.update(extra)
    return RelativePose(T_refined, cov, int(np.median([o.num_inliers for o in obs])), "", diag)
