"""The motion prior: where the camera is now, given the last pose and odometry or its velocity.

With odometry (``T_odom_cam`` at both stamps) the camera moved by ``D = T_odom_cam(t0)^-1
T_odom_cam(t1)`` in its own frame; without, the last two poses' relative motion is scaled to the
new interval (constant velocity). Either way ``T_pred = T_world_cam(t0) D`` and the covariance
grows by the motion's noise (``geometry.gating.propagate_covariance``, ``motion_noise``).
Odometry that moved faster than ``max_speed_m_s`` / ``max_turn_rad_s`` has jumped and is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry import invert_T, make_T, so3_exp, so3_log
from ...geometry.gating import motion_noise, propagate_covariance
from .config import MotionSettings

__all__ = ["Reference", "Prediction", "scale_motion", "predict"]


@dataclass(frozen=True)
class Reference:
    """A pose the next frames are predicted from (the last published one, or a held fix)."""

    T_world_cam: np.ndarray
    covariance: np.ndarray
    stamp_ns: int
    T_odom_cam: np.ndarray | None = None        # odometry at the same stamp, if known


@dataclass(frozen=True)
class Prediction:
    T_world_cam: np.ndarray
    covariance: np.ndarray
    source: str                                 # "odometry", "constant velocity" or "static"
    note: str = ""                              # why odometry was not used ('' if it was or none given)


def scale_motion(D: np.ndarray, s: float) -> np.ndarray:
    """``D`` scaled to ``s`` times its length (rotation vector and translation alike)."""
    return make_T(so3_exp(s * so3_log(D[:3, :3])), s * D[:3, 3])


def _odometry_jump(D: np.ndarray, dt_s: float, m: MotionSettings) -> str:
    dist, angle = float(np.linalg.norm(D[:3, 3])), float(np.linalg.norm(so3_log(D[:3, :3])))
    if not np.all(np.isfinite(D)):
        return "odometry is not finite"
    if dist > m.max_speed_m_s * max(dt_s, 1e-3) or angle > m.max_turn_rad_s * max(dt_s, 1e-3):
        return (f"odometry jumped {dist:.3g} m / {np.degrees(angle):.1f} deg in {dt_s:.3f} s (over "
                f"{m.max_speed_m_s} m/s or {m.max_turn_rad_s} rad/s)")
    return ""


def predict(ref: Reference, previous: Reference | None, stamp_ns: int, T_odom_cam: np.ndarray | None,
            m: MotionSettings) -> Prediction:
    """The pose at ``stamp_ns`` from ``ref`` (and ``previous`` for the velocity)."""
    dt = (stamp_ns - ref.stamp_ns) * 1e-9
    note = ""
    if T_odom_cam is not None and ref.T_odom_cam is not None:
        D = invert_T(ref.T_odom_cam) @ T_odom_cam
        note = _odometry_jump(D, dt, m)
        if not note:
            Q = motion_noise(D, dt, m.odometry_sigma_per_m, m.odometry_sigma_rad_per_rad,
                             m.odometry_sigma_m_per_sqrt_s, m.odometry_sigma_rad_per_sqrt_s)
            return Prediction(ref.T_world_cam @ D, propagate_covariance(ref.T_world_cam, ref.covariance, D, Q),
                              "odometry")
        note += ": constant velocity instead"
    source, D = "static", np.eye(4)
    if previous is not None and ref.stamp_ns > previous.stamp_ns:
        D = scale_motion(invert_T(previous.T_world_cam) @ ref.T_world_cam,
                         dt / ((ref.stamp_ns - previous.stamp_ns) * 1e-9))
        source = "constant velocity"
    Q = motion_noise(D, dt, m.odometry_sigma_per_m, m.odometry_sigma_rad_per_rad,
                     m.velocity_sigma_m_per_sqrt_s, m.velocity_sigma_rad_per_sqrt_s)
    return Prediction(ref.T_world_cam @ D, propagate_covariance(ref.T_world_cam, ref.covariance, D, Q), source,
                      note)
