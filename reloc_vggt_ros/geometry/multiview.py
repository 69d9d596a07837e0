"""Motion averaging from several relative poses: rotation mean, ray intersection, covariance
propagation through a pose function (the late-fusion pairwise backend and map-free Track 2).

Imported as ``reloc_vggt_ros.geometry.multiview`` (not re-exported by the package).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .pose_covariance import perturb_pose, pose_delta
from .se3 import project_to_SO3

__all__ = ["chordal_mean_rotation", "intersect_lines", "pose_covariance_of"]


def chordal_mean_rotation(Rs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The rotation closest to ``Rs`` [N,3,3] in the (weighted) chordal L2 sense: the SVD
    projection of their weighted sum onto SO(3) (exact minimiser of ``sum w ||R - R_i||_F^2``)."""
    Rs = np.asarray(Rs, float).reshape(-1, 3, 3)
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, float).reshape(-1)
    if len(Rs) == 0 or len(w) != len(Rs) or not np.all(w >= 0) or w.sum() <= 0:
        raise ValueError(f"need >= 1 rotation and as many non-negative weights (sum > 0), got {len(Rs)}, {len(w)}")
    return project_to_SO3(np.einsum("n,nij->ij", w, Rs))


def intersect_lines(origins: np.ndarray, directions: np.ndarray, weights: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares point closest to the lines ``origins[i] + s d_i``: minimises
    ``sum w_i |(I - d_i d_i^T)(X - o_i)|^2``. Returns ``(X, A, residuals)`` with ``A`` the 3x3
    normal matrix (its inverse times the residual variance is X's covariance; it is singular when
    all lines are parallel) and the perpendicular distances [N] of X to each line."""
    o = np.asarray(origins, float).reshape(-1, 3)
    d = np.asarray(directions, float).reshape(-1, 3)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    w = np.ones(len(o)) if weights is None else np.asarray(weights, float).reshape(-1)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]                    # projectors [N,3,3]
    A = np.einsum("n,nij->ij", w, P)
    b = np.einsum("n,nij,nj->i", w, P, o)
    X = np.linalg.lstsq(A, b, rcond=None)[0]
    residuals = np.linalg.norm(np.einsum("nij,nj->ni", P, X[None] - o), axis=1)
    return X, A, residuals


def pose_covariance_of(fn: Callable[[np.ndarray], np.ndarray], T: np.ndarray, cov: np.ndarray,
                       step: float = 1e-6) -> np.ndarray:
    """Covariance of ``fn(T)`` (a pose) from the 6x6 ``cov`` of ``T`` in the layout of
    ``pose_covariance`` (``perturb_pose``), for any ``fn`` (e.g. one that inverts ``T``, which
    ``transform_pose_covariance`` does not cover); the Jacobian by central differences."""
    out0 = fn(T)
    J = np.zeros((6, 6))
    for k in range(6):
        xi = np.zeros(6)
        xi[k] = step
        J[:, k] = (pose_delta(out0, fn(perturb_pose(T, xi))) - pose_delta(out0, fn(perturb_pose(T, -xi)))) / (2 * step)
    out = J @ cov @ J.T
    return 0.5 * (out + out.T)
