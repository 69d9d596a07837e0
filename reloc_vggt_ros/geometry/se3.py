"""SE(3) / Sim(3) pose maths: the one place poses are composed, inverted and converted.

Conventions (README "Conventions"): ``T_a_b`` is a 4x4 matrix mapping points from frame b to frame a.
Quaternions are Hamilton, scalar first ``(w, x, y, z)`` everywhere inside the package; the order
``(x, y, z, w)`` of ROS messages and of VGGT's pose encoding appears only through
:func:`quat_wxyz_to_xyzw` / :func:`quat_xyzw_to_wxyz` at those edges. Batched torch versions of
the formulas are in :mod:`.torch_rotations`. Units: metres and radians.
"""

from __future__ import annotations

import numpy as np
import transforms3d.quaternions as tq

__all__ = [
    "make_T", "invert_T", "compose", "is_valid_T", "quat_to_R", "R_to_quat",
    "quat_wxyz_to_xyzw", "quat_xyzw_to_wxyz", "T_from_quat_t", "T_to_quat_t",
    "make_sim3", "invert_sim3", "apply_T", "project_to_SO3", "so3_exp", "so3_log",
    "se3_exp", "relative_pose", "absolute_from_relative", "camera_centre", "shift_T",
    "shift_transform", "local_origin", "interpolate_T", "R_BODY_OPTICAL", "camera_mount",
]


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 rigid transform from rotation [3,3] and translation [3]."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform without a general matrix inverse (exact for SE(3))."""
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def compose(*Ts: np.ndarray) -> np.ndarray:
    """Left-to-right product ``T_a_b @ T_b_c @ ...``."""
    out = np.eye(4)
    for T in Ts:
        out = out @ T
    return out


def is_valid_T(T: np.ndarray, tol: float = 1e-6) -> bool:
    """True for a finite 4x4 rigid transform (orthonormal, det +1, last row 0 0 0 1)."""
    T = np.asarray(T)
    return T.shape == (4, 4) and bool(valid_T_mask(T[None], tol)[0])


def valid_T_mask(Ts: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """bool [N]: :func:`is_valid_T` of each of ``Ts`` [N,4,4], in one pass (a map's 100k poses)."""
    Ts = np.asarray(Ts, dtype=float).reshape(-1, 4, 4)
    finite = np.isfinite(Ts).all(axis=(1, 2))
    T = np.where(finite[:, None, None], Ts, np.eye(4))
    R = T[:, :3, :3]
    eye, last = np.eye(3), np.array([0.0, 0.0, 0.0, 1.0])
    ortho = (np.abs(np.transpose(R, (0, 2, 1)) @ R - eye) <= tol + 1e-5 * np.abs(eye)).all(axis=(1, 2))
    det = np.abs(np.linalg.det(R) - 1.0) < tol
    row = (np.abs(T[:, 3] - last) <= tol + 1e-5 * np.abs(last)).all(axis=1)
    return finite & ortho & det & row


def project_to_SO3(M: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (Frobenius) to ``M`` via SVD."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def quat_to_R(q_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) w-first quaternion."""
    q = np.asarray(q_wxyz, dtype=float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has no direction")
    return tq.quat2mat(q / n)


def R_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit w-first quaternion with w >= 0 for a rotation matrix."""
    q = tq.mat2quat(np.asarray(R, dtype=float))
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """Edges only (ROS, VGGT encoding): internal (w, x, y, z) -> (x, y, z, w)."""
    q = np.asarray(q, dtype=float)
    return np.array([q[1], q[2], q[3], q[0]])


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """Edges only (ROS, VGGT encoding): (x, y, z, w) -> internal (w, x, y, z)."""
    q = np.asarray(q, dtype=float)
    return np.array([q[3], q[0], q[1], q[2]])


def T_from_quat_t(q_wxyz: np.ndarray, t: np.ndarray) -> np.ndarray:
    return make_T(quat_to_R(q_wxyz), t)


def T_to_quat_t(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return R_to_quat(T[:3, :3]), T[:3, 3].copy()


def make_sim3(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 similarity ``x -> s R x + t``."""
    S = make_T(R, t)
    S[:3, :3] *= s
    return S


def invert_sim3(S: np.ndarray) -> np.ndarray:
    sR = S[:3, :3]
    s = np.cbrt(np.linalg.det(sR))
    R = sR / s
    return make_sim3(1.0 / s, R.T, -(R.T @ S[:3, 3]) / s)


def apply_T(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Transform points [N,3] by a 4x4 rigid or similarity transform."""
    X = np.asarray(X, dtype=float)
    return X @ T[:3, :3].T + T[:3, 3]


def _hat(w: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vector [3] (radians) -> rotation matrix."""
    w = np.asarray(w, dtype=float)
    th = np.linalg.norm(w)
    K = _hat(w)
    if th < 1e-10:
        return np.eye(3) + K
    return np.eye(3) + np.sin(th) / th * K + (1 - np.cos(th)) / th**2 * (K @ K)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> rotation vector [3] (radians), stable near 0 and pi.

    The angle comes from ``atan2(|v|, w)`` of the (w >= 0) quaternion, not ``acos(w)``, which
    loses all digits below ~1e-8 rad (small rotations are what covariances are made of).
    """
    q = R_to_quat(R)
    n = float(np.linalg.norm(q[1:]))
    if n == 0.0:
        return np.zeros(3)
    return q[1:] * (2.0 * np.arctan2(n, q[0]) / n)


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """Small-perturbation map used for covariances: ``xi = (rho[3], phi[3])`` -> ``T``.

    Rotation and translation are decoupled (``T = [exp(phi) | rho]``): this is the
    parameterisation in which ROS pose covariances are expressed (x y z roll pitch yaw about fixed
    axes at the pose), so a 6x6 covariance over ``xi`` can be published as is.
    """
    xi = np.asarray(xi, dtype=float)
    return make_T(so3_exp(xi[3:]), xi[:3])


def relative_pose(T_world_a: np.ndarray, T_world_b: np.ndarray) -> np.ndarray:
    """``T_a_b = T_world_a^-1 T_world_b``: pose of b expressed in a."""
    return invert_T(T_world_a) @ T_world_b


def absolute_from_relative(T_world_anchor: np.ndarray, T_anchor_query: np.ndarray) -> np.ndarray:
    """``T_world_query = T_world_anchor T_anchor_query`` (Reloc-VGGT composition)."""
    return T_world_anchor @ T_anchor_query


def camera_centre(T_world_cam: np.ndarray) -> np.ndarray:
    """Camera centre in world coordinates for a camera-to-world pose."""
    return np.asarray(T_world_cam)[:3, 3].copy()


def shift_T(T_world_cam: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Pose(s) [...,4,4] with the camera centre moved by ``offset`` (rotation unchanged), float64.

    A pose in a local frame whose origin lies at ``offset`` in the world becomes the world pose;
    ``shift_T(T_world_cam, -offset)`` is the local one. With a whole-metre ``offset`` both ways
    are exact, so solvers can work on small numbers and the world pose loses nothing.
    """
    T = np.array(T_world_cam, dtype=np.float64)
    T[..., :3, 3] += np.asarray(offset, np.float64)
    return T


def shift_transform(D: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """A transform ``D`` acting on poses of a frame, re-expressed for that frame translated by
    ``+offset``: ``shift_transform(D, o) @ shift_T(T, o) == shift_T(D @ T, o)``."""
    D = np.asarray(D, np.float64)
    o = np.asarray(offset, np.float64)
    return make_T(D[:3, :3], D[:3, 3] + o - D[:3, :3] @ o)


def local_origin(centres: np.ndarray) -> np.ndarray:
    """Origin [3] of a local frame for points near ``centres`` [N,3]: their median, rounded to
    whole metres so that ``X - origin`` is exact in float64 (both are multiples of the ulp of X),
    zeros for no centres. Solving in that frame keeps large world coordinates (UTM, ~5e6 m)
    out of the solvers, where they cost precision (poselib's P3P lost 1.4 -> 8.7 mm at 5e6 m)."""
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    if len(centres) == 0:
        return np.zeros(3)
    return np.round(np.median(centres, axis=0))


def interpolate_T(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose ``alpha`` of the way from T0 to T1 (0 -> T0, 1 -> T1): linear in translation,
    geodesic in rotation (as tf2 interpolates)."""
    R = T0[:3, :3] @ so3_exp(alpha * so3_log(T0[:3, :3].T @ T1[:3, :3]))
    t = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return make_T(R, t)


# REP-103: a body frame (x forward, y left, z up) -> the optical frame of a camera looking along
# its x axis (z forward, x right, y down)
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_mount(translation: np.ndarray, pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """``T_base_cam`` of a camera optical frame mounted at ``translation`` on a REP-105 base,
    looking forward, pitched down by ``pitch_deg`` and turned left by ``yaw_deg``."""
    R = so3_exp(np.array([0.0, 0.0, np.radians(yaw_deg)])) @ so3_exp(np.array([0.0, np.radians(pitch_deg), 0.0]))
    return make_T(R @ R_BODY_OPTICAL, translation)
