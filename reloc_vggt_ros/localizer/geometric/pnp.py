"""Absolute pose from 2D-3D matches (poselib LO-RANSAC P3P + refinement), its covariance and spread.

Covariance: ``sigma^2 (J^T J)^-1`` with ``J`` the Jacobian of the pixel reprojection residuals of
the inliers with respect to a perturbation of ``T_world_cam`` in the layout of RelocResult:
``C' = C + rho`` (camera centre, world frame) and ``R_world_cam' = exp(phi) R_world_cam``
(rotation vector on the left, world axes). ``sigma^2`` is the residual variance of the inliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import poselib

from ...geometry import Intrinsics, apply_T, invert_T, make_T

__all__ = ["PnPResult", "solve_pnp", "pose_covariance", "reprojection_jacobian", "inlier_spread",
           "camera_dict"]


@dataclass
class PnPResult:
    T_world_cam: np.ndarray
    inliers: np.ndarray          # bool [M]
    residuals_px: np.ndarray     # [n_inliers] reprojection error of the inliers
    iterations: int


def camera_dict(intr: Intrinsics) -> dict:
    """poselib camera for OpenCV-convention pixels (poselib is convention-agnostic)."""
    return {"model": "PINHOLE", "width": intr.width, "height": intr.height,
            "params": [intr.fx, intr.fy, intr.cx, intr.cy]}


def _reprojection(T_cam_world: np.ndarray, X: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    Xc = apply_T(T_cam_world, X)
    return intr.project(Xc), Xc


def solve_pnp(x2d: np.ndarray, x3d: np.ndarray, intr: Intrinsics, max_reproj_px: float,
              loss_scale_px: float = 1.0, seed: int = 0) -> PnPResult | None:
    """LO-RANSAC P3P with Cauchy-loss refinement on the inliers; None if no pose is found."""
    if len(x2d) < 4:
        return None
    pose, info = poselib.estimate_absolute_pose(
        np.ascontiguousarray(x2d, np.float64), np.ascontiguousarray(x3d, np.float64), camera_dict(intr),
        {"max_reproj_error": float(max_reproj_px), "seed": seed, "min_iterations": 100},
        {"loss_type": "CAUCHY", "loss_scale": float(loss_scale_px)})
    inliers = np.asarray(info["inliers"], bool)
    if inliers.sum() < 4:
        return None
    T_cam_world = make_T(np.asarray(pose.R), np.asarray(pose.t))
    uv, Xc = _reprojection(T_cam_world, x3d[inliers], intr)
    res = np.linalg.norm(uv - x2d[inliers], axis=1)
    return PnPResult(invert_T(T_cam_world), inliers, res, int(info["iterations"]))


def reprojection_jacobian(T_world_cam: np.ndarray, x3d: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """d(pixel residuals [2N]) / d(rho, phi) [2N,6] for the perturbation in the module doc."""
    R_cw = T_world_cam[:3, :3].T
    d = x3d - T_world_cam[:3, 3]
    Xc = d @ R_cw.T
    z = Xc[:, 2]
    n = len(z)
    Jpi = np.zeros((n, 2, 3))
    Jpi[:, 0, 0] = intr.fx / z
    Jpi[:, 0, 2] = -intr.fx * Xc[:, 0] / z**2
    Jpi[:, 1, 1] = intr.fy / z
    Jpi[:, 1, 2] = -intr.fy * Xc[:, 1] / z**2
    hat = np.zeros((n, 3, 3))          # [d]x
    hat[:, 0, 1], hat[:, 0, 2] = -d[:, 2], d[:, 1]
    hat[:, 1, 0], hat[:, 1, 2] = d[:, 2], -d[:, 0]
    hat[:, 2, 0], hat[:, 2, 1] = -d[:, 1], d[:, 0]
    return np.concatenate([Jpi @ -R_cw, Jpi @ (R_cw @ hat)], axis=2).reshape(-1, 6)


def pose_covariance(T_world_cam: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, intr: Intrinsics,
                    sigma_px: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """6x6 covariance over (x y z rx ry rz) of T_world_cam and the residual scale (px).

    ``x2d`` [N,2], ``x3d`` [N,3] are the inlier correspondences (N >= 4). With ``sigma_px`` [N]
    (each match's expected localisation error) residuals and Jacobian rows are divided by it and
    ``sigma^2`` is the variance of those normalised residuals, so only the relative sigmas are
    assumed; the scale returned is then the RMS pixel residual instead of ``sigma``.
    """
    J = reprojection_jacobian(T_world_cam, x3d, intr)
    uv, _ = _reprojection(invert_T(T_world_cam), x3d, intr)
    r_px = uv - x2d
    w = np.ones(len(x2d)) if sigma_px is None else 1.0 / np.asarray(sigma_px, np.float64)
    r = (r_px * w[:, None]).reshape(-1)
    J = (J.reshape(-1, 2, 6) * w[:, None, None]).reshape(-1, 6)
    sigma2 = float(r @ r) / max(r.size - 6, 1)
    cov = np.linalg.inv(J.T @ J) * sigma2
    scale = np.sqrt(sigma2) if sigma_px is None else np.sqrt(np.mean(np.sum(r_px**2, axis=1) / 2))
    return 0.5 * (cov + cov.T), float(scale)


def inlier_spread(x2d: np.ndarray, intr: Intrinsics) -> float:
    """Area of the inliers' convex hull as a fraction of the image (0..1)."""
    if len(x2d) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(x2d, np.float32))
    return float(cv2.contourArea(hull)) / float(intr.width * intr.height)
