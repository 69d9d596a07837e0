"""Map side of the geometric backend: per-keyframe features, 3D points and VLAD, stored as blobs.

Blobs (backend ``"geometric"``), each under a fingerprint of the settings that produced it plus
:data:`CODE_VERSION`, so changing a setting or the algorithm never reuses stale data:

* per keyframe ``features`` (keypoints, RootSIFT, scales), ``points`` (world point per keypoint,
  NaN where none, plus the neighbour ids, each pair's consistency statistics and which
  neighbours were used, re-anchored or dropped), ``vlad``;
* map-wide ``vocabulary`` (k-means centroids and the keyframe count it was trained on).

:func:`index_store` is incremental: it computes only what is missing or stale. A keyframe's
points are recomputed when its neighbour set changed (a keyframe was added nearby), the
vocabulary is retrained once the database has doubled since it was trained. Points are built in
two passes: every keyframe's pair statistics first (stored ones reused), then the map-wide
pair level decides which neighbour pairs are consistent (see ``triangulation``), and a keyframe
is re-triangulated only if its neighbours or that decision changed.

Large coordinates (UTM-like world frames, centres ~5e6 m): the map is held and computed in a
local frame, the world shifted by :attr:`GeometricMap.origin` (``geometry.local_origin`` of the
keyframe centres, whole metres, so the shift is exact in float64). Triangulation, re-anchoring
and every query-side solver see small numbers; blobs store world float64 points (1e-9 m
resolution at 5e6 m), so they do not depend on the origin, which may move as keyframes are added.

Damage is never trusted: a blob failing its checksum, its archive or :func:`blob_problem` (shapes,
dimensions, finiteness) is a warning and recomputed like a missing one (in memory when the store
is read-only); a keyframe whose features must be recomputed from a damaged image is skipped with
a warning (the store already leaves damaged pose rows out of ``poses()``). An image is verified
only when read: a keyframe with intact blobs and a damaged image keeps matching, only its LK
tracking is lost (``lk_refine.KeyframeImages``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import KeyframeDBError
from ...geometry import Intrinsics, local_origin, shift_T, shift_transform
from ...keyframes.blobs import pack_arrays, unpack_arrays
from .features import Features, extract_features, fingerprint_fields, undistorted
from .vocabulary import train_vocabulary, vlad
from .triangulation import (Observations, View, backproject_depth, consistent_neighbours, observe, pair_level,
                            select_neighbours, triangulate_consistent)

if TYPE_CHECKING:
    from ...keyframes import KeyframeStore
    from .config import MapSettings

__all__ = ["BACKEND", "CODE_VERSION", "KeyframeEntry", "GeometricMap", "index_store", "fingerprints",
           "blob_problem"]

logger = logging.getLogger(__name__)

BACKEND = "geometric"
CODE_VERSION = "geometric-4"   # 3: pair-consistency check + re-anchoring; 4: points solved in a local frame


def _digest(*parts: Any) -> str:
    text = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fingerprints(config: "MapSettings") -> dict[str, str]:
    """Fingerprint per blob kind of the map settings (VLAD's also depends on the vocabulary, see
    :func:`index_store`)."""
    feat = fingerprint_fields(config.features)
    return {"features": _digest("features", feat),
            "points": _digest("points", feat, asdict(config.triangulation)),
            "vocabulary": _digest("vocabulary", feat, config.vocabulary_words)}


@dataclass
class KeyframeEntry:
    """Everything the query side needs from one keyframe, in memory, in the map's local frame
    (world shifted by :attr:`GeometricMap.origin`). ``features`` hold ideal (undistorted)
    keypoints of the pinhole ``intrinsics``; ``camera`` is the keyframe's full camera model
    (what its image is in: sub-pixel tracking reads it)."""

    kf_id: int
    T_local_cam: np.ndarray
    intrinsics: Intrinsics
    features: Features
    points_local: np.ndarray        # [N,3], NaN where the keypoint has no 3D point
    vlad: np.ndarray
    # the subset with 3D points, precomputed for 2D-3D matching
    point_index: np.ndarray
    point_descriptors: np.ndarray
    # neighbours whose poses disagree with this keyframe's (pair check): not one consistent map
    inconsistent_ids: frozenset[int] = frozenset()
    camera: Intrinsics | None = None    # None: ``intrinsics`` (a pinhole camera)

    @property
    def image_camera(self) -> Intrinsics:
        return self.intrinsics if self.camera is None else self.camera


@dataclass
class GeometricMap:
    entries: dict[int, KeyframeEntry]
    vocabulary: np.ndarray
    revision: int                               # store revision the map reflects
    computed: dict[str, int] = field(default_factory=dict)   # what this indexing had to compute
    features_fingerprint: str = ""
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))   # world position of the local frame

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.entries), np.int64)


_DESC_DIM = 128
_BLOB_SHAPES: dict[str, dict[str, tuple]] = {   # key -> array -> shape ("n": keypoints, "k": neighbours)
    "features": {"keypoints_px": ("n", 2), "descriptors": ("n", _DESC_DIM), "scales_px": ("n",), "size": (2,)},
    "points": {"points_world": ("n", 3), "track_len": ("n",), "neighbour_ids": ("k",), "from_depth": ()},
    "points_pairs": {"pair_median_px": ("k",), "pair_matches": ("k",), "state": ("k",)},
    "vlad": {"vlad": ("v",)},
    "vocabulary": {"centroids": ("w", _DESC_DIM), "n_keyframes": ()},
}
_FINITE = {"keypoints_px", "descriptors", "scales_px", "size", "vlad", "centroids", "n_keyframes"}  # NaN = none elsewhere


def blob_problem(key: str, arrays: dict[str, np.ndarray], n_keypoints: int | None = None) -> str | None:
    """What is wrong with a geometric blob's arrays (missing, wrong shape or dimension, not
    finite), or None; ``n_keypoints`` ties a points blob to its keyframe's features."""
    spec = dict(_BLOB_SHAPES.get(key, {}))
    if key == "points" and "from_depth" in arrays and not bool(arrays["from_depth"]):
        spec.update(_BLOB_SHAPES["points_pairs"])
    sizes: dict[str, int] = {} if n_keypoints is None else {"n": n_keypoints}
    for name, shape in spec.items():
        a = arrays.get(name)
        if a is None:
            return f"{key} blob has no array {name!r}"
        if a.ndim != len(shape) or a.dtype.kind not in "biuf":
            return f"{key} blob: {name} has shape {a.shape} of {a.dtype}, expected {len(shape)}-D numbers"
        for dim, want in zip(a.shape, shape):
            want = sizes.setdefault(want, dim) if isinstance(want, str) else want
            if dim != want:
                return f"{key} blob: {name} has shape {a.shape}, expected {shape} (sizes {sizes})"
        if name in _FINITE and not np.all(np.isfinite(a)):
            return f"{key} blob: {name} holds NaN or infinite values"
    if key == "vocabulary" and (sizes.get("w", 0) == 0 or int(arrays["n_keyframes"]) < 1):
        return "vocabulary blob is empty (no words or trained on no keyframe)"
    return None


def _arrays(store: "KeyframeStore", kf_id: int | None, key: str, fp: str, n_keypoints: int | None = None
            ) -> dict[str, np.ndarray] | None:
    """A blob's checked arrays; None if absent, or damaged (a warning: it is recomputed)."""
    try:
        blob = (store.get_map_blob(BACKEND, key, fp) if kf_id is None else store.get_blob(kf_id, BACKEND, key, fp))
        if blob is None:
            return None
        arrays = unpack_arrays(blob)
        problem = blob_problem(key, arrays, n_keypoints)
        if problem:
            raise KeyframeDBError(problem)
        return arrays
    except KeyframeDBError as err:
        where = "map" if kf_id is None else f"keyframe {kf_id}"
        logger.warning("%s: damaged %s blob ignored and recomputed: %s", where, key, err)
        return None


def _load_or_extract(store: "KeyframeStore", kf_id: int, config: "MapSettings", fp: str,
                     writable: bool, stats: dict[str, int]) -> Features:
    arrays = _arrays(store, kf_id, "features", fp)
    if arrays is not None:
        return Features.from_arrays(arrays)
    feats = extract_features(store.get_keyframe(kf_id).decode_image(), config.features)
    if writable:
        store.put_blob(kf_id, BACKEND, "features", pack_arrays(feats.to_arrays()), fp)
    stats["features"] += 1
    return feats


@dataclass
class _PointSet:
    points: np.ndarray              # [N,3] local-frame point per keypoint, NaN where none
    track_len: np.ndarray           # [N] views per point (depth points count 1)
    inconsistent_ids: frozenset[int]


def _as_stored(points_local: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Local points rounded as their stored world copy reads back (a fresh map equals a reloaded one)."""
    return (points_local + origin) - origin


def _point_sets(store: "KeyframeStore", ids: np.ndarray, poses: np.ndarray, intr: dict[int, Intrinsics],
                feats: dict[int, Features], config: "MapSettings", fp: str, writable: bool,
                stats: dict[str, int], origin: np.ndarray) -> dict[int, _PointSet]:
    """Every keyframe's points: pair statistics of all keyframes first, then triangulation of those
    whose neighbour set or consistency decision changed (the decision needs the map-wide level).

    ``poses`` and the points returned are in the local frame at ``origin``; blobs hold world points.
    ``intr`` are the keyframes' cameras, ``feats`` their undistorted features.
    """
    tc = config.triangulation
    pos_of = {int(i): p for p, i in enumerate(ids)}

    def view(i: int) -> View:
        return View(feats[i], intr[i].pinhole, poses[pos_of[i]])

    neighbours = {int(i): [int(ids[j]) for j in select_neighbours(p, poses, tc)] for p, i in enumerate(ids)}
    stored: dict[int, dict[str, np.ndarray]] = {}
    fresh: dict[int, Observations] = {}
    out: dict[int, _PointSet] = {}
    for i in neighbours:
        arrays = _arrays(store, i, "points", fp, len(feats[i].keypoints_px))
        if arrays is not None and bool(arrays["from_depth"]):
            out[i] = _PointSet(arrays["points_world"] - origin, arrays["track_len"], frozenset())
        elif arrays is not None and arrays["neighbour_ids"].tolist() == neighbours[i]:
            stored[i] = arrays
        elif (depth := store.get_keyframe(i).depth_m) is not None:
            pts = _as_stored(backproject_depth(feats[i], intr[i], poses[pos_of[i]], depth), origin)
            track = np.isfinite(pts[:, 0]).astype(np.int32)
            if writable:
                store.put_blob(i, BACKEND, "points", pack_arrays(
                    {"points_world": pts + origin, "track_len": track, "neighbour_ids": np.zeros(0, np.int64),
                     "from_depth": np.array(True)}), fp)
            stats["points"] += 1
            out[i] = _PointSet(pts, track, frozenset())
        else:
            fresh[i] = observe(view(i), [view(n) for n in neighbours[i]], tc)
    level = pair_level([a["pair_median_px"] for a in stored.values()] + [o.pair_median_px for o in fresh.values()],
                       [a["pair_matches"] for a in stored.values()] + [o.pair_matches for o in fresh.values()], tc)
    for i, nbs in neighbours.items():
        if i in out:
            continue
        a = stored.get(i)
        if a is not None and np.array_equal(
                consistent_neighbours(a["pair_median_px"], a["pair_matches"], level, tc), a["state"] == 1):
            state = a["state"]
            out[i] = _PointSet(a["points_world"] - origin, a["track_len"],
                               frozenset(np.array(nbs)[state != 1].tolist()))
            continue
        obs = fresh.get(i) or observe(view(i), [view(n) for n in nbs], tc)
        pts, track, state, D = triangulate_consistent(view(i), [view(n) for n in nbs], obs, level, tc)
        pts = _as_stored(pts, origin)
        if writable:
            store.put_blob(i, BACKEND, "points", pack_arrays(
                {"points_world": pts + origin, "track_len": track, "neighbour_ids": np.array(nbs, np.int64),
                 "from_depth": np.array(False), "pair_median_px": obs.pair_median_px,
                 "pair_matches": obs.pair_matches, "state": state,
                 "reanchor_T": shift_transform(D, origin)}), fp)
        stats["points"] += 1
        if (state != 1).any():
            logger.info("keyframe %d: neighbours %s inconsistent (pair median %s px, map level %.3f px); "
                        "re-anchored %s, dropped %s", i, np.array(nbs)[state != 1].tolist(),
                        np.round(obs.pair_median_px[state != 1], 3).tolist(), level,
                        np.array(nbs)[state == 2].tolist(), np.array(nbs)[state == 0].tolist())
        out[i] = _PointSet(pts, track, frozenset(np.array(nbs, np.int64)[state != 1].tolist()))
    return out


def _matchable(points: np.ndarray, track_len: np.ndarray, cap: int) -> np.ndarray:
    """Indices of keypoints with a 3D point; with ``cap`` > 0 only the ``cap`` seen in most views."""
    has_point = np.flatnonzero(np.isfinite(points[:, 0]))
    if 0 < cap < len(has_point):
        order = np.argsort(-track_len[has_point], kind="stable")[:cap]
        has_point = np.sort(has_point[order])
    return has_point


def _vocabulary(store: "KeyframeStore", feats: dict[int, Features], config: "MapSettings", fp: str,
                writable: bool, stats: dict[str, int]) -> np.ndarray:
    arrays = _arrays(store, None, "vocabulary", fp)
    if arrays is not None:
        if len(feats) < 2 * int(arrays["n_keyframes"]):
            return arrays["centroids"]
    centroids = train_vocabulary([f.descriptors for f in feats.values()], config.vocabulary_words)
    if writable:
        store.put_map_blob(BACKEND, "vocabulary", pack_arrays(
            {"centroids": centroids, "n_keyframes": np.array(len(feats))}), fp)
    stats["vocabulary"] += 1
    return centroids


def _reusable(previous: GeometricMap | None, fp: str, kf_id: int, T: np.ndarray, intr: Intrinsics
              ) -> Features | None:
    """Features of an unchanged keyframe from the previous map (saves reading and unpacking blobs)."""
    if previous is None or previous.features_fingerprint != fp or kf_id not in previous.entries:
        return None
    e = previous.entries[kf_id]
    # ids can be reused after removal
    same = np.array_equal(shift_T(e.T_local_cam, previous.origin), T) and e.image_camera == intr
    return e.features if same else None


def index_store(store: "KeyframeStore", config: "MapSettings", previous: GeometricMap | None = None
                ) -> GeometricMap:
    """Compute what is missing or stale, store it (unless the store is read-only), load the map.

    ``previous``: the map of an earlier call with the same config, whose unchanged keyframes'
    features are reused instead of re-read (live mapping refreshes after every new keyframe).
    """
    t0 = time.perf_counter()
    ids, world_poses = store.poses()
    origin = local_origin(world_poses[:, :3, 3])
    poses = shift_T(world_poses, -origin)
    intr = store.intrinsics()
    fps = fingerprints(config)
    writable = not getattr(store, "readonly", False)
    stats = {"features": 0, "points": 0, "vocabulary": 0, "vlad": 0}
    feats: dict[int, Features] = {}
    for pos, i in enumerate(int(v) for v in ids):
        reused = _reusable(previous, fps["features"], i, world_poses[pos], intr[i])
        try:  # damaged features blob and damaged image: nothing to build this keyframe from
            feats[i] = reused if reused is not None else undistorted(
                _load_or_extract(store, i, config, fps["features"], writable, stats), intr[i])
        except KeyframeDBError as err:
            logger.warning("keyframe %d left out of the geometric map: %s", i, err)
            feats.pop(i, None)
    keep = np.isin(ids, list(feats))
    ids, poses, world_poses = ids[keep], poses[keep], world_poses[keep]
    sets = _point_sets(store, ids, poses, intr, feats, config, fps["points"], writable, stats, origin)
    if len(ids) == 0:
        return GeometricMap({}, np.zeros((0, 128), np.float32), store.revision, stats, fps["features"])
    centroids = _vocabulary(store, feats, config, fps["vocabulary"], writable, stats)
    fp_vlad = _digest("vlad", fps["vocabulary"], hashlib.sha1(centroids.tobytes()).hexdigest())
    entries: dict[int, KeyframeEntry] = {}
    for pos, i in enumerate(int(v) for v in ids):
        arrays = _arrays(store, i, "vlad", fp_vlad)
        if arrays is None or arrays["vlad"].shape != (centroids.size,):
            vec = vlad(feats[i].descriptors, centroids)
            if writable:
                store.put_blob(i, BACKEND, "vlad", pack_arrays({"vlad": vec}), fp_vlad)
            stats["vlad"] += 1
        else:
            vec = arrays["vlad"]
        ps = sets[i]
        has_point = _matchable(ps.points, ps.track_len, config.max_points_per_keyframe)
        entries[i] = KeyframeEntry(i, poses[pos], intr[i].pinhole, feats[i], ps.points, vec, has_point,
                                   np.ascontiguousarray(feats[i].descriptors[has_point]), ps.inconsistent_ids,
                                   None if intr[i].distortion is None else intr[i])
    n_points = sum(len(e.point_index) for e in entries.values())
    logger.info("geometric map: %d keyframes, %d keyframe points; computed %s in %.1f s",
                len(entries), n_points, stats, time.perf_counter() - t0)
    return GeometricMap(entries, centroids, store.revision, stats, fps["features"], origin)  # revision after writes

