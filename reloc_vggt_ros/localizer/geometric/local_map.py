"""Local-map selection: the 2D-3D matches of the keyframes that form one consistent map.

A map stitched from several sessions holds keyframes whose poses disagree slightly with their
neighbours' (the pair check of ``triangulation``). Mixing points of two such frames in one PnP
biases the pose along its weakest direction, so only the keyframes consistent with the
best-matched one go into the PnP; the rest are kept aside (their own pose is the covariance's
"other session" term, ``pnp.other_session_offset``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .matching import Matches2D3D

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["LocalMap", "consistent_keyframes", "select_local_map"]


@dataclass(frozen=True)
class LocalMap:
    """The matches that go into the PnP and those of the excluded keyframes (None if none)."""

    matches: Matches2D3D
    excluded: Matches2D3D | None
    excluded_keyframes: list[int]


def consistent_keyframes(entries: Mapping[int, "KeyframeEntry"], kf_of_match: np.ndarray) -> list[int]:
    """The matched keyframes that form one consistent local map with the best-matched one.

    ``kf_of_match`` [M]: keyframe id of each 2D-3D match. The keyframe with the most matches
    anchors the local map; a keyframe whose pair check with it failed (either way round) holds
    points in another session's frame. Keyframes never compared with it (not neighbours) are kept.
    """
    ids, counts = np.unique(kf_of_match, return_counts=True)
    if len(ids) == 0:
        return []
    best = int(ids[np.argmax(counts)])
    bad = entries[best].inconsistent_ids
    return [int(k) for k in ids if int(k) not in bad and best not in entries[int(k)].inconsistent_ids]


def select_local_map(entries: Mapping[int, "KeyframeEntry"], matches: Matches2D3D, min_inliers: int) -> LocalMap:
    """The matches of the keyframes :func:`consistent_keyframes` keeps; all of them if that
    leaves fewer than ``min_inliers`` query keypoints."""
    sel = np.isin(matches.kf_id, consistent_keyframes(entries, matches.kf_id))
    if sel.all() or len(np.unique(matches.q_idx[sel])) < min_inliers:
        return LocalMap(matches, None, [])
    excluded = matches.subset(~sel)
    return LocalMap(matches.subset(sel), excluded, sorted(int(k) for k in np.unique(excluded.kf_id)))
