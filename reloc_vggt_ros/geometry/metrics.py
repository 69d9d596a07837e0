"""Pose-error metrics (metres, degrees for reports)."""

from __future__ import annotations

import numpy as np

from .se3 import invert_T

__all__ = ["rotation_error_deg", "translation_error", "pose_error", "recall_at"]


def rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Geodesic angle between two rotations in degrees.

    ``atan2(sin, cos)`` of the relative rotation rather than ``acos`` of the trace, which
    cannot resolve angles below ~1e-6 deg.
    """
    dR = np.asarray(R_a).T @ np.asarray(R_b)
    s = 0.5 * np.linalg.norm([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]])
    c = (np.trace(dR) - 1.0) / 2.0
    return float(np.degrees(np.arctan2(s, c)))


def translation_error(T_world_cam_est: np.ndarray, T_world_cam_gt: np.ndarray) -> float:
    """Distance between camera centres (camera-to-world poses)."""
    return float(np.linalg.norm(T_world_cam_est[:3, 3] - T_world_cam_gt[:3, 3]))


def pose_error(T_world_cam_est: np.ndarray, T_world_cam_gt: np.ndarray) -> tuple[float, float]:
    """(camera-centre distance, geodesic rotation error in degrees)."""
    dT = invert_T(T_world_cam_gt) @ T_world_cam_est
    return translation_error(T_world_cam_est, T_world_cam_gt), rotation_error_deg(np.eye(3), dT[:3, :3])


def recall_at(t_err: np.ndarray, r_err_deg: np.ndarray, t_max: float, r_max_deg: float) -> float:
    """Fraction of queries with both errors within bounds; unlocalized queries pass ``inf``."""
    t_err, r_err_deg = np.asarray(t_err, float), np.asarray(r_err_deg, float)
    if t_err.size == 0:
        return 0.0
    return float(np.mean((t_err <= t_max) & (r_err_deg <= r_max_deg)))
