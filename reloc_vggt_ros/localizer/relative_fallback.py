"""Fallback when the map has too few 3D points: relative poses to >= 2 keyframes, scale from their baseline.

Each keyframe j gives, from an essential matrix (poselib 5-point LO-RANSAC + refinement), the
query rotation and the *direction* from its centre towards the query centre. The known keyframe
centres fix the scale: the query centre is the least-squares intersection of those rays, and the
rotation is the chordal mean of the per-keyframe estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib

from ..geometry import Intrinsics, make_T, project_to_SO3, rotation_error_deg
from .pose_solver import camera_dict

__all__ = ["RelativeObservation", "relative_observation", "intersect_rays"]


@dataclass
class RelativeObservation:
    """What one keyframe says about the query: rotation and unit ray from the keyframe centre."""

    kf_id: int
    R_world_query: np.ndarray
    centre_kf: np.ndarray
    direction: np.ndarray
    num_inliers: int


def relative_observation(kf_id: int, x_kf: np.ndarray, intr_kf: Intrinsics, T_world_kf: np.ndarray,
                         x_query: np.ndarray, intr_query: Intrinsics, max_epipolar_px: float
                         ) -> RelativeObservation | None:
    """Relative pose keyframe -> query from matched pixels [M,2]; None if it fails."""
    if len(x_kf) < 5:
        return None
    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(x_kf, np.float64), np.ascontiguousarray(x_query, np.float64),
        camera_dict(intr_kf), camera_dict(intr_query), {"max_epipolar_error": float(max_epipolar_px)}, {})
    n_inl = int(np.sum(info["inliers"]))
    if n_inl < 5:
        return None
    R_q_kf, t_q_kf = np.asarray(pose.R), np.asarray(pose.t)      # X_query = R X_kf + t
    R_world_kf = T_world_kf[:3, :3]
    direction = R_world_kf @ (-R_q_kf.T @ t_q_kf)                  # query centre seen from kf
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    return RelativeObservation(kf_id, R_world_kf @ R_q_kf.T, T_world_kf[:3, 3].copy(), direction, n_inl)


def intersect_rays(obs: list[RelativeObservation]) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(T_world_query, 6x6 covariance, diagnostics) from >= 2 observations, or None if degenerate.

    The position covariance is the least-squares ``sigma^2 A^-1`` of the ray intersection with
    ``sigma`` the RMS point-to-ray distance (floored at 1% of the mean keyframe distance: two rays
    always "meet" with small residuals); the rotation covariance is the spread of the per-keyframe
    rotations (floored at 0.5 degrees).
    """
    if len(obs) < 2:
        return None
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for o in obs:
        P = np.eye(3) - np.outer(o.direction, o.direction)
        A += P
        b += P @ o.centre_kf
    if np.linalg.cond(A) > 1e6:
        return None
    C = np.linalg.solve(A, b)
    dists, ranges = [], []
    for o in obs:
        v = C - o.centre_kf
        s = float(v @ o.direction)
        if s <= 0:
            return None                                  # behind a keyframe: inconsistent
        ranges.append(s)
        dists.append(float(np.linalg.norm(v - s * o.direction)))
    R = project_to_SO3(sum(o.R_world_query for o in obs))
    rot_dev = np.array([np.radians(rotation_error_deg(R, o.R_world_query)) for o in obs])
    sigma_pos = max(float(np.sqrt(np.mean(np.square(dists)))), 0.01 * float(np.mean(ranges)))
    var_rot = max(float(np.mean(rot_dev**2)), np.radians(0.5) ** 2)
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.linalg.inv(A) * sigma_pos**2
    cov[3:, 3:] = np.eye(3) * var_rot
    diag = {"ray_residual_m": dists, "range_m": ranges, "rotation_spread_deg": np.degrees(rot_dev).tolist()}
    return make_T(R, C), 0.5 * (cov + cov.T), diag
