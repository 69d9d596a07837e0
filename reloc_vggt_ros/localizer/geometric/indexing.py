"""Map side of the geometric backend: per-keyframe features, 3D points and VLAD, stored as blobs.

Blobs (backend ``"geometric"``), each under a fingerprint of the settings that produced it plus
:data:`CODE_VERSION`, so changing a setting or the algorithm never reuses stale data:

* per keyframe ``features`` (keypoints, RootSIFT, scales), ``points`` (world point per keypoint,
  NaN where none, plus the neighbour ids, each pair's consistency statistics and which
  neighbours were used, re-anchored or dropped), ``vlad``;
* map-wide ``vocabulary`` (k-means centroids and the keyframe count it was trained on),
  ``graph`` (every keyframe's neighbour ids, pair statistics and consistency state, the CRC32 of
  its pose/intrinsics and of its points blob, and a digest of the whole keyframe set) and
  ``global_index`` (the VLAD search structure, :class:`..retrieval.GlobalIndex` bytes: exact up to
  ``map.exact_index_max`` keyframes, inverted lists over 8-bit codes above, re-ranked exactly).

:func:`index_store` is incremental: it computes only what is missing or stale. When the stored
graph's digest matches the keyframes in the store, opening a map reads the poses, the vocabulary,
the graph and the index and nothing per keyframe (a 10k-keyframe map opens in well under a
second); the queries load the keyframes they retrieve through a byte-bounded cache
(``map_cache``). Otherwise it streams over the keyframes: a keyframe's points are recomputed when
its neighbour set changed (a keyframe was added nearby; neighbours come from a k-d tree, not all
pairs), the vocabulary is retrained on a bounded sample once the map has grown
``map.vocabulary_growth`` times since it was trained. Points are built in two passes: every
keyframe's pair statistics first (stored ones reused, from the graph without reading the
blob), then the map-wide pair level decides which neighbour pairs are consistent (see
``triangulation``), and a keyframe is re-triangulated only if its neighbours or that decision
changed. Features needed on the way go through a bounded cache, so building does not hold the map.

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
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ...errors import ConfigError, KeyframeDBError
from ...geometry import Intrinsics, local_origin, shift_T, shift_transform
from ...keyframes.blobs import pack_arrays, unpack_arrays
from ..retrieval import GlobalIndex, VLADRetriever
from .features import Features, extract_features, fingerprint_fields, undistorted
from .map_cache import ByteLRU, KeyframeData, MapEntries
from .vocabulary import keyframe_sample, train_vocabulary, vlad
from .triangulation import (Observations, View, backproject_depth, consistent_neighbours, observe, pair_level,
                            select_neighbours, triangulate_consistent)

if TYPE_CHECKING:
    from ...keyframes import KeyframeStore
    from .config import FeatureConfig, MapSettings, TriangulationConfig

__all__ = ["BACKEND", "CODE_VERSION", "KeyframeEntry", "GeometricMap", "index_store", "fingerprints",
           "blob_problem", "all_neighbours", "resident_bytes"]

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
    tri = asdict(config.triangulation)
    if tri["max_neighbour_distance_m"] == 0.0:       # added later: its default leaves stored maps valid
        del tri["max_neighbour_distance_m"]
    return {"features": _digest("features", feat),
            "points": _digest("points", feat, tri),
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
    """What stays loaded of a map: poses, vocabulary, global index, graph; ``entries`` loads a
    keyframe's features and points on first use (``map_cache.MapEntries``) through ``cache``."""

    entries: MapEntries
    vocabulary: np.ndarray
    revision: int                               # store revision the map reflects
    computed: dict[str, int] = field(default_factory=dict)   # what this indexing had to compute
    features_fingerprint: str = ""
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))   # world position of the local frame
    poses_local: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))   # [N,4,4] in ids() order
    index: GlobalIndex | None = None            # VLAD search over ids()
    cache: ByteLRU | None = None                # shared with the next snapshot (refresh)
    graph_digest: str = ""                      # of the keyframe set the blobs reflect
    footprint_bytes: int = 0                    # what loading every keyframe would put in the cache
    vlads: Any = None                           # ids -> exact VLADs, to re-rank an approximate index's candidates

    def ids(self) -> np.ndarray:
        return np.array(list(self.entries), np.int64)

    def retriever(self) -> VLADRetriever:
        """VLAD retrieval over this map (its stored index, local-frame poses)."""
        ids = self.ids()
        if len(ids) == 0:
            return VLADRetriever(ids, np.zeros((0, 4, 4)), np.zeros((0, 0), np.float32), self.vocabulary)
        return VLADRetriever(ids, self.poses_local, None, self.vocabulary, index=self.index, rerank=self.vlads)


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


# ----------------------------------------------------------------- features
def _load_or_extract(store: "KeyframeStore", kf_id: int, config: "MapSettings", fp: str,
                     writable: bool, stats: dict[str, int]) -> tuple[Features, bool]:
    """The keyframe's features (float32) and whether they had to be extracted (stored if writable);
    KeyframeDBError when neither the blob nor the image is usable."""
    arrays = _arrays(store, kf_id, "features", fp)
    if arrays is not None:
        return Features.from_arrays(arrays), False
    stats["features"] += 1
    return _extract(store, kf_id, config, fp, writable), True


def _extract(store: "KeyframeStore", kf_id: int, config: "MapSettings", fp: str, writable: bool) -> Features:
    """Features from the keyframe's image, stored when writable; KeyframeDBError if it is damaged."""
    feats = extract_features(store.get_keyframe(kf_id).decode_image(), config.features)
    if writable:
        store.put_blob(kf_id, BACKEND, "features", pack_arrays(feats.to_arrays()), fp)
    return feats


def _compact(feats: Features) -> Features:
    """Features as a query keeps them: descriptors float16 (exact: they are stored so)."""
    if feats.descriptors.dtype == np.float16:
        return feats
    return Features(feats.keypoints_px, feats.descriptors.astype(np.float16), feats.scales_px, feats.width,
                    feats.height)


def _features_nbytes(f: Features) -> int:
    return int(f.keypoints_px.nbytes + f.descriptors.nbytes + f.scales_px.nbytes)


class _LeftOut(Exception):
    """A keyframe with neither a usable features blob nor a usable image."""

    def __init__(self, kf_id: int, err: Exception) -> None:
        super().__init__(str(err))
        self.kf_id = kf_id


class _FeatureSource:
    """Float32 undistorted features for indexing, each read once while it fits a cache of ``map.cache_mb``:
    from the query cache (float16 -> float32 is exact), an in-memory copy (read-only store), the
    blob, or extracted from the image (stored when the store is writable; once evicted, it comes
    back from its blob, float16-rounded, as a later open would read it)."""

    def __init__(self, store: "KeyframeStore", config: "MapSettings", fp: str, writable: bool,
                 stats: dict[str, int], cache: ByteLRU, memory: dict[int, Features],
                 cameras: dict[int, Intrinsics]) -> None:
        self.store, self.config, self.fp, self.writable, self.stats = store, config, fp, writable, stats
        self.cache, self.memory, self.cameras = cache, memory, cameras
        self.lru = ByteLRU(int(config.cache_mb * 2**20))

    def extract(self, kf_ids: list[int], jobs: int) -> set[int]:
        """Extract the features of ``kf_ids`` (none stored yet) in ``jobs`` worker processes, as
        :meth:`get` would one after the other: stored by this process in id order, so the blobs,
        the cache and the counts equal a serial run's. Images are read here (checked) and a
        bounded window of them is in flight; a keyframe whose image is damaged is left for
        :meth:`get` to report. Returns the ids done (the caller must not :meth:`get` them again
        for this: one evicted since would come back from its blob, unlike in a serial run)."""
        done: set[int] = set()
        if jobs <= 1 or len(kf_ids) < 2:
            return done
        from collections import deque

        from ...keyframes.build import worker_pool

        pending: deque = deque()
        todo = iter(kf_ids)
        t0 = time.perf_counter()
        with worker_pool(min(jobs, len(kf_ids)), _worker_init) as pool:
            while True:
                while len(pending) < 4 * jobs and (kf_id := next(todo, None)) is not None:
                    try:
                        image = self.store.get_keyframe(kf_id).image_jpeg
                    except KeyframeDBError:
                        continue                                    # get() reads it again and reports it
                    pending.append((kf_id, pool.submit(_extract_image, image, self.config.features)))
                if not pending:
                    logger.info("features of %d keyframes extracted in %d processes in %.1f s", len(done),
                                min(jobs, len(kf_ids)), time.perf_counter() - t0)
                    return done
                kf_id, future = pending.popleft()
                feats = future.result()
                if feats is None:
                    continue
                self.stats["features"] += 1
                if self.writable:
                    self.store.put_blob(kf_id, BACKEND, "features", pack_arrays(feats.to_arrays()), self.fp)
                else:
                    self.memory[kf_id] = feats
                feats = undistorted(feats, self.cameras[kf_id])
                self.lru.put(kf_id, feats, _features_nbytes(feats))
                done.add(kf_id)

    def get(self, kf_id: int) -> Features:
        feats = self.lru.get(kf_id)
        if feats is not None:
            return feats
        data = self.cache.get(kf_id)
        if data is not None:
            f = data.features
            feats = Features(f.keypoints_px, f.descriptors.astype(np.float32), f.scales_px, f.width, f.height)
        elif kf_id in self.memory:
            feats = undistorted(self.memory[kf_id], self.cameras[kf_id])
        else:
            try:
                feats, extracted = _load_or_extract(self.store, kf_id, self.config, self.fp, self.writable, self.stats)
            except KeyframeDBError as err:
                raise _LeftOut(kf_id, err) from err
            if extracted and not self.writable:
                self.memory[kf_id] = feats
            feats = undistorted(feats, self.cameras[kf_id])     # ideal pixels of the pinhole camera
        self.lru.put(kf_id, feats, _features_nbytes(feats))
        return feats


def _worker_init() -> None:
    cv2.setNumThreads(1)        # one process per core already


def _extract_image(image: bytes, config: "FeatureConfig") -> Features | None:
    """Worker side of :meth:`_FeatureSource.extract`: features of encoded image bytes (None if
    they do not decode)."""
    img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else extract_features(img, config)


# ----------------------------------------------------------------- neighbour graph
@dataclass
class _Row:
    """One keyframe's line of the graph: what its points blob was computed from."""

    row_crc: int                    # CRC32 of its pose and intrinsics
    neighbours: list[int]
    state: np.ndarray               # int8 [k]: 1 consistent, 2 re-anchored, 0 dropped
    pair_median: np.ndarray         # [k] median Sampson distance per pair (px)
    pair_matches: np.ndarray        # [k]
    from_depth: bool
    points_crc: int                 # CRC32 of its points and track lengths (the cache's version of them)
    n_keypoints: int
    n_matchable: int

    @property
    def inconsistent(self) -> frozenset[int]:
        if self.from_depth or not self.neighbours:
            return frozenset()
        return frozenset(np.array(self.neighbours, np.int64)[self.state != 1].tolist())


def _row_crcs(ids: np.ndarray, world_poses: np.ndarray, intr: dict[int, Intrinsics]) -> np.ndarray:
    return np.array([zlib.crc32(world_poses[p].tobytes(), zlib.crc32(repr(intr[int(i)]).encode()))
                     for p, i in enumerate(ids)], np.int64)


def _set_digest(ids: np.ndarray, row_crcs: np.ndarray) -> str:
    """Digest of a keyframe set (ids, poses, intrinsics): equal iff the graph still describes it."""
    return hashlib.sha1(np.asarray(ids, np.int64).tobytes() + np.asarray(row_crcs, np.int64).tobytes()).hexdigest()


def _pack_graph(ids: np.ndarray, rows: dict[int, _Row], digest: str, level: float) -> bytes:
    n, k = len(ids), max([len(r.neighbours) for r in rows.values()] + [1])
    nb, st = np.full((n, k), -1, np.int64), np.full((n, k), -1, np.int8)
    med, cnt = np.full((n, k), np.nan), np.zeros((n, k), np.int64)
    for p, i in enumerate(int(v) for v in ids):
        r, m = rows[i], len(rows[i].neighbours)
        nb[p, :m], st[p, :m], med[p, :m], cnt[p, :m] = r.neighbours, r.state, r.pair_median, r.pair_matches
    col = {name: np.array([getattr(rows[int(i)], name) for i in ids], dtype)
           for name, dtype in (("row_crc", np.int64), ("from_depth", bool), ("points_crc", np.int64),
                               ("n_keypoints", np.int64), ("n_matchable", np.int64))}
    return pack_arrays({"ids": np.asarray(ids, np.int64), "neighbours": nb, "state": st, "pair_median": med,
                        "pair_matches": cnt, **col, "digest": np.array(digest), "level": np.array(level)})


_GRAPH_COLUMNS = ("neighbours", "state", "pair_median", "pair_matches", "row_crc", "from_depth", "points_crc",
                  "n_keypoints", "n_matchable")


class _Graph(Mapping[int, _Row]):
    """The stored graph's rows by keyframe id, each made from the blob's arrays when first asked
    for: opening a map needs the ids and two count columns, not 10k row objects."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = arrays
        self.ids = arrays["ids"].astype(np.int64)
        self._pos = dict(zip(self.ids.tolist(), range(len(self.ids))))
        self._rows: dict[int, _Row] = {}

    def __getitem__(self, kf_id: int) -> _Row:
        row = self._rows.get(kf_id)
        if row is None:
            a, p = self.a, self._pos[kf_id]
            m = int(np.sum(a["neighbours"][p] >= 0))
            row = self._rows[kf_id] = _Row(
                int(a["row_crc"][p]), a["neighbours"][p, :m].tolist(), a["state"][p, :m], a["pair_median"][p, :m],
                a["pair_matches"][p, :m], bool(a["from_depth"][p]), int(a["points_crc"][p]), int(a["n_keypoints"][p]),
                int(a["n_matchable"][p]))
        return row

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids.tolist())

    def __len__(self) -> int:
        return len(self.ids)


def _load_graph(store: "KeyframeStore", fp: str) -> tuple[str, Mapping[int, _Row]] | None:
    """The stored graph ``(digest, rows)``; None if absent or damaged (a warning: rebuilt)."""
    try:
        blob = store.get_map_blob(BACKEND, "graph", fp)
        if blob is None:
            return None
        a = unpack_arrays(blob)
        n = len(a["ids"])
        if any(len(a[c]) != n for c in _GRAPH_COLUMNS):
            raise KeyframeDBError("graph blob: arrays of different lengths")
        if a["neighbours"].ndim != 2 or any(a[c].shape != a["neighbours"].shape
                                            for c in ("state", "pair_median", "pair_matches")):
            raise KeyframeDBError("graph blob: neighbour columns of different shapes")   # rows are made later
        if len(np.unique(a["ids"])) != n:
            raise KeyframeDBError("graph blob: repeated keyframe ids")
        return str(a["digest"]), _Graph(a)
    except (KeyframeDBError, KeyError, ValueError, IndexError) as err:
        logger.warning("map: damaged graph blob ignored and recomputed: %s", err)
        return None


def _counts(rows: Mapping[int, _Row], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n_keypoints, n_matchable)`` of ``ids``' rows (straight from the columns of a stored graph)."""
    if isinstance(rows, _Graph):
        pos = np.array([rows._pos[int(i)] for i in ids], np.int64)  # noqa: SLF001
        return rows.a["n_keypoints"][pos].astype(np.int64), rows.a["n_matchable"][pos].astype(np.int64)
    return (np.array([rows[int(i)].n_keypoints for i in ids], np.int64),
            np.array([rows[int(i)].n_matchable for i in ids], np.int64))


class _Inconsistent(Mapping[int, frozenset]):
    """``kf_id -> neighbours inconsistent with it`` of graph rows, computed when asked for."""

    def __init__(self, rows: Mapping[int, _Row]) -> None:
        self.rows = rows

    def __getitem__(self, kf_id: int) -> frozenset:
        return self.rows[kf_id].inconsistent

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def all_neighbours(T_world_cams: np.ndarray, config: "TriangulationConfig") -> list[list[int]]:
    """``triangulation.select_neighbours`` of every keyframe, through a k-d tree over the centres:
    each keyframe looks at its nearest few dozen (more only when too few of them look its way),
    so a map of N keyframes costs N log N, not N^2. Same answer: the neighbours are the nearest
    qualifying keyframes, and every keyframe outside the candidates is at least as far."""
    n = len(T_world_cams)
    if n == 0:
        return []
    centres = T_world_cams[:, :3, 3]
    tree = cKDTree(centres)
    want, limit = config.max_neighbours, config.max_neighbour_distance_m
    m0 = min(n, max(4 * (want + 1), 32))
    dist0, first = tree.query(centres, m0)
    out = []
    for p in range(n):
        m, cand, reach = m0, np.atleast_1d(first[p]), float(np.max(dist0[p]))
        while True:
            pos = np.union1d(cand, [p])              # sorted: select_neighbours' tie order
            sub = select_neighbours(int(np.searchsorted(pos, p)), T_world_cams[pos], config)
            if len(sub) == want or len(pos) >= n or 0 < limit < reach:
                out.append([int(pos[j]) for j in sub])
                break
            m = min(n, 4 * m)
            d, cand = tree.query(centres[p], m)
            cand, reach = np.atleast_1d(cand), float(np.max(d))
    return out


def _points_row(arrays: dict[str, np.ndarray], row_crc: int, cap: int) -> _Row:
    pts, track = arrays["points_world"], arrays["track_len"]
    n_match = len(_matchable(pts, track, cap))
    version = zlib.crc32(np.ascontiguousarray(pts).tobytes(), zlib.crc32(np.ascontiguousarray(track).tobytes()))
    if bool(arrays["from_depth"]):
        return _Row(row_crc, [], np.zeros(0, np.int8), np.zeros(0), np.zeros(0, np.int64), True, version,
                    len(pts), n_match)
    return _Row(row_crc, arrays["neighbour_ids"].tolist(), arrays["state"], arrays["pair_median_px"],
                arrays["pair_matches"], False, version, len(pts), n_match)


def _stored_row(store: "KeyframeStore", kf_id: int, fp: str, n_keypoints: int | None, row_crc: int, cap: int
                ) -> _Row | None:
    arrays = _arrays(store, kf_id, "points", fp, n_keypoints)
    return None if arrays is None else _points_row(arrays, row_crc, cap)


def _as_stored(points_local: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Local points rounded as their stored world copy reads back (a fresh map equals a reloaded one)."""
    return (points_local + origin) - origin


def _point_rows(store: "KeyframeStore", ids: np.ndarray, poses: np.ndarray, intr: dict[int, Intrinsics],
                row_crcs: np.ndarray, feats: _FeatureSource, config: "MapSettings", fp: str, writable: bool,
                stats: dict[str, int], origin: np.ndarray, old_rows: Mapping[int, _Row],
                memory_points: dict[int, dict[str, np.ndarray]]) -> tuple[dict[int, _Row], float]:
    """Every keyframe's graph row, its points blob brought up to date: pair statistics of all
    keyframes first (a valid stored row or blob reused), then triangulation of those whose
    neighbour set or consistency decision changed (the decision needs the map-wide level).

    ``poses`` and the points computed are in the local frame at ``origin``; blobs hold world points.
    ``intr`` are the keyframes' cameras, ``feats`` their undistorted features. Read-only stores
    keep recomputed points in ``memory_points``.
    """
    tc, cap = config.triangulation, config.max_points_per_keyframe
    pos_of = {int(i): p for p, i in enumerate(ids)}

    def view(i: int) -> View:
        return View(feats.get(i), intr[i].pinhole, poses[pos_of[i]])

    neighbours = {int(i): [int(ids[j]) for j in nb] for i, nb in zip(ids, all_neighbours(poses, tc))}
    have = store.blob_ids(BACKEND, "points", fp)
    stored: dict[int, _Row] = {}
    fresh: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    kept_obs = ByteLRU(int(config.cache_mb * 2**20))
    out: dict[int, _Row] = {}
    for p, i in enumerate(int(v) for v in ids):
        row = old_rows.get(i) if i in have and i not in memory_points else None
        if row is not None and row.row_crc != int(row_crcs[p]):
            row = None
        if row is None and i in have and i not in memory_points:   # its tie to the features: checked on load
            row = _stored_row(store, i, fp, None, int(row_crcs[p]), cap)
        if row is not None and row.from_depth:
            out[i] = row
        elif row is not None and row.neighbours == neighbours[i]:
            stored[i] = row
        elif (depth := store.get_keyframe(i).depth_m) is not None:
            pts = _as_stored(backproject_depth(feats.get(i), intr[i], poses[p], depth), origin)
            arrays = {"points_world": pts + origin, "track_len": np.isfinite(pts[:, 0]).astype(np.int32),
                      "neighbour_ids": np.zeros(0, np.int64), "from_depth": np.array(True)}
            out[i] = _save_points(store, i, arrays, fp, writable, memory_points, int(row_crcs[p]), cap)
            stats["points"] += 1
        else:
            obs = observe(view(i), [view(n) for n in neighbours[i]], tc)
            fresh[i] = (obs.pair_median_px, obs.pair_matches)
            kept_obs.put(i, obs, obs.xy.nbytes + obs.mask.nbytes)
    level = pair_level([r.pair_median for r in stored.values()] + [m for m, _ in fresh.values()],
                       [r.pair_matches for r in stored.values()] + [c for _, c in fresh.values()], tc)
    for p, i in enumerate(int(v) for v in ids):
        if i in out:
            continue
        nbs, r = neighbours[i], stored.get(i)
        if r is not None and np.array_equal(consistent_neighbours(r.pair_median, r.pair_matches, level, tc),
                                            r.state == 1):
            out[i] = r
            continue
        obs = kept_obs.get(i)
        if obs is None:
            obs = observe(view(i), [view(n) for n in nbs], tc)
        pts, track, state, D = triangulate_consistent(view(i), [view(n) for n in nbs], obs, level, tc)
        pts = _as_stored(pts, origin)
        arrays = {"points_world": pts + origin, "track_len": track, "neighbour_ids": np.array(nbs, np.int64),
                  "from_depth": np.array(False), "pair_median_px": obs.pair_median_px,
                  "pair_matches": obs.pair_matches, "state": state, "reanchor_T": shift_transform(D, origin)}
        out[i] = _save_points(store, i, arrays, fp, writable, memory_points, int(row_crcs[p]), cap)
        stats["points"] += 1
        if (state != 1).any():
            logger.info("keyframe %d: neighbours %s inconsistent (pair median %s px, map level %.3f px); "
                        "re-anchored %s, dropped %s", i, np.array(nbs)[state != 1].tolist(),
                        np.round(obs.pair_median_px[state != 1], 3).tolist(), level,
                        np.array(nbs)[state == 2].tolist(), np.array(nbs)[state == 0].tolist())
    return out, level


def _save_points(store: "KeyframeStore", kf_id: int, arrays: dict[str, np.ndarray], fp: str, writable: bool,
                 memory_points: dict[int, dict[str, np.ndarray]], row_crc: int, cap: int) -> _Row:
    if writable:
        store.put_blob(kf_id, BACKEND, "points", pack_arrays(arrays), fp)
    else:
        memory_points[kf_id] = arrays
    return _points_row(arrays, row_crc, cap)


def _matchable(points: np.ndarray, track_len: np.ndarray, cap: int) -> np.ndarray:
    """Indices of keypoints with a 3D point; with ``cap`` > 0 only the ``cap`` seen in most views."""
    has_point = np.flatnonzero(np.isfinite(points[:, 0]))
    if 0 < cap < len(has_point):
        order = np.argsort(-track_len[has_point], kind="stable")[:cap]
        has_point = np.sort(has_point[order])
    return has_point


# ----------------------------------------------------------------- vocabulary, global index
def _vocabulary(store: "KeyframeStore", ids: np.ndarray, feats: _FeatureSource, config: "MapSettings", fp: str,
                writable: bool, stats: dict[str, int], arrays: dict[str, np.ndarray] | None) -> np.ndarray:
    """The stored vocabulary (``arrays``, read by the caller) unless the map outgrew it; else trained."""
    if arrays is not None and not _retrain(len(ids), arrays, config):
        return arrays["centroids"]
    # a bounded share of every keyframe (keyframe_sample), read one keyframe at a time
    centroids = train_vocabulary([keyframe_sample(feats.get(int(i)).descriptors, len(ids), int(i)) for i in ids],
                                 config.vocabulary_words)
    if writable:
        store.put_map_blob(BACKEND, "vocabulary", pack_arrays(
            {"centroids": centroids, "n_keyframes": np.array(len(ids))}), fp)
    stats["vocabulary"] += 1
    return centroids


def _retrain(n_keyframes: int, vocabulary: dict[str, np.ndarray], config: "MapSettings") -> bool:
    growth = config.vocabulary_growth
    return growth > 0 and n_keyframes >= growth * int(vocabulary["n_keyframes"])


def _index_fingerprint(fp_vlad: str, n_keyframes: int, config: "MapSettings") -> str:
    exact = n_keyframes <= config.exact_index_max
    return _digest("index", fp_vlad, "flat" if exact else f"ivf-sq8-{_index_lists(n_keyframes)}")


def _index_lists(n_keyframes: int) -> int:
    """Inverted lists of the approximate index: ~sqrt(N) (100 at 10k keyframes, 316 at 100k)."""
    return max(1, int(np.sqrt(n_keyframes)))


def _load_index(store: "KeyframeStore", fp: str) -> GlobalIndex | None:
    try:
        blob = store.get_map_blob(BACKEND, "global_index", fp)
        return None if blob is None else GlobalIndex.from_bytes(blob)
    except (KeyframeDBError, ValueError) as err:
        logger.warning("map: damaged global_index blob ignored and recomputed: %s", err)
        return None


_INDEX_TRAINING = 2000      # VLADs the lists of the approximate index are trained on (evenly spread)
_INDEX_BATCH = 1000


def _global_index(store: "KeyframeStore", ids: np.ndarray, feats: _FeatureSource, centroids: np.ndarray,
                  config: "MapSettings", fp_vlad: str, fp_index: str, writable: bool, stats: dict[str, int],
                  memory_vlads: dict[int, np.ndarray]) -> GlobalIndex:
    """The stored index if it covers exactly ``ids``; extended when keyframes were only appended;
    else rebuilt from every keyframe's VLAD (stored blobs reused, missing ones computed)."""
    have = store.blob_ids(BACKEND, "vlad", fp_vlad)

    def vec(i: int) -> np.ndarray:
        arrays = _arrays(store, i, "vlad", fp_vlad) if i in have else None
        if arrays is not None and arrays["vlad"].shape == (centroids.size,):
            return arrays["vlad"]
        v = vlad(feats.get(i).descriptors, centroids)
        if writable:
            store.put_blob(i, BACKEND, "vlad", pack_arrays({"vlad": v}), fp_vlad)
        else:
            memory_vlads[i] = v
        stats["vlad"] += 1
        return v

    def add(index: GlobalIndex, new: np.ndarray) -> GlobalIndex:
        for b in range(0, len(new), _INDEX_BATCH):
            chunk = new[b:b + _INDEX_BATCH]
            index.add(chunk, np.stack([vec(int(i)) for i in chunk]))
        return index

    stored = _load_index(store, fp_index)
    if stored is not None:
        known = stored.ids
        if np.array_equal(known, ids):
            return stored
        if len(known) < len(ids) and np.array_equal(ids[:len(known)], known):
            return add(stored, ids[len(known):])
    dim = centroids.size
    if len(ids) <= config.exact_index_max:
        return add(GlobalIndex(dim, backend="numpy", normalize=False), ids)
    sample = ids[np.unique(np.linspace(0, len(ids) - 1, min(len(ids), _INDEX_TRAINING)).astype(int))]
    index = GlobalIndex.approximate(dim, np.stack([vec(int(i)) for i in sample]), _index_lists(len(ids)),
                                    config.index_probe, normalize=False)
    return add(index, ids)


# ----------------------------------------------------------------- memory budget
def resident_bytes(n_keyframes: int, config: "MapSettings") -> int:
    """What a map of ``n_keyframes`` keeps loaded besides the keyframe cache: the global index
    (VLAD vectors up to ``exact_index_max``, 8-bit codes + list centroids above), poses (world and
    local), graph rows and the retriever's k-d tree (estimate)."""
    vlad_dim = config.vocabulary_words * _DESC_DIM
    exact = n_keyframes <= config.exact_index_max
    per = 4 * vlad_dim if exact else vlad_dim + 8           # float32 vectors, or 8-bit codes + id
    per += 3 * 128 + config.triangulation.max_neighbours * 25 + 200
    return int(n_keyframes * per + (0 if exact else 4 * vlad_dim * _index_lists(n_keyframes)))


def check_memory_budget(n_keyframes: int, config: "MapSettings", where: str) -> None:
    """ConfigError naming the knob when the map cannot fit ``map.memory_budget_mb``."""
    resident = resident_bytes(n_keyframes, config) / 2**20
    if resident + config.cache_mb > config.memory_budget_mb:
        raise ConfigError(
            f"{where}: a map of {n_keyframes} keyframes keeps ~{resident:.0f} MB loaded (global index, poses, "
            f"graph) plus the keyframe cache geometric.map.cache_mb = {config.cache_mb:g} MB, over "
            f"geometric.map.memory_budget_mb = {config.memory_budget_mb:g} MB: raise memory_budget_mb "
            f"(or lower cache_mb or exact_index_max)")


# ----------------------------------------------------------------- the map
def _keyframe_loader(store: "KeyframeStore", config: "MapSettings", fp: str, rows: dict[int, _Row],
                     cache: ByteLRU, writable: bool, memory_feats: dict[int, Features],
                     memory_points: dict[int, dict[str, np.ndarray]], cameras: dict[int, Intrinsics]) -> Any:
    """``load(kf_id) -> KeyframeData`` for :class:`MapEntries`: the cached data if its points are
    those of the graph row, else the features (kept from the cache when only the points changed)
    and points blobs. A damaged features blob is recomputed from the image (warning; stored when
    writable); a damaged points blob leaves the keyframe without 3D points until re-indexed."""
    cap, fp_points = config.max_points_per_keyframe, fingerprints(config)["points"]

    def load(kf_id: int) -> KeyframeData:
        row = rows[kf_id]
        old = cache.get(kf_id)
        if old is not None and old.version == row.points_crc:
            cache.hits += 1
            return old
        cache.misses += 1
        if old is not None:
            feats = old.features
        elif kf_id in memory_feats:
            feats = _compact(memory_feats[kf_id])
        else:
            arrays = _arrays(store, kf_id, "features", fp)
            if arrays is not None:
                feats = Features(arrays["keypoints_px"].astype(np.float64), arrays["descriptors"].astype(np.float16),
                                 arrays["scales_px"].astype(np.float32), *(int(v) for v in arrays["size"]))
            else:
                try:
                    feats = _compact(_extract(store, kf_id, config, fp, writable))
                except KeyframeDBError as err:
                    logger.warning("keyframe %d: no features (%s); it matches nothing", kf_id, err)
                    feats = Features(np.zeros((0, 2)), np.zeros((0, _DESC_DIM), np.float16), np.zeros(0, np.float32),
                                     1, 1)
        if old is None:
            feats = undistorted(feats, cameras[kf_id])          # ideal pixels of the pinhole camera
        pts = memory_points.get(kf_id) or _arrays(store, kf_id, "points", fp_points, len(feats))
        if pts is None:
            points, track = np.full((len(feats), 3), np.nan), np.zeros(len(feats), np.int32)
        else:
            points, track = pts["points_world"], pts["track_len"]
        has_point = _matchable(points, track, cap)
        data = KeyframeData(feats, points, has_point,
                            np.ascontiguousarray(feats.descriptors[has_point], dtype=np.float32), row.points_crc)
        cache.put(kf_id, data, data.nbytes)
        return data

    return load


_VLAD_CACHE_MB = 64     # exact VLADs of re-ranked candidates (32 kB each: ~2,000 keyframes)


def _vlad_loader(store: "KeyframeStore", fp_vlad: str, memory: dict[int, np.ndarray], dim: int) -> Any:
    """``vlads(ids) -> [n, D]``: the stored (exact) VLADs of keyframes, the most recently used kept,
    for re-ranking an approximate index's candidates (a missing or damaged one scores zero)."""
    lru = ByteLRU(_VLAD_CACHE_MB * 2**20)

    def one(i: int) -> np.ndarray:
        if i in memory:
            return memory[i]
        arrays = _arrays(store, i, "vlad", fp_vlad)
        v = arrays["vlad"] if arrays is not None and arrays["vlad"].shape == (dim,) else np.zeros(dim, np.float32)
        return v

    def vlads(ids: np.ndarray) -> np.ndarray:
        return np.stack([lru.get_or_load(int(i), lambda i=int(i): (one(i), 4 * dim)) for i in ids])

    return vlads


def _make_map(store: "KeyframeStore", ids: np.ndarray, poses: np.ndarray, intr: dict[int, Intrinsics],
              origin: np.ndarray, rows: dict[int, _Row], centroids: np.ndarray, index: GlobalIndex,
              stats: dict[str, int], config: "MapSettings", cache: ByteLRU, digest: str,
              memory_feats: dict[int, Features], memory_points: dict[int, dict[str, np.ndarray]],
              fp_vlad: str = "", memory_vlads: dict[int, np.ndarray] | None = None) -> GeometricMap:
    fps = fingerprints(config)
    writable = not getattr(store, "readonly", False)
    load = _keyframe_loader(store, config, fps["features"], rows, cache, writable, memory_feats, memory_points, intr)
    entries = MapEntries(ids, poses, intr, origin, _Inconsistent(rows), load)
    vlads = _vlad_loader(store, fp_vlad, memory_vlads or {}, centroids.size) if index.kind != "flat" else None
    n_keypoints, n_matchable = _counts(rows, ids)
    gmap = GeometricMap(entries, centroids, store.revision, stats, fps["features"], origin, poses, index, cache,
                        digest, map_bytes(n_keypoints, n_matchable), vlads)
    logger.info("geometric map: %d keyframes, %d keyframe points; computed %s", len(ids), int(n_matchable.sum()),
                stats)
    return gmap


def map_bytes(n_keypoints: np.ndarray, n_matchable: np.ndarray) -> int:
    """What loading every keyframe of the map would put in the cache (for warming small maps),
    from each keyframe's keypoint and matchable-point counts."""
    return int(np.sum(np.asarray(n_keypoints, np.int64) * (16 + 2 * _DESC_DIM + 4 + 24)
                      + np.asarray(n_matchable, np.int64) * (8 + 4 * _DESC_DIM) + 512))


def index_store(store: "KeyframeStore", config: "MapSettings", previous: GeometricMap | None = None,
                jobs: int = 1) -> GeometricMap:
    """Compute what is missing or stale, store it (unless the store is read-only), load the map.

    ``previous``: the map of an earlier call with the same config, whose cache (unchanged
    keyframes' features and points) the new map shares (live mapping refreshes after new keyframes).
    ``jobs`` > 1: missing features are extracted in that many worker processes (``db build``);
    the result is the same as with one.
    ConfigError if the map does not fit ``config.memory_budget_mb``.
    """
    t0 = time.perf_counter()
    ids, world_poses = store.poses()
    check_memory_budget(len(ids), config, str(store.path))
    intr = store.intrinsics()
    fps = fingerprints(config)
    writable = not getattr(store, "readonly", False)
    stats = {"features": 0, "points": 0, "vocabulary": 0, "vlad": 0}
    cache = (previous.cache if previous is not None and previous.cache is not None
             and previous.features_fingerprint == fps["features"] else ByteLRU(int(config.cache_mb * 2**20)))
    row_crcs = _row_crcs(ids, world_poses, intr)
    digest = _set_digest(ids, row_crcs)
    graph = _load_graph(store, fps["points"])
    memory_feats: dict[int, Features] = {}
    memory_points: dict[int, dict[str, np.ndarray]] = {}
    memory_vlads: dict[int, np.ndarray] = {}
    vocab = _arrays(store, None, "vocabulary", fps["vocabulary"]) if len(ids) else None
    if len(ids) and graph is not None and graph[0] == digest:          # nothing changed: read nothing per keyframe
        if vocab is not None and not _retrain(len(ids), vocab, config):
            centroids = vocab["centroids"]
            fp_vlad = _digest("vlad", fps["vocabulary"], hashlib.sha1(centroids.tobytes()).hexdigest())
            map_ids = np.sort(np.fromiter(graph[1], np.int64, len(graph[1])))
            index = _load_index(store, _index_fingerprint(fp_vlad, len(map_ids), config))
            if index is not None and np.array_equal(index.ids, map_ids) and np.isin(map_ids, ids).all():
                keep = np.isin(ids, map_ids)
                origin = local_origin(world_poses[keep][:, :3, 3])
                poses = shift_T(world_poses[keep], -origin)
                gmap = _make_map(store, map_ids, poses, intr, origin, graph[1], centroids, index, stats, config,
                                 cache, digest, memory_feats, memory_points, fp_vlad)
                logger.info("geometric map opened from its stored graph and index in %.2f s",
                            time.perf_counter() - t0)
                return gmap
    old_rows = graph[1] if graph is not None else {}
    feats = _FeatureSource(store, config, fps["features"], writable, stats, cache, memory_feats, intr)
    have_features = store.blob_ids(BACKEND, "features", fps["features"])
    keep = np.ones(len(ids), bool)
    extracted = feats.extract([int(i) for i in ids if int(i) not in have_features], jobs)
    for p, i in enumerate(int(v) for v in ids):      # what has no features yet: extracted first
        if i not in have_features and i not in extracted:
            try:
                feats.get(i)
            except _LeftOut as err:
                logger.warning("keyframe %d left out of the geometric map: %s", i, err)
                keep[p] = False
    while True:
        kept_ids, kept_world, kept_crcs = ids[keep], world_poses[keep], row_crcs[keep]
        origin = local_origin(kept_world[:, :3, 3])
        poses = shift_T(kept_world, -origin)
        if len(kept_ids) == 0:
            empty = GlobalIndex(1, backend="numpy")
            return _make_map(store, kept_ids, poses, intr, origin, {}, np.zeros((0, _DESC_DIM), np.float32), empty,
                             stats, config, cache, digest, memory_feats, memory_points)
        try:
            rows, level = _point_rows(store, kept_ids, poses, intr, kept_crcs, feats, config, fps["points"], writable,
                                      stats, origin, old_rows, memory_points)
            centroids = _vocabulary(store, kept_ids, feats, config, fps["vocabulary"], writable, stats, vocab)
            fp_vlad = _digest("vlad", fps["vocabulary"], hashlib.sha1(centroids.tobytes()).hexdigest())
            fp_index = _index_fingerprint(fp_vlad, len(kept_ids), config)
            index = _global_index(store, kept_ids, feats, centroids, config, fp_vlad, fp_index, writable, stats,
                                  memory_vlads)
            break
        except _LeftOut as err:                       # its blob and its image are damaged: map without it
            logger.warning("keyframe %d left out of the geometric map: %s", err.kf_id, err)
            keep &= ids != err.kf_id
    if writable:
        store.put_map_blob(BACKEND, "global_index", index.to_bytes(), fp_index)
        store.put_map_blob(BACKEND, "graph", _pack_graph(kept_ids, rows, digest, level), fps["points"])
    gmap = _make_map(store, kept_ids, poses, intr, origin, rows, centroids, index, stats, config, cache, digest,
                     memory_feats, memory_points, fp_vlad, memory_vlads)
    logger.info("geometric map indexed in %.1f s", time.perf_counter() - t0)
    return gmap
