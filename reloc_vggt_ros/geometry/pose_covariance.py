"""Pose covariances under a change of frame: the adjoint of a rigid transform.

A 6x6 pose covariance here (RelocResult, geometry_msgs/PoseWithCovariance) is over
``xi = (rho, phi)`` with the perturbation ``t' = t + rho`` (position in the parent frame) and
``R' = exp(phi) R`` (rotation vector on the left, about the parent's fixed axes):
:func:`perturb_pose` applies it, :func:`pose_delta` inverts it. Composing the uncertain pose with
fixed transforms, ``T_a_d = T_a_b · T_b_c · T_c_d``, maps ``xi`` linearly to first order:

* a fixed transform on the right (``T_c_d``, e.g. camera -> base_link) moves the pose's origin
  by the lever arm ``l = R_b_c t_c_d`` (in the parent's axes): ``rho' = rho - [l]x phi``,
  ``phi' = phi``;
* a fixed transform on the left (``T_a_b``, a change of parent frame, e.g. odom -> map)
  rotates both halves: ``rho' = R_a_b rho``, ``phi' = R_a_b phi``.

That is the adjoint of SE(3) written for this (decoupled) parameterisation;
:func:`transform_pose_covariance` returns ``J C J^T``.
"""

from __future__ import annotations

import numpy as np

from .se3 import _hat, make_T, so3_exp, so3_log

__all__ = ["perturb_pose", "pose_delta", "pose_covariance_jacobian", "transform_pose_covariance"]


def perturb_pose(T: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """``T`` moved by ``xi = (rho, phi)``: ``[exp(phi) R | t + rho]`` (the covariance layout)."""
    xi = np.asarray(xi, float)
    return make_T(so3_exp(xi[3:]) @ T[:3, :3], T[:3, 3] + xi[:3])


def pose_delta(T_ref: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``xi`` with ``perturb_pose(T_ref, xi) == T`` (exact, not only to first order)."""
    return np.concatenate([T[:3, 3] - T_ref[:3, 3], so3_log(T[:3, :3] @ T_ref[:3, :3].T)])


def pose_covariance_jacobian(T_b_c: np.ndarray, T_a_b: np.ndarray | None = None,
                             T_c_d: np.ndarray | None = None) -> np.ndarray:
    """d xi(T_a_d) / d xi(T_b_c) [6,6] for ``T_a_d = T_a_b · T_b_c · T_c_d`` (fixed ends)."""
    J = np.eye(6)
    if T_c_d is not None:
        lever = T_b_c[:3, :3] @ np.asarray(T_c_d, float)[:3, 3]
        J[:3, 3:] = -_hat(lever)
    if T_a_b is not None:
        R = np.asarray(T_a_b, float)[:3, :3]
        J = np.kron(np.eye(2), R) @ J
    return J


def transform_pose_covariance(cov: np.ndarray, T_b_c: np.ndarray, T_a_b: np.ndarray | None = None,
                              T_c_d: np.ndarray | None = None) -> np.ndarray:
    """Covariance of ``T_a_d = T_a_b · T_b_c · T_c_d`` from the covariance ``cov`` of ``T_b_c``.

    E.g. the base pose in map from the camera pose's: ``transform_pose_covariance(C_cam,
    T_map_cam, T_c_d=T_cam_base)``; a prior given in odom into map: ``T_a_b=T_map_odom``.
    """
    J = pose_covariance_jacobian(np.asarray(T_b_c, float), T_a_b, T_c_d)
    out = J @ np.asarray(cov, float).reshape(6, 6) @ J.T
    return 0.5 * (out + out.T)
