"""Look-alike places: a PnP pose for every place of the map the query's matches fit.

A map can hold two places that look the same (two identical buildings, a repeated corridor, a
map recorded twice under different poses). Retrieval and matching cannot tell them apart: the
query's keypoints match both, equally well, and the PnP of the whole local map settles on
whichever RANSAC samples first. So after that PnP (:func:`solve_place` on every match), the
matches of the retrieved keyframes *far* from its pose (farther than the place radius,
``acceptance.place_radius`` median keyframe spacings) get a PnP of their own, and again for the
keyframes far from every pose found so far (:func:`other_places`). A second place that holds a
comparable number of inliers makes the answer ambiguous; ``judge.choose_place`` decides, with the
pose prior when there is one.

Keyframes far from the pose that agree with it (a distant landmark seen from far away) give a
pose near the first one, which is no second place. A map of one place spans less than the radius
from any query pose (the shared scenes: at most 15 spacings, the radius is 20), so nothing is
searched there and the first PnP stays the answer, unchanged. The relative-pose fallback
(no map points) answers once per place of the retrieved keyframes (:func:`group_by_place`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...eval.metrics import median_baseline
from ...geometry import Intrinsics
from .local_map import LocalMap, select_local_map
from .matching import Matches2D3D
from .pnp import PnPResult, solve_pnp, unique_inliers

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["Place", "solve_place", "other_places", "group_by_place", "keyframe_spacing"]


@dataclass(frozen=True)
class Place:
    """One place's RANSAC pose: its local map, the PnP, the unique inliers (one per query keypoint)."""

    local: LocalMap
    pnp: PnPResult
    keep: np.ndarray             # bool [len(local.matches)]: unique inliers
    keyframes: list[int]         # keyframes holding at least one of them

    @property
    def num_inliers(self) -> int:
        return int(self.keep.sum())

    @property
    def centre(self) -> np.ndarray:
        return self.pnp.T_world_cam[:3, 3]


def keyframe_spacing(centres: np.ndarray) -> float:
    """The map's median keyframe spacing (``eval.metrics.median_baseline``); 0 with fewer than two
    distinct keyframe centres (then no keyframe is ever far: no second place is searched)."""
    return median_baseline(np.asarray(centres, np.float64).reshape(-1, 3), default=0.0)


def solve_place(entries: Mapping[int, "KeyframeEntry"], matches: Matches2D3D, keypoints_px: np.ndarray,
                intr: Intrinsics, max_reproj_px: float, min_inliers: int) -> Place | None:
    """The consistent local map of ``matches`` (``local_map``) and its PnP; None if PnP fails."""
    local = select_local_map(entries, matches, min_inliers)
    m = local.matches
    pnp = solve_pnp(keypoints_px[m.q_idx], m.x3d, intr, max_reproj_px)
    if pnp is None:
        return None
    keep = unique_inliers(m.q_idx, pnp.inliers, pnp.residuals_px)
    return Place(local, pnp, keep, sorted(int(k) for k in np.unique(m.kf_id[keep])))


def other_places(entries: Mapping[int, "KeyframeEntry"], matches: Matches2D3D, keypoints_px: np.ndarray,
                 intr: Intrinsics, first: Place, radius_m: float, max_reproj_px: float, min_inliers: int
                 ) -> list[Place]:
    """The places other than ``first``: PnP on the matches of the keyframes farther than
    ``radius_m`` from every pose found so far, repeated while they hold ``min_inliers`` query
    keypoints. Each place found takes its inlier keyframes out of the search (so it ends)."""
    if radius_m <= 0 or len(matches) == 0:
        return []
    kf_ids = np.unique(matches.kf_id)
    centres = np.stack([entries[int(k)].T_local_cam[:3, 3] for k in kf_ids])
    found: list[Place] = []
    poses = [first.centre]
    taken = np.isin(kf_ids, first.keyframes)
    while True:
        far = ~taken
        for c in poses:
            far &= np.linalg.norm(centres - c, axis=1) > radius_m
        if not far.any():
            break
        rest = matches.subset(np.isin(matches.kf_id, kf_ids[far]))
        if rest.num_query_keypoints < min_inliers:
            break
        place = solve_place(entries, rest, keypoints_px, intr, max_reproj_px, min_inliers)
        if place is None or not place.keyframes:
            break
        if place.num_inliers >= min_inliers:
            found.append(place)
        poses.append(place.centre)
        taken |= np.isin(kf_ids, place.keyframes)
    return found


def group_by_place(entries: Mapping[int, "KeyframeEntry"], kf_ids: list[int], radius_m: float) -> list[list[int]]:
    """``kf_ids`` in groups of one place each, in order: a keyframe joins the first group whose
    first keyframe is within ``radius_m``, else starts one (one group when ``radius_m`` <= 0)."""
    if radius_m <= 0 or not kf_ids:
        return [list(kf_ids)]
    groups: list[list[int]] = []
    for k in kf_ids:
        c = entries[k].T_local_cam[:3, 3]
        for g in groups:
            if np.linalg.norm(entries[g[0]].T_local_cam[:3, 3] - c) <= radius_m:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups
