"""Fallback when the map has too few 3D points: relative poses to >= 2 keyframes, scale from their baseline.

Each keyframe j gives, from an essential matrix (poselib 5-point LO-RANSAC + refinement), the
query rotation, the *direction* from its centre towards the query centre, and its inlier
matches. The rotation is the chordal mean of the per-keyframe estimates. With the rotation
fixed, every inlier match says the query centre lies on the plane spanned by the keyframe
centre and the two viewing rays: ``n . C = n . C_kf`` with ``n = ray_kf x ray_query``. Planes
from >= 2 keyframes fix C, and the known keyframe centres fix the scale (robust least squares).

:func:`two_view` is the one two-view relative-pose stage (matching, essential matrix, guided
re-matching along the epipolar lines of the first estimate): the map-free localizer
(``mapfree.two_view``) and the pairwise backend (``localizer.pairwise``) call it, and the fallback
here shares its essential-matrix solver (:func:`estimate_relative`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import poselib

from ...config import require_positive, setting
from ...errors import ConfigError
from ...geometry import Intrinsics, invert_T, make_T, project_to_SO3, rotation_error_deg, so3_exp
from .config import QuerySettings
from .features import Features
from .matching import fundamental_from_poses, match_descriptors, single_thread_blas
from .pnp import camera_dict

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["TwoViewSettings", "TwoView", "estimate_relative", "guided_matches", "two_view",
           "relative_covariance", "UNBOUNDED_VARIANCE_M2", "observation", "RelativeObservation",
           "relative_observation", "intersect_rays", "refine_jointly", "joint_covariance", "RelativePose",
           "relative_fallback"]


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


def estimate_relative(x_a: np.ndarray, intr_a: Intrinsics, x_b: np.ndarray, intr_b: Intrinsics,
                      max_epipolar_px: float, initial: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(R, t, inliers)`` with ``X_b = R X_a + t`` (``|t| = 1``) from matched pixels [M,2]:
    poselib 5-point LO-RANSAC on the essential matrix with Sampson-error refinement; ``initial``
    (4x4 ``T_b_a``) is scored as one more hypothesis. None below 5 inliers."""
    if len(x_a) < 5:
        return None
    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(x_a, np.float64), np.ascontiguousarray(x_b, np.float64),
        camera_dict(intr_a), camera_dict(intr_b), {"max_epipolar_error": float(max_epipolar_px)}, {},
        None if initial is None else _pose(initial))
    inl = np.asarray(info["inliers"], bool)
    if int(inl.sum()) < 5:
        return None
    t = np.asarray(pose.t, float)
    return np.asarray(pose.R, float), t / max(float(np.linalg.norm(t)), 1e-12), inl


@dataclass(frozen=True)
class TwoViewSettings:
    """The two-view stage (:func:`two_view`): matching and essential-matrix RANSAC."""

    match_ratio: float = setting(0.85, "ratio test of the first (unguided) matches")
    max_epipolar_px: float = setting(1.5, "RANSAC inlier threshold, Sampson distance (px)")
    # Wide baselines: the ratio test over all keypoints loses most true matches (a repeated
    # facade has many look-alike descriptors); among the candidates near the epipolar line of
    # the first estimate the true one usually stands out.
    guided: bool = setting(True, "re-match along the epipolar lines of the first estimate")
    guided_epipolar_px: float = setting(4.0, "candidates of guided matching: Sampson distance (px)")
    guided_ratio: float = setting(0.9, "ratio test among the guided candidates")
    min_inliers: int = setting(15, "inliers a relative pose needs")

    def __post_init__(self) -> None:
        for name in ("match_ratio", "guided_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        require_positive(self, "", "max_epipolar_px", "guided_epipolar_px")
        if self.min_inliers < 5:
            raise ConfigError(f"min_inliers must be >= 5, got {self.min_inliers}")


@dataclass(frozen=True)
class TwoView:
    """Relative pose of view b w.r.t. view a: ``X_b = R_b_a X_a + t_b_a``, ``|t_b_a| = 1``
    (an essential matrix has no scale), and the inlier matches (keypoint indices, pixels)."""

    R_b_a: np.ndarray
    t_b_a: np.ndarray
    pairs: np.ndarray            # [M,2] inlier (index in a, index in b)
    x_a: np.ndarray              # [M,2] pixels
    x_b: np.ndarray
    num_matches: int             # matches RANSAC saw (after guided matching, if on)
    num_first_inliers: int       # inliers of the unguided estimate

    @property
    def num_inliers(self) -> int:
        return len(self.pairs)

    @property
    def T_b_a(self) -> np.ndarray:
        return make_T(self.R_b_a, self.t_b_a)


def guided_matches(feats_a: Features, feats_b: Features, F: np.ndarray, max_epipolar_px: float,
                   ratio: float, block_rows: int = 512) -> np.ndarray:
    """Index pairs [M,2]: for each keypoint of a, the best descriptor among b's keypoints within
    ``max_epipolar_px`` (Sampson, under ``F`` with ``x_b^T F x_a = 0``) of its epipolar line,
    kept if it passes the ratio test among those candidates and is mutual (a's best for it too)."""
    na, nb = len(feats_a), len(feats_b)
    if na == 0 or nb < 2:
        return np.zeros((0, 2), np.int64)
    hb = np.column_stack([feats_b.keypoints_px, np.ones(nb)])
    Ftb = hb @ F                                  # epipolar lines in a of b's keypoints [nb,3]
    gb = Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    best = np.full(na, -1, np.int64)
    s1 = np.full(na, -np.inf, np.float32)
    s2 = np.full(na, -np.inf, np.float32)
    col_best = np.full(nb, -np.inf, np.float32)
    col_row = np.full(nb, -1, np.int64)
    with single_thread_blas():
        for start in range(0, na, block_rows):
            stop = min(start + block_rows, na)
            ha = np.column_stack([feats_a.keypoints_px[start:stop], np.ones(stop - start)])
            Fa = ha @ F.T                         # epipolar lines in b [n,3]
            num = Fa @ hb.T
            den = (Fa[:, 0] ** 2 + Fa[:, 1] ** 2)[:, None] + gb[None]
            near = num * num < (max_epipolar_px ** 2) * np.maximum(den, 1e-30)
            sim = feats_a.descriptors[start:stop] @ feats_b.descriptors.T
            sim[~near] = -np.inf
            rows = np.arange(stop - start)
            arg = sim.argmax(axis=1)
            top = sim[rows, arg]
            best[start:stop], s1[start:stop] = arg, top
            col_arg = sim.argmax(axis=0)
            col_top = sim[col_arg, np.arange(nb)]
            better = col_top > col_best
            col_best[better], col_row[better] = col_top[better], col_arg[better] + start
            sim[rows, arg] = -np.inf
            s2[start:stop] = sim.max(axis=1)
    found = np.isfinite(s1)
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
    d2 = np.where(np.isfinite(s2), np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0)), np.inf)
    rows = np.flatnonzero(found & (d1 < ratio * d2))
    rows = rows[col_row[best[rows]] == rows]
    return np.stack([rows, best[rows]], axis=1)


def two_view(feats_a: Features, intr_a: Intrinsics, feats_b: Features, intr_b: Intrinsics,
             settings: TwoViewSettings) -> tuple[TwoView | None, str]:
    """The relative pose of b w.r.t. a from the two images' features, or None and the reason.

    Ratio + mutual matches, 5-point LO-RANSAC (:func:`estimate_relative`); with ``guided`` the
    matches are then searched again near the first estimate's epipolar lines
    (:func:`guided_matches`) and the pose re-estimated from them (the first pose is a hypothesis).
    """
    m = match_descriptors(feats_a.descriptors, feats_b.descriptors, settings.match_ratio)
    if len(m) < settings.min_inliers:
        return None, f"only {len(m)} matches between the two views (< {settings.min_inliers})"
    first = estimate_relative(feats_a.keypoints_px[m[:, 0]], intr_a, feats_b.keypoints_px[m[:, 1]], intr_b,
                              settings.max_epipolar_px)
    if first is None or int(first[2].sum()) < settings.min_inliers:
        n = 0 if first is None else int(first[2].sum())
        return None, f"no consistent relative pose: {n} essential-matrix inliers of {len(m)} matches " \
                     f"(< {settings.min_inliers})"
    R, t, inl = first
    n_first = int(inl.sum())
    if settings.guided:
        T_b_a = make_T(R, t)
        F = fundamental_from_poses(np.eye(4), intr_a, invert_T(T_b_a), intr_b)
        g = guided_matches(feats_a, feats_b, F, settings.guided_epipolar_px, settings.guided_ratio)
        again = estimate_relative(feats_a.keypoints_px[g[:, 0]], intr_a, feats_b.keypoints_px[g[:, 1]], intr_b,
                                  settings.max_epipolar_px, T_b_a) if len(g) >= settings.min_inliers else None
        if again is not None and int(again[2].sum()) > n_first:
            m, (R, t, inl) = g, again
    pairs = m[inl]
    return TwoView(R, t, pairs, feats_a.keypoints_px[pairs[:, 0]], feats_b.keypoints_px[pairs[:, 1]], len(m),
                   n_first), ""


def relative_observation(kf_id: int, x_kf: np.ndarray, intr_kf: Intrinsics, T_world_kf: np.ndarray,
                         x_query: np.ndarray, intr_query: Intrinsics, max_epipolar_px: float
                         ) -> RelativeObservation | None:
    """Relative pose keyframe -> query from matched pixels [M,2]; None if it fails."""
    est = estimate_relative(x_kf, intr_kf, x_query, intr_query, max_epipolar_px)
    if est is None:
        return None
    R_q_kf, t_q_kf, inl = est                                      # X_query = R X_kf + t
    return _observation(kf_id, R_q_kf, t_q_kf, x_kf[inl], intr_kf, T_world_kf, x_query[inl], intr_query)


def observation(kf_id: int, tv: TwoView, intr_kf: Intrinsics, T_world_kf: np.ndarray, intr_query: Intrinsics
                ) -> RelativeObservation:
    """What a :func:`two_view` result (a = the posed keyframe, b = the query) says about the query."""
    return _observation(kf_id, tv.R_b_a, tv.t_b_a, tv.x_a, intr_kf, T_world_kf, tv.x_b, intr_query)


def _observation(kf_id: int, R_q_kf: np.ndarray, t_q_kf: np.ndarray, x_kf: np.ndarray, intr_kf: Intrinsics,
                 T_world_kf: np.ndarray, x_query: np.ndarray, intr_query: Intrinsics) -> RelativeObservation:
    n_inl = len(x_kf)
    R_world_kf = T_world_kf[:3, :3]
    direction = R_world_kf @ (-R_q_kf.T @ t_q_kf)                  # query centre seen from kf
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    rays_kf = _rays(x_kf, intr_kf) @ R_world_kf.T
    return RelativeObservation(kf_id, R_world_kf @ R_q_kf.T, T_world_kf[:3, 3].copy(), direction, n_inl,
                               rays_kf, _rays(x_query, intr_query), x_kf, x_query, intr_kf, T_world_kf)


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


def _sampson_jacobian(obs: list[RelativeObservation], T_world_query: np.ndarray, intr_query: Intrinsics,
                      step: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Kept rows of J [M,6] (3-sigma outliers out), all residuals [M'] and sigma (1.4826 MAD)."""
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
    return J[keep], r0, sigma


def joint_covariance(obs: list[RelativeObservation], T_world_query: np.ndarray, intr_query: Intrinsics,
                     step: float = 1e-6) -> np.ndarray:
    """6x6 ``sigma^2 (J^T J)^-1`` of the signed Sampson errors (px) w.r.t. (rho, phi) of T_world_query.

    Same parameterisation as the PnP covariance (centre + rho, rotation exp(phi) on the left);
    J by central differences, sigma from the residuals (robust, 1.4826 MAD), 3-sigma outliers out.
    """
    J, _, sigma = _sampson_jacobian(obs, T_world_query, intr_query, step)
    cov = np.linalg.inv(J.T @ J) * sigma**2
    return 0.5 * (cov + cov.T)


UNBOUNDED_VARIANCE_M2 = 1e6     # (1 km)^2: "no information" along a direction, still finite for ROS


def relative_covariance(obs: RelativeObservation, T_world_query: np.ndarray, intr_query: Intrinsics,
                        step: float = 1e-6) -> np.ndarray:
    """Covariance of a pose known up to scale (one view pair, baseline of unit length):
    :func:`joint_covariance` over the five observable directions, ``UNBOUNDED_VARIANCE_M2`` along
    the baseline (the essential matrix says nothing about its length)."""
    J, _, sigma = _sampson_jacobian([obs], T_world_query, intr_query, step)
    b = T_world_query[:3, 3] - obs.centre_kf
    b = b / max(float(np.linalg.norm(b)), 1e-12)
    basis = np.linalg.svd(np.r_[b, np.zeros(3)][None])[2][1:].T      # 6x5, orthogonal to the baseline
    Jb = J @ basis
    cov = basis @ np.linalg.inv(Jb.T @ Jb) @ basis.T * sigma**2
    cov[:3, :3] += UNBOUNDED_VARIANCE_M2 * np.outer(b, b)
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
