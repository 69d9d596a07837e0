"""Keyframe data loaded on demand through one byte-bounded cache: memory follows what queries touch.

A map of 100k keyframes holds ~100 GB of features; a query reads the top-k retrieved keyframes
(and LK their images). So the geometric map keeps only poses, the global index and the
neighbour graph resident, and :class:`MapEntries` builds a keyframe's :class:`KeyframeEntry` from
the store the first time a query asks for it, keeping the most recently used in a
:class:`ByteLRU` of ``map.cache_mb``. The cache is shared by the successive snapshots of one
localizer (a refresh reuses every unchanged keyframe's data) and holds origin-free data (world
points), so a local frame that moves with the map never serves stale coordinates.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...geometry import Intrinsics
from .features import Features

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["ByteLRU", "KeyframeData", "MapEntries"]


class ByteLRU:
    """Values by key; the most recently used are kept while their bytes fit ``capacity_bytes``
    (a value larger than the whole capacity is handed out but not kept). Thread-safe; a load
    runs outside the lock, so two threads may load the same key once each."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if nbytes > self.capacity_bytes:
                return
            self._items[key] = (value, int(nbytes))
            self._nbytes += int(nbytes)
            while self._nbytes > self.capacity_bytes:
                self._nbytes -= self._items.popitem(last=False)[1][1]

    def get_or_load(self, key: Hashable, load: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value, else ``load() -> (value, nbytes)`` stored and returned."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value, nbytes = load()
        self.put(key, value, nbytes)
        return value

    def discard(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop every entry whose key ``keep`` rejects."""
        with self._lock:
            for key in [k for k in self._items if not keep(k)]:
                self._nbytes -= self._items.pop(key)[1]


@dataclass(frozen=True)
class KeyframeData:
    """What a query needs of one keyframe, independent of the map's local frame: features
    (undistorted keypoints; descriptors float16, the one copy of all of them), world points
    (float64, NaN where none),
    and the matchable subset (indices + float32 descriptors for BLAS)."""

    features: Features
    points_world: np.ndarray
    point_index: np.ndarray
    point_descriptors: np.ndarray
    version: int = 0            # which points these are (the graph's CRC of the points blob)

    @property
    def nbytes(self) -> int:
        f = self.features
        return int(f.keypoints_px.nbytes + f.descriptors.nbytes + f.scales_px.nbytes + self.points_world.nbytes
                   + self.point_index.nbytes + self.point_descriptors.nbytes + 512)


class MapEntries(Mapping[int, "KeyframeEntry"]):
    """``{kf_id: KeyframeEntry}`` of a map snapshot, loaded on first access (``load(kf_id)``).

    Entries are in the snapshot's local frame (``origin``); the last few built are kept so the
    stages of one query (matching, local map, places, LK) do not rebuild them. Iterating yields
    every id (and ``values()`` loads every keyframe: for tests and small maps only).
    """

    _RECENT = 64

    def __init__(self, ids: np.ndarray, T_local_cam: np.ndarray, intrinsics: Mapping[int, Intrinsics],
                 origin: np.ndarray, inconsistent: Mapping[int, frozenset[int]],
                 load: Callable[[int], KeyframeData]) -> None:
        self._pos = {int(i): p for p, i in enumerate(ids)}
        self._ids = [int(i) for i in ids]
        self._T = T_local_cam
        self._intr = intrinsics
        self._origin = origin
        self._inconsistent = inconsistent
        self._load = load
        self._recent: OrderedDict[int, KeyframeEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __contains__(self, kf_id: object) -> bool:
        return kf_id in self._pos

    def intrinsics(self, kf_id: int) -> Intrinsics:
        """A keyframe's intrinsics without loading it."""
        return self._intr[int(kf_id)]

    def __getitem__(self, kf_id: int) -> "KeyframeEntry":
        from .indexing import KeyframeEntry

        kf_id = int(kf_id)
        with self._lock:
            entry = self._recent.get(kf_id)
            if entry is not None:
                self._recent.move_to_end(kf_id)
                return entry
        pos = self._pos[kf_id]                       # KeyError for an unknown id, as a dict
        data = self._load(kf_id)
        camera = self._intr[kf_id]
        entry = KeyframeEntry(kf_id, self._T[pos], camera.pinhole, data.features,
                              data.points_world - self._origin, np.zeros(0, np.float32), data.point_index,
                              data.point_descriptors, self._inconsistent.get(kf_id, frozenset()),
                              None if camera.distortion is None else camera)
        with self._lock:
            self._recent[kf_id] = entry
            while len(self._recent) > self._RECENT:
                self._recent.popitem(last=False)
        return entry
