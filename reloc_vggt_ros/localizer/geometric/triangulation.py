"""Map points for one keyframe from its known-pose neighbours, or from its depth map.

Keyframe-centric: every keypoint of keyframe *i* that is matched (ratio + mutual + epipolar check
under the known poses) in one or more neighbour keyframes is triangulated from all its views at
once (linear DLT, then Gauss-Newton on the pixel reprojection error). Views whose reprojection
error is too large are dropped and the point is solved again; a point survives only if it keeps
>= 2 views, lies in front of all of them and is seen under a large enough triangulation angle.
Keeping the points per keyframe lets a new keyframe be indexed without touching the others.

Pair consistency (maps stitched from several sessions): the median Sampson distance of a
keyframe pair's matches under the known poses measures how well the two poses agree. A pair far
above the map's typical value (``pair_consistency_factor`` x the median over all pairs) has poses
registered less precisely to each other than the features are; triangulating across it gives
points with systematic depth errors (small-baseline pairs amplify a 0.4 px disagreement into
millimetres of depth, which PnP turns into tenths of a degree). Such neighbours are either
*re-anchored* (their poses moved, as one rigid group, into the frame consistent with the
reference keyframe: the reference is localized against the group's own points) or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry import Intrinsics, apply_T, invert_T
from .config import TriangulationConfig
from .features import Features
from .matching import fundamental_from_poses, match_descriptors, sampson_error_px
from .pnp import solve_pnp

__all__ = ["View", "Observations", "select_neighbours", "observe",
           "pair_level", "consistent_neighbours", "reanchor", "triangulate_observations",
           "triangulate_keyframe", "triangulate_consistent", "backproject_depth"]


@dataclass
class View:
    """A posed image with features: what triangulation needs from a keyframe."""

    features: Features
    intrinsics: Intrinsics
    T_world_cam: np.ndarray


def select_neighbours(index: int, T_world_cams: np.ndarray, config: TriangulationConfig) -> list[int]:
    """Positions of up to ``max_neighbours`` keyframes nearest to ``index`` that look the same way.

    ``T_world_cams`` [N,4,4]. Keyframes at the very same centre add no baseline and are skipped,
    and so are those beyond ``max_neighbour_distance_m`` (when set).
    """
    centres = T_world_cams[:, :3, 3]
    axes = T_world_cams[:, :3, 2]
    dist = np.linalg.norm(centres - centres[index], axis=1)
    cos_axis = axes @ axes[index]
    ok = (cos_axis >= np.cos(np.radians(config.max_view_angle_deg))) & (dist > 1e-9)
    if config.max_neighbour_distance_m > 0:
        ok &= dist <= config.max_neighbour_distance_m
    ok[index] = False
    cand = np.flatnonzero(ok)
    return [int(c) for c in cand[np.argsort(dist[cand], kind="stable")][: config.max_neighbours]]


@dataclass
class Observations:
    """Each reference keypoint's pixels in every view (view 0 = the reference) and pair statistics.

    ``xy`` [N,V,2], ``mask`` [N,V]; ``pair_median_px`` [V-1] median Sampson distance of the
    epipolar-gated matches with each neighbour (NaN if none), ``pair_matches`` [V-1] their count.
    """

    xy: np.ndarray
    mask: np.ndarray
    pair_median_px: np.ndarray
    pair_matches: np.ndarray


def observe(ref: View, neighbours: list[View], config: TriangulationConfig) -> Observations:
    """Ratio + mutual matches of ``ref`` to each neighbour, kept within ``max_epipolar_px``."""
    n = len(ref.features)
    xy = np.zeros((n, len(neighbours) + 1, 2))
    mask = np.zeros((n, len(neighbours) + 1), bool)
    xy[:, 0], mask[:, 0] = ref.features.keypoints_px, True
    medians = np.full(len(neighbours), np.nan)
    counts = np.zeros(len(neighbours), np.int64)
    for v, nb in enumerate(neighbours, start=1):
        pairs = match_descriptors(ref.features.descriptors, nb.features.descriptors, config.match_ratio)
        if len(pairs) == 0:
            continue
        F = fundamental_from_poses(ref.T_world_cam, ref.intrinsics, nb.T_world_cam, nb.intrinsics)
        x_ref, x_nb = ref.features.keypoints_px[pairs[:, 0]], nb.features.keypoints_px[pairs[:, 1]]
        err = sampson_error_px(F, x_ref, x_nb)
        good = err < config.max_epipolar_px
        xy[pairs[good, 0], v] = x_nb[good]
        mask[pairs[good, 0], v] = True
        counts[v - 1] = int(good.sum())
        if good.any():
            medians[v - 1] = float(np.median(err[good]))
    return Observations(xy, mask, medians, counts)


def pair_level(medians: list[np.ndarray], counts: list[np.ndarray], config: TriangulationConfig) -> float:
    """The map's typical pair value (NaN if no pair has enough matches to be judged).

    The median over all judged pairs, then again over the pairs it does not flag, until stable:
    inconsistent pairs pull a plain median up when they are many (40% of the pairs of a map cut
    around a session boundary: 0.165 px instead of 0.132), while in a map whose pairs are all
    alike the few values beyond ``pair_consistency_factor`` x median barely move it.
    """
    values = [m[c >= config.min_pair_matches] for m, c in zip(medians, counts)]
    flat = np.concatenate(values) if values else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    if len(flat) == 0:
        return float("nan")
    level = float(np.median(flat))
    for _ in range(10 if config.pair_consistency_factor else 0):
        new = float(np.median(flat[flat <= config.pair_consistency_factor * level]))
        if new == level:
            break
        level = new
    return level


def consistent_neighbours(medians: np.ndarray, counts: np.ndarray, level: float,
                          config: TriangulationConfig) -> np.ndarray:
    """bool [V-1]: False for neighbours whose pair is judged inconsistent with the reference."""
    if config.pair_consistency_factor == 0.0 or not np.isfinite(level):
        return np.ones(len(medians), bool)
    judged = (counts >= config.min_pair_matches) & np.isfinite(medians)
    return ~(judged & (medians > config.pair_consistency_factor * level))


def reanchor(ref: View, neighbours: list[View], obs: Observations, which: np.ndarray,
             config: TriangulationConfig) -> np.ndarray | None:
    """Rigid 4x4 ``D`` moving the poses of the neighbours ``which`` (bool [V-1]) into ref's frame.

    Those neighbours are taken as one consistent group (another session): the one with most
    matches is triangulated from the others, ref is localized against its points (PnP, LO-RANSAC
    + refinement), giving ``T_world_ref`` in the group's frame; ``D = T_given @ inv(T_group)``, so
    ``D @ T_world_nb`` agrees with ref. A generalized relative pose on the 2D-2D matches instead
    gave a 0.03 deg worse ``D`` for temple 0040, which its 4 deg baseline to 0006 turned into
    0.0045 units of error for the next query (0.0004 with PnP).
    None if the group has < 2 judged members or the PnP fails.
    """
    idx = [int(v) for v in np.flatnonzero(which) if obs.pair_matches[v] >= config.min_pair_matches]
    if len(idx) < 2:
        return None
    idx.sort(key=lambda v: -obs.pair_matches[v])
    anchor, others = neighbours[idx[0]], [neighbours[v] for v in idx[1:]]
    pts, _ = triangulate_keyframe(anchor, others, config)
    has = np.flatnonzero(np.isfinite(pts[:, 0]))
    m = match_descriptors(ref.features.descriptors, anchor.features.descriptors[has], config.match_ratio)
    if len(m) < config.min_pair_matches:
        return None
    pnp = solve_pnp(ref.features.keypoints_px[m[:, 0]], pts[has[m[:, 1]]], ref.intrinsics,
                    2.0 * config.max_reproj_px)
    if pnp is None or pnp.inliers.sum() < config.min_pair_matches:
        return None
    return ref.T_world_cam @ invert_T(pnp.T_world_cam)


def _project(P: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points X [N,3] through cameras P [V,3,4] (pixels): (uv [N,V,2], depth [N,V])."""
    Xh = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    x = np.einsum("vij,nj->nvi", P, Xh)
    return x[..., :2] / x[..., 2:3], x[..., 2]


def _dlt(P: np.ndarray, xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Linear triangulation of N points from masked views: X [N,3]."""
    rows_u = xy[..., 0:1] * P[None, :, 2] - P[None, :, 0]
    rows_v = xy[..., 1:2] * P[None, :, 2] - P[None, :, 1]
    A = np.concatenate([rows_u, rows_v], axis=1) * np.concatenate([mask, mask], axis=1)[..., None]
    A /= np.maximum(np.linalg.norm(A, axis=2, keepdims=True), 1e-12)
    _, _, Vt = np.linalg.svd(A)
    Xh = Vt[:, -1]
    w = np.where(np.abs(Xh[:, 3:]) < 1e-12, 1e-12, Xh[:, 3:])
    return Xh[:, :3] / w


def _gauss_newton(P: np.ndarray, X: np.ndarray, xy: np.ndarray, mask: np.ndarray, iters: int = 5
                  ) -> np.ndarray:
    """Refine X [N,3] to minimise the masked pixel reprojection error (batched 3x3 solves)."""
    for _ in range(iters):
        Xh = np.concatenate([X, np.ones((len(X), 1))], axis=1)
        x = np.einsum("vij,nj->nvi", P, Xh)                 # [N,V,3]
        z = np.where(np.abs(x[..., 2]) < 1e-12, 1e-12, x[..., 2])
        r = (x[..., :2] / z[..., None] - xy) * mask[..., None]           # [N,V,2]
        # d(u)/dX = (P0 - u P2) / z, same for v with P1.
        u, v = x[..., 0] / z, x[..., 1] / z
        Ju = (P[None, :, 0, :3] - u[..., None] * P[None, :, 2, :3]) / z[..., None]
        Jv = (P[None, :, 1, :3] - v[..., None] * P[None, :, 2, :3]) / z[..., None]
        J = np.stack([Ju, Jv], axis=2) * mask[..., None, None]         # [N,V,2,3]
        J = J.reshape(len(X), -1, 3)
        r = r.reshape(len(X), -1)
        H = np.einsum("nki,nkj->nij", J, J)
        H += (1e-9 * np.trace(H, axis1=1, axis2=2) + 1e-12)[:, None, None] * np.eye(3)   # never singular
        g = np.einsum("nki,nk->ni", J, r)
        step = np.linalg.solve(H, g[..., None])[..., 0]
        X = X - np.where(np.isfinite(step), step, 0.0)
    return X


def triangulate_observations(ref: View, neighbours: list[View], obs: Observations,
                             config: TriangulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """World points [N,3] (NaN where none) and track lengths [N] from ``obs`` (its mask decides
    which views count; the neighbours' poses may differ from those ``obs`` was gated with)."""
    n = len(ref.features)
    points = np.full((n, 3), np.nan)
    track_len = np.zeros(n, np.int32)
    if n == 0 or not neighbours:
        return points, track_len
    views = [ref, *neighbours]
    P = np.stack([v.intrinsics.K @ invert_T(v.T_world_cam)[:3] for v in views])
    idx = np.flatnonzero(obs.mask.sum(axis=1) >= 2)
    if len(idx) == 0:       # no keypoint matched in any neighbour (e.g. a textureless view)
        return points, track_len
    xy, mask = obs.xy[idx], obs.mask[idx]
    for _ in range(2):      # solve, drop bad views, solve again
        X = _gauss_newton(P, _dlt(P, xy, mask), xy, mask)
        uv, depth = _project(P, X)
        err = np.linalg.norm(uv - xy, axis=2)
        mask = mask & (err < config.max_reproj_px) & (depth > 0)
    keep = mask[:, 0] & (mask.sum(axis=1) >= 2)
    centres = np.stack([v.T_world_cam[:3, 3] for v in views])
    rays = X[:, None, :] - centres[None]
    rays /= np.maximum(np.linalg.norm(rays, axis=2, keepdims=True), 1e-12)
    cos = np.einsum("nvi,nwi->nvw", rays, rays)
    pair_ok = mask[:, :, None] & mask[:, None, :]
    min_cos = np.where(pair_ok, cos, 1.0).min(axis=(1, 2))
    keep &= min_cos <= np.cos(np.radians(config.min_tri_angle_deg))
    points[idx[keep]] = X[keep]
    track_len[idx[keep]] = mask[keep].sum(axis=1)
    return points, track_len


def triangulate_keyframe(ref: View, neighbours: list[View], config: TriangulationConfig
                         ) -> tuple[np.ndarray, np.ndarray]:
    """World points [N,3] (NaN where none) and track lengths [N] for the keypoints of ``ref``,
    from all given neighbours (no pair-consistency check: that needs the whole map's level)."""
    return triangulate_observations(ref, neighbours, observe(ref, neighbours, config), config)


def triangulate_consistent(ref: View, neighbours: list[View], obs: Observations, level: float,
                           config: TriangulationConfig
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points and track lengths from consistent views only, plus the neighbours' state [V-1]
    (1 consistent, 2 re-anchored, 0 dropped) and the re-anchoring transform (identity if none).

    Re-anchored neighbours must pass the same pair check under their moved poses.
    """
    ok = consistent_neighbours(obs.pair_median_px, obs.pair_matches, level, config)
    use, views, D = ok.copy(), list(neighbours), np.eye(4)
    if config.reanchor and not ok.all():
        D_est = reanchor(ref, neighbours, obs, ~ok, config)
        if D_est is not None:
            moved = [View(nb.features, nb.intrinsics, D_est @ nb.T_world_cam) for nb in neighbours]
            medians = np.full(len(neighbours), np.nan)
            for v in np.flatnonzero(~ok):
                rows = np.flatnonzero(obs.mask[:, v + 1])
                if len(rows):
                    F = fundamental_from_poses(ref.T_world_cam, ref.intrinsics, moved[v].T_world_cam,
                                               moved[v].intrinsics)
                    medians[v] = float(np.median(sampson_error_px(F, obs.xy[rows, 0], obs.xy[rows, v + 1])))
            now_ok = ~ok & np.isfinite(medians) & (medians <= config.pair_consistency_factor * level)
            if now_ok.any():
                views = [moved[v] if now_ok[v] else nb for v, nb in enumerate(neighbours)]
                use |= now_ok
                D = D_est
    mask = obs.mask.copy()
    mask[:, 1:] &= use[None]
    points, track = triangulate_observations(ref, views, Observations(obs.xy, mask, obs.pair_median_px,
                                                                      obs.pair_matches), config)
    state = np.where(ok, 1, np.where(use, 2, 0)).astype(np.int8)
    return points, track, state, D


def backproject_depth(features: Features, intrinsics: Intrinsics, T_world_cam: np.ndarray,
                      depth_m: np.ndarray) -> np.ndarray:
    """World points [N,3] of the keypoints from a depth map [H,W] in metres (NaN where 0/invalid).

    ``features`` hold ideal keypoints of ``intrinsics.pinhole``; the depth map is registered to
    the (raw, possibly distorted) image, so it is read where ``intrinsics`` puts each keypoint
    in that image. It may have another resolution than the image; it is sampled at the nearest pixel.
    """
    h, w = depth_m.shape[:2]
    xy = intrinsics.distort_px(features.keypoints_px)
    sx, sy = w / features.width, h / features.height
    col = np.clip(np.round((xy[:, 0] + 0.5) * sx - 0.5).astype(int), 0, w - 1)
    row = np.clip(np.round((xy[:, 1] + 0.5) * sy - 0.5).astype(int), 0, h - 1)
    z = depth_m[row, col].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    ideal = features.keypoints_px
    rays = np.stack([(ideal[:, 0] - intrinsics.cx) / intrinsics.fx,
                     (ideal[:, 1] - intrinsics.cy) / intrinsics.fy, np.ones(len(ideal))], axis=1)
    X_cam = rays * z[:, None]
    X_world = apply_T(T_world_cam, X_cam)
    X_world[~valid] = np.nan
    return X_world
