"""Late fusion of pairwise relative poses: rotation averaging and intersection of translation rays.

Each retrieved keyframe j gives (``relative_pose.observation``) the query rotation
``R_world_query`` and the unit direction ``d_j`` from its centre ``c_j`` towards the query centre.
The rotation is their chordal L2 mean (SVD projection of the inlier-weighted sum); the centre is
the least-squares intersection of the rays ``c_j + s d_j``. Pairs are dropped one at a time, the
worst first, while a rotation deviates more than ``max_rotation_deviation_deg`` from the mean or
a direction more than ``max_ray_angle_deg`` from the intersection (a ray pointing away from it,
behind its keyframe, counts as 180 degrees).

Refinement (:func:`refine`): the rays use one direction per pair; the pose is then refined on
every inlier match of the consistent pairs at once (Sampson errors of the keyframes as one
generalized camera, ``relative_pose.refine_jointly``, the geometric fallback's stage). Where the
rays are nearly collinear (keyframes on both sides of the query, e.g. on a ring around an
object) their intersection is weak along them and the matches pin it down (temple ring: 3 -> 0
answers beyond 5 % of the keyframe spacing, with ``top_k`` 12).

Covariance: position ``(sum_j P_j / (sigma_j r_j)^2)^-1`` with ``P_j = I - d_j d_j^T``, ``r_j`` the
distance from ``c_j`` and ``sigma_j`` the directions' angular error (their RMS deviation from the
intersection, floored at ``direction_sigma_deg``), so the uncertainty is large along nearly
parallel rays; rotation ``max(mean deviation^2 / n, rotation_sigma^2) I``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ...geometry import Intrinsics, is_valid_T, make_T, rotation_error_deg
from ...geometry.multiview import chordal_mean_rotation, intersect_lines
from ..geometric.relative_pose import RelativeObservation, refine_jointly
from .config import PairwiseConfig

__all__ = ["Fused", "fuse", "refine", "ray_angles_deg"]


@dataclass(frozen=True)
class Fused:
    T_world_cam: np.ndarray
    covariance: np.ndarray
    used: list[int]                      # keyframe ids of the consistent pairs
    span_deg: float                      # largest angle between two of their rays
    diagnostics: dict[str, Any] = field(default_factory=dict)


def ray_angles_deg(C: np.ndarray, centres: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Angle [N] between each ray's direction and the direction from its origin to ``C``."""
    v = C[None] - centres
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", v, directions), -1.0, 1.0)))


def _span_deg(directions: np.ndarray) -> float:
    cos = np.clip(directions @ directions.T, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos.min())))


def fuse(obs: list[RelativeObservation], cfg: PairwiseConfig) -> tuple[Fused | None, str]:
    """The query pose from the pairs (robust, see the module doc), or None and the reason."""
    active = list(obs)
    dropped: list[int] = []
    while len(active) >= 2:
        w = np.array([o.num_inliers for o in active], float)
        R = chordal_mean_rotation(np.stack([o.R_world_query for o in active]), w)
        dev = np.array([rotation_error_deg(R, o.R_world_query) for o in active])
        if dev.max() > cfg.max_rotation_deviation_deg:
            dropped.append(active.pop(int(dev.argmax())).kf_id)
            continue
        centres = np.stack([o.centre_kf for o in active])
        dirs = np.stack([o.direction for o in active])
        C, _, _ = intersect_lines(centres, dirs, w)
        ang = ray_angles_deg(C, centres, dirs)
        if ang.max() > cfg.max_ray_angle_deg:
            dropped.append(active.pop(int(ang.argmax())).kf_id)
            continue
        break
    if len(active) < cfg.min_pairs:
        return None, (f"only {len(active)} keyframe pair(s) agree on the pose (< min_pairs {cfg.min_pairs}; "
                      f"{len(obs)} pairs had a relative pose)")
    n = len(active)
    sigma = max(float(np.sqrt(np.mean(np.radians(ang) ** 2) * n / max(n - 1, 1))),
                np.radians(cfg.direction_sigma_deg))
    info = np.zeros((3, 3))
    for c, d in zip(centres, dirs):
        r = max(float(np.linalg.norm(C - c)), 1e-9)
        info += (np.eye(3) - np.outer(d, d)) / (sigma * r) ** 2
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.linalg.pinv(info)
    cov[3:, 3:] = np.eye(3) * max(float(np.mean(np.radians(dev) ** 2)) / n, np.radians(cfg.rotation_sigma_deg) ** 2)
    diag = {"pairs_used": [o.kf_id for o in active], "pairs_dropped": dropped,
            "pair_inliers": [o.num_inliers for o in active], "ray_angles_deg": ang.tolist(),
            "rotation_deviation_deg": dev.tolist(), "direction_sigma_deg": float(np.degrees(sigma))}
    return Fused(make_T(R, C), 0.5 * (cov + cov.T), [o.kf_id for o in active], _span_deg(dirs), diag), ""


def refine(fused: Fused, obs: list[RelativeObservation], intrinsics: Intrinsics) -> Fused:
    """``fused`` with its pose refined on all inlier matches of its pairs (module doc); the
    covariance stays the rays' (the matches of one pair are not independent, the pairs are)."""
    used = [o for o in obs if o.kf_id in fused.used]
    T = refine_jointly(used, fused.T_world_cam, intrinsics)
    if not is_valid_T(T):
        return fused
    shift = float(np.linalg.norm(T[:3, 3] - fused.T_world_cam[:3, 3]))
    return replace(fused, T_world_cam=T, diagnostics={**fused.diagnostics, "joint_refinement_shift": shift})
