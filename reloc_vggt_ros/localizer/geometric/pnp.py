"""Absolute pose from 2D-3D matches: PnP RANSAC, weighted refinement, covariance, inlier spread.

* :func:`solve_pnp`: poselib LO-RANSAC P3P with Cauchy refinement.
* :func:`refine_weighted`: the RANSAC pose refined with each residual divided by its match's
  expected localisation error. A SIFT keypoint is localised to a fraction of its own size:
  against ground-truth poses the reprojection error of PnP inliers is ~0.06-0.08 x the keypoint
  size for sizes 2-20 px (median 0.19 px below size 3, 0.72 px at 8-12, 1.16 px at 12-20 on the
  temple ring, 1024 query keypoints), so an unweighted refinement lets the coarse keypoints pull
  the pose (:func:`keypoint_sigma_px`: ``sigma_i = 0.07 x size_i``; LK-tracked points carry their
  own sigma). Iteratively reweighted Gauss-Newton with a Cauchy loss, stepping in the camera frame.
* :func:`pose_covariance`: ``sigma^2 (J^T J)^-1`` with ``J`` the Jacobian of the pixel
  reprojection residuals of the inliers with respect to a perturbation of ``T_world_cam`` in the
  layout of RelocResult: ``C' = C + rho`` (camera centre, world frame) and ``R_world_cam' =
  exp(phi) R_world_cam`` (rotation vector on the left, world axes). ``sigma^2`` is the residual
  variance of the inliers. :func:`covariance` adds the map terms (shared map errors, a
  disagreeing other session).

Both Jacobians are :func:`projection_jacobian` (d pixel / d camera point) chained with the
derivative of the camera point for their parameterisation: the one projection Jacobian of the
backend (``relative_pose`` differentiates Sampson errors numerically and has none).

Camera rigs: a rig's pose is its base's, ``T_world_base``; camera ``c`` sits at
``T_world_base @ T_base_cam[c]``. :func:`solve_rig_pnp` is poselib's generalized absolute pose
(LO-RANSAC GP3P + Cauchy refinement over every camera's matches), :func:`rig_pose_covariance`
the covariance of the base pose in the same layout (a perturbation ``(rho, phi)`` of the base
moves camera ``c``'s centre by ``rho + phi x (C_c - C_base)`` and turns it by ``phi``: each
camera's reprojection Jacobian times that adjoint, all cameras stacked); a single camera is the
rig of one camera at the base.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import poselib

from ...geometry import Intrinsics, apply_T, invert_T, make_T, pose_covariance_jacobian, so3_exp, so3_log
from .config import QuerySettings

__all__ = ["PnPResult", "Correspondences", "KeyframeObservations", "solve_pnp", "unique_inliers", "projection_jacobian",
           "reprojection_jacobian", "keypoint_sigma_px", "refine_weighted", "refine_rig_weighted", "pose_covariance",
           "other_session_offset", "PoseCovariance",
           "covariance", "inlier_spread", "camera_dict"]


@dataclass
class PnPResult:
    T_world_cam: np.ndarray
    inliers: np.ndarray          # bool [M]
    residuals_px: np.ndarray     # [n_inliers] reprojection error of the inliers
    iterations: int


@dataclass(frozen=True)
class Correspondences:
    """The unique 2D-3D inliers of a pose (``diagnostics["correspondences"]`` of a PnP result): what
    camera-rate tracking follows from frame to frame."""

    x2d: np.ndarray              # [N,2] query image pixels (raw: distorted for a lens; LK-refined where tracked)
    x3d: np.ndarray              # [N,3] map points, world frame
    sigma_px: np.ndarray         # [N] expected localisation error of each 2D point (1 = unweighted)
    # every inlier match behind the points (a point is matched through several keyframes): tracking
    # re-localises each point from these keyframe observations in every frame, as the fix did
    observations: "KeyframeObservations | None" = None


@dataclass(frozen=True)
class KeyframeObservations:
    """The PnP inliers of a fix as keyframe observations of its :class:`Correspondences` points."""

    point: np.ndarray            # [M] int: the point (row of ``Correspondences``) whose query pixel it is
    x3d: np.ndarray              # [M,3] world: the 3D point of that keyframe's keypoint
    kf_id: np.ndarray            # [M] int
    kf_kp: np.ndarray            # [M] int: the keypoint in that keyframe


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


@dataclass(frozen=True)
class RigObservations:
    """One rig camera's 2D-3D correspondences: ideal pixels ``x2d`` [N,2] of the pinhole
    ``intr``, points ``x3d`` [N,3], the camera's extrinsic ``T_base_cam``, optional sigmas [N]."""

    x2d: np.ndarray
    x3d: np.ndarray
    intr: Intrinsics
    T_base_cam: np.ndarray
    sigma_px: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> "RigObservations":
        return RigObservations(self.x2d[mask], self.x3d[mask], self.intr, self.T_base_cam,
                               None if self.sigma_px is None else self.sigma_px[mask])


def _poselib_pose(T_cam_world: np.ndarray) -> "poselib.CameraPose":
    p = poselib.CameraPose()
    p.R, p.t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    return p


def solve_rig_pnp(cams: list[RigObservations], max_reproj_px: float, loss_scale_px: float = 1.0,
                  seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], int] | None:
    """``(T_world_base, inliers per camera (bool), RANSAC iterations)`` of the generalized
    absolute pose (LO-RANSAC + Cauchy refinement) over every camera's matches; None if there is
    no pose with >= 4 inliers."""
    if sum(len(c.x2d) for c in cams) < 4:
        return None
    pose, info = poselib.estimate_generalized_absolute_pose(
        [np.ascontiguousarray(c.x2d, np.float64) for c in cams], [np.ascontiguousarray(c.x3d, np.float64) for c in cams],
        [_poselib_pose(invert_T(c.T_base_cam)) for c in cams], [camera_dict(c.intr) for c in cams],
        {"max_reproj_error": float(max_reproj_px), "seed": seed, "min_iterations": 100},
        {"loss_type": "CAUCHY", "loss_scale": float(loss_scale_px)})
    inliers = [np.asarray(m, bool).reshape(-1) for m in info["inliers"]]
    if sum(int(m.sum()) for m in inliers) < 4:
        return None
    return invert_T(make_T(np.asarray(pose.R), np.asarray(pose.t))), inliers, int(info["iterations"])


def unique_inliers(q_idx: np.ndarray, inliers: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Inlier mask keeping one correspondence per query keypoint (smallest residual).

    A keypoint matched to the same physical point through several keyframes must count once,
    in the confidence and in the covariance.
    """
    res = np.full(len(q_idx), np.inf)
    res[inliers] = residuals
    order = np.lexsort((res, q_idx))
    first = np.ones(len(order), bool)
    first[1:] = q_idx[order][1:] != q_idx[order][:-1]
    keep = np.zeros(len(q_idx), bool)
    keep[order[first]] = True
    return keep & inliers


def _hat(v: np.ndarray) -> np.ndarray:
    """[N,3,3] cross-product matrices ``[v]x`` of [N,3] vectors."""
    hat = np.zeros((len(v), 3, 3))
    hat[:, 0, 1], hat[:, 0, 2] = -v[:, 2], v[:, 1]
    hat[:, 1, 0], hat[:, 1, 2] = v[:, 2], -v[:, 0]
    hat[:, 2, 0], hat[:, 2, 1] = -v[:, 1], v[:, 0]
    return hat


def projection_jacobian(Xc: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """d(pixel)/d(camera point) [N,2,3] of the pinhole projection of camera points ``Xc`` [N,3]."""
    z = Xc[:, 2]
    J = np.zeros((len(z), 2, 3))
    J[:, 0, 0] = intr.fx / z
    J[:, 0, 2] = -intr.fx * Xc[:, 0] / z**2
    J[:, 1, 1] = intr.fy / z
    J[:, 1, 2] = -intr.fy * Xc[:, 1] / z**2
    return J


def reprojection_jacobian(T_world_cam: np.ndarray, x3d: np.ndarray, intr: Intrinsics,
                          T_base_cam: np.ndarray | None = None) -> np.ndarray:
    """d(pixel residuals [2N]) / d(rho, phi) [2N,6] for the perturbation in the module doc; with
    ``T_base_cam`` the pose is the base's (``T_world_cam`` is then ``T_world_base``) and the
    camera sits at ``T_world_base @ T_base_cam``."""
    T_wc = T_world_cam if T_base_cam is None else T_world_cam @ T_base_cam
    R_cw = T_wc[:3, :3].T
    d = x3d - T_wc[:3, 3]
    Jpi = projection_jacobian(d @ R_cw.T, intr)
    J = np.concatenate([Jpi @ -R_cw, Jpi @ (R_cw @ _hat(d))], axis=2).reshape(-1, 6)
    # a base perturbation moves the camera by the adjoint of the extrinsic (its lever arm)
    return J if T_base_cam is None else J @ pose_covariance_jacobian(T_world_cam, T_c_d=T_base_cam)


def _camera_step_jacobian(Xc: np.ndarray, intr: Intrinsics, T_cam_base: np.ndarray | None = None) -> np.ndarray:
    """d(pixels)/d(v, w) [N,2,6] for the camera-frame step ``Xc' = exp(w) Xc + v``; with
    ``T_cam_base``, for the base-frame step ``Xb' = exp(w) Xb + v`` of the base-frame points."""
    # [d pi/dX, d pi/dX (-[Xc]x)], the rotation columns in closed form (no batched 3x3 products:
    # this runs in every iteration of every refinement); a base-frame step is the camera-frame step
    # moved by the extrinsic's adjoint, one 6x6 product
    xz, yz = Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2]
    J = np.empty((len(Xc), 2, 6))
    J[:, :, :3] = projection_jacobian(Xc, intr)
    J[:, 0, 3], J[:, 0, 4], J[:, 0, 5] = -intr.fx * xz * yz, intr.fx * (1.0 + xz * xz), -intr.fx * yz
    J[:, 1, 3], J[:, 1, 4], J[:, 1, 5] = -intr.fy * (1.0 + yz * yz), intr.fy * xz * yz, intr.fy * xz
    if T_cam_base is None:
        return J
    R, t = T_cam_base[:3, :3], T_cam_base[:3, 3]
    adjoint = np.zeros((6, 6))
    adjoint[:3, :3], adjoint[3:, 3:] = R, R
    adjoint[:3, 3:] = _hat(t[None])[0] @ R
    return J @ adjoint


def keypoint_sigma_px(sizes_px: np.ndarray, sigma_per_size: float = 0.07, min_sigma_px: float = 0.05
                      ) -> np.ndarray:
    """Expected localisation error (px) of keypoints of the given SIFT sizes (px)."""
    return np.maximum(sigma_per_size * np.asarray(sizes_px, np.float64), min_sigma_px)


def refine_weighted(T_world_cam: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, sigma: np.ndarray,
                    intr: Intrinsics, loss_scale: float = 2.0, iterations: int = 10, rms_step_px: float = 0.0
                    ) -> np.ndarray:
    """T_world_cam minimising the Cauchy loss of the sigma-normalised reprojection residuals.

    Stops when a step moves no point by more than 1e-4 of its sigma, or (``rms_step_px`` > 0) moves
    the points by less than that RMS in pixels, or after ``iterations``. Returns the input pose
    unchanged if a step is singular or not finite (degenerate inliers).
    """
    return refine_rig_weighted(T_world_cam, [RigObservations(x2d, x3d, intr, np.eye(4), sigma)], loss_scale,
                               iterations, rms_step_px)


def refine_rig_weighted(T_world_base: np.ndarray, cams: list[RigObservations], loss_scale: float = 2.0,
                        iterations: int = 10, rms_step_px: float = 0.0) -> np.ndarray:
    """:func:`refine_weighted` of a rig's base pose over every camera's inliers (each with sigmas).

    Iteratively reweighted Gauss-Newton stepping in the base frame, ``Xb' = exp(w) Xb + v``
    (for a single camera at the base: the camera frame).
    """
    T_bw = invert_T(T_world_base)
    T_cbs = [invert_T(c.T_base_cam) for c in cams]
    sigma_all = np.concatenate([c.sigma_px for c in cams])
    for _ in range(iterations):
        rs, Js = [], []
        for c, T_cb in zip(cams, T_cbs):
            Xb = apply_T(T_bw, c.x3d)
            Xc = apply_T(T_cb, Xb)
            rs.append((c.intr.project(Xc) - c.x2d) / c.sigma_px[:, None])                 # [N,2]
            Js.append(_camera_step_jacobian(Xc, c.intr, T_cb) / c.sigma_px[:, None, None])
        r, J = np.concatenate(rs), np.concatenate(Js).reshape(-1, 6)
        w = 1.0 / (1.0 + np.sum(r**2, axis=1) / loss_scale**2)             # Cauchy IRLS weight
        Jw = J * np.repeat(w, 2)[:, None]
        try:
            delta = -np.linalg.solve(Jw.T @ J, Jw.T @ r.reshape(-1))
        except np.linalg.LinAlgError:
            return T_world_base.copy()
        if not np.all(np.isfinite(delta)):
            return T_world_base.copy()
        dR = so3_exp(delta[3:])
        T_bw[:3, :3] = dR @ T_bw[:3, :3]
        T_bw[:3, 3] = dR @ T_bw[:3, 3] + delta[:3]
        # converged: the step moves no point by more than ~1e-4 of its pixel sigma (or the points
        # by less than rms_step_px: IRLS converges linearly, its last steps move nothing that matters)
        step = J @ delta
        if np.abs(step).max() < 1e-4:
            break
        if rms_step_px and np.sqrt(np.mean((step.reshape(-1, 2) * sigma_all[:, None]) ** 2)) < rms_step_px:
            break
    return invert_T(T_bw)


def pose_covariance(T_world_cam: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, intr: Intrinsics,
                    sigma_px: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """6x6 covariance over (x y z rx ry rz) of T_world_cam and the residual scale (px).

    ``x2d`` [N,2], ``x3d`` [N,3] are the inlier correspondences (N >= 4). With ``sigma_px`` [N]
    (each match's expected localisation error) residuals and Jacobian rows are divided by it and
    ``sigma^2`` is the variance of those normalised residuals, so only the relative sigmas are
    assumed; the scale returned is then the RMS pixel residual instead of ``sigma``.
    """
    return rig_pose_covariance(T_world_cam, [RigObservations(x2d, x3d, intr, np.eye(4), sigma_px)])


def rig_pose_covariance(T_world_base: np.ndarray, cams: list[RigObservations]) -> tuple[np.ndarray, float]:
    """:func:`pose_covariance` of a rig's base pose from every camera's inliers, stacked (all
    cameras with sigmas or none)."""
    J = np.concatenate([reprojection_jacobian(T_world_base, c.x3d, c.intr, c.T_base_cam) for c in cams])
    r_px = np.concatenate([_reprojection(invert_T(T_world_base @ c.T_base_cam), c.x3d, c.intr)[0] - c.x2d
                           for c in cams])
    sigma_px = None if any(c.sigma_px is None for c in cams) else np.concatenate([c.sigma_px for c in cams])
    w = np.ones(len(r_px)) if sigma_px is None else 1.0 / np.asarray(sigma_px, np.float64)
    r = (r_px * w[:, None]).reshape(-1)
    J = (J.reshape(-1, 2, 6) * w[:, None, None]).reshape(-1, 6)
    sigma2 = float(r @ r) / max(r.size - 6, 1)
    cov = np.linalg.inv(J.T @ J) * sigma2
    scale = np.sqrt(sigma2) if sigma_px is None else np.sqrt(np.mean(np.sum(r_px**2, axis=1) / 2))
    return 0.5 * (cov + cov.T), float(scale)


def other_session_offset(excluded_x2d: np.ndarray, excluded_x3d: np.ndarray, excluded_q_idx: np.ndarray,
                         intr: Intrinsics, T_world_cam: np.ndarray, max_reproj_px: float, min_inliers: int
                         ) -> np.ndarray | None:
    """The disagreement ``d`` (centre, rotation vector) between ``T_world_cam`` and the pose the
    excluded keyframes' matches give on their own (``local_map``), or None if they hold fewer
    than ``min_inliers`` inliers (distinct query keypoints)."""
    if len(np.unique(excluded_q_idx)) < min_inliers:
        return None
    pnp = solve_pnp(excluded_x2d, excluded_x3d, intr, max_reproj_px)
    if pnp is None or len(np.unique(excluded_q_idx[pnp.inliers])) < min_inliers:
        return None
    return np.concatenate([pnp.T_world_cam[:3, 3] - T_world_cam[:3, 3],
                           so3_log(pnp.T_world_cam[:3, :3] @ T_world_cam[:3, :3].T)])


@dataclass(frozen=True)
class PoseCovariance:
    """The pose covariance and what went into it."""

    covariance: np.ndarray           # 6x6 over (x y z rx ry rz)
    reproj_rms_px: float
    inflation: float                 # the shared-map-error factor applied
    other_session_offset: np.ndarray | None    # see other_session_offset


def covariance(T_world_cam: np.ndarray, x2d: np.ndarray, x3d: np.ndarray, intr: Intrinsics,
               sigma_px: np.ndarray | None, query: QuerySettings, other_offset: np.ndarray | None
               ) -> PoseCovariance:
    """:func:`pose_covariance` of the (unique) inliers, scaled by ``max(1, N / max_independent_inliers)``
    (map errors are shared by many correspondences, so the information stops growing like N),
    plus ``d d^T`` for the disagreement ``d`` with another session: where sessions of the map
    disagree, which one the answer follows is a choice, and the covariance says so."""
    return rig_covariance(T_world_cam, [RigObservations(x2d, x3d, intr, np.eye(4), sigma_px)], query, other_offset)


def rig_covariance(T_world_base: np.ndarray, cams: list[RigObservations], query: QuerySettings,
                   other_offset: np.ndarray | None = None) -> PoseCovariance:
    """:func:`covariance` of a rig's base pose (:func:`rig_pose_covariance`, the same map terms)."""
    cov, rms = rig_pose_covariance(T_world_base, cams)
    n = sum(len(c.x2d) for c in cams)
    inflation = max(1.0, n / query.max_independent_inliers) if query.max_independent_inliers else 1.0
    cov = cov * inflation
    cov = cov + (np.outer(other_offset, other_offset) if other_offset is not None else np.zeros((6, 6)))
    return PoseCovariance(cov, rms, inflation, other_offset)


def inlier_spread(x2d: np.ndarray, intr: Intrinsics) -> float:
    """Area of the inliers' convex hull as a fraction of the image (0..1)."""
    if len(x2d) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(x2d, np.float32))
    return float(cv2.contourArea(hull)) / float(intr.width * intr.height)
