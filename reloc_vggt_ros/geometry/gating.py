"""Consistency of two uncertain poses: the pose difference, its Mahalanobis distance and the gate.

Poses are ``T_world_cam`` with 6x6 covariances in the layout of ``RelocResult``: ``(x y z)`` of
the camera centre in the world frame, then a small rotation vector applied on the left in world
axes. The difference of pose ``b`` from pose ``a`` in that layout is
``e = (C_b - C_a, log(R_b R_a^T))``; for independent errors its covariance is ``P_a + P_b``, and
``d^2 = e^T (P_a + P_b)^-1 e`` is chi-square with 6 degrees of freedom when both poses are right.

Propagation by a relative motion (odometry, constant velocity) keeps the same layout:
``T_b = T_a D`` moves the centre by ``R_a t_D``, and a left rotation error ``phi`` of ``T_a``
rotates that offset too, so ``P_b = J P_a J^T + Q`` with ``J = [[I, -[R_a t_D]x], [0, I]]`` and
``Q`` the motion's own noise (world axes).
"""

from __future__ import annotations

import math

import numpy as np

from .se3 import so3_exp, so3_log

__all__ = ["GATE_PROBABILITIES", "pose_difference", "mahalanobis2", "chi2_gate", "fuse_poses", "propagate_covariance",
           "motion_noise"]

# chi-square quantiles with 6 degrees of freedom (scipy.stats.chi2.ppf(p, 6))
_CHI2_6 = {0.9: 10.645, 0.95: 12.592, 0.99: 16.812, 0.999: 22.458, 0.9999: 27.856}
GATE_PROBABILITIES = tuple(sorted(_CHI2_6))


def pose_difference(T_a: np.ndarray, T_b: np.ndarray) -> np.ndarray:
    """``(C_b - C_a, log(R_b R_a^T))`` [6] of two ``T_world_cam`` (covariance layout above)."""
    return np.concatenate([T_b[:3, 3] - T_a[:3, 3], so3_log(T_b[:3, :3] @ T_a[:3, :3].T)])


def mahalanobis2(T_a: np.ndarray, P_a: np.ndarray, T_b: np.ndarray, P_b: np.ndarray) -> float:
    """Squared Mahalanobis distance of the two poses under ``P_a + P_b``; inf if that is singular
    or not finite (an unusable covariance never passes a gate)."""
    e = pose_difference(T_a, T_b)
    S = np.asarray(P_a, float) + np.asarray(P_b, float)
    if not (np.all(np.isfinite(S)) and np.all(np.isfinite(e))):
        return math.inf
    try:
        d2 = float(e @ np.linalg.solve(S, e))
    except np.linalg.LinAlgError:
        return math.inf
    return d2 if d2 >= 0 else math.inf


def chi2_gate(probability: float) -> float:
    """The chi-square (6 DoF) threshold a consistent pair passes with ``probability``."""
    if probability not in _CHI2_6:
        raise ValueError(f"gate probability must be one of {sorted(_CHI2_6)}, got {probability}")
    return _CHI2_6[probability]


def fuse_poses(T_a: np.ndarray, P_a: np.ndarray, T_b: np.ndarray, P_b: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Information-weighted mean of two independent estimates of one pose and its covariance:
    ``e`` = :func:`pose_difference`, ``P = (P_a^-1 + P_b^-1)^-1``, ``T = T_a`` moved by ``P P_b^-1 e``
    (centre added, rotation applied on the left), to first order the maximum-likelihood pose."""
    I_a, I_b = np.linalg.inv(P_a), np.linalg.inv(P_b)
    P = np.linalg.inv(I_a + I_b)
    xi = P @ I_b @ pose_difference(T_a, T_b)
    T = np.eye(4)
    T[:3, :3] = so3_exp(xi[3:]) @ T_a[:3, :3]
    T[:3, 3] = T_a[:3, 3] + xi[:3]
    return T, 0.5 * (P + P.T)


def propagate_covariance(T_a: np.ndarray, P_a: np.ndarray, D: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Covariance of ``T_a @ D`` (module doc): ``J P_a J^T + Q``."""
    d = T_a[:3, :3] @ D[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -np.array([[0.0, -d[2], d[1]], [d[2], 0.0, -d[0]], [-d[1], d[0], 0.0]])
    P = J @ np.asarray(P_a, float) @ J.T + Q
    return 0.5 * (P + P.T)


def motion_noise(D: np.ndarray, dt_s: float, sigma_per_m: float, sigma_rad_per_rad: float,
                 sigma_m_per_s: float, sigma_rad_per_s: float) -> np.ndarray:
    """Diagonal noise [6x6] of a relative motion ``D`` over ``dt_s``: a fraction of the distance
    and angle moved plus a random walk in time (standard deviations add in quadrature)."""
    dist, angle = float(np.linalg.norm(D[:3, 3])), float(np.linalg.norm(so3_log(D[:3, :3])))
    dt = max(dt_s, 0.0)
    var_t = (sigma_per_m * dist) ** 2 + sigma_m_per_s**2 * dt
    var_r = (sigma_rad_per_rad * angle) ** 2 + sigma_rad_per_s**2 * dt
    return np.diag([var_t] * 3 + [var_r] * 3)
