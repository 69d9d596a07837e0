"""Choosing which keyframes to match a query against.

Two rankings: by a global image descriptor (any backend's; exact inner-product search with
faiss when importable, numpy otherwise, same results), and by distance to a prior pose (from
``/initialpose`` or the last fix). A small thumbnail descriptor makes retrieval work with no
learned model at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np

from ..errors import KeyframeDBError
from ..geometry import rotation_error_deg
from ..keyframes.blobs import pack_arrays, unpack_arrays
from ..keyframes.store import KeyframeStore

__all__ = ["GlobalIndex", "nearest_by_pose", "thumbnail_descriptor", "store_global_descriptors",
           "load_global_index", "GLOBAL_KEY", "THUMBNAIL_BACKEND", "THUMBNAIL_FINGERPRINT"]

logger = logging.getLogger(__name__)

try:  # faiss is optional: the numpy path gives the same answers, only slower for huge maps
    import faiss
except ImportError:  # pragma: no cover - exercised where faiss is absent
    faiss = None

BACKENDS = ("auto", "faiss", "numpy")
GLOBAL_KEY = "global"                    # blob key of a keyframe's global descriptor
THUMBNAIL_BACKEND = "thumbnail"
THUMBNAIL_FINGERPRINT = "thumb-16x12-grey-v1"


class GlobalIndex:
    """Exact top-k by inner product over ``D``-dim float32 descriptors, keyed by keyframe id.

    With ``normalize=True`` (default) descriptors and queries are L2-normalised, so the score is
    the cosine similarity in [-1, 1]. Ties are ordered by insertion order in the numpy backend;
    faiss may order exact ties differently.
    """

    def __init__(self, dim: int, backend: str = "auto", normalize: bool = True) -> None:
        if int(dim) <= 0:
            raise ValueError(f"descriptor dimension must be positive, got {dim}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown index backend {backend!r}; expected one of {BACKENDS}")
        if backend == "faiss" and faiss is None:
            raise ValueError("index backend 'faiss' requested but faiss is not importable")
        self.dim = int(dim)
        self.normalize = normalize
        self.backend = "faiss" if backend == "faiss" or (backend == "auto" and faiss is not None) else "numpy"
        self._ids = np.zeros(0, dtype=np.int64)
        self._desc = np.zeros((0, self.dim), dtype=np.float32)
        self._faiss = faiss.IndexFlatIP(self.dim) if self.backend == "faiss" else None

    def __len__(self) -> int:
        return len(self._ids)

    def _prepare(self, desc: np.ndarray) -> np.ndarray:
        desc = np.ascontiguousarray(np.asarray(desc, dtype=np.float32))
        if desc.ndim != 2 or desc.shape[1] != self.dim:
            raise ValueError(f"descriptors must be [N,{self.dim}], got shape {desc.shape}")
        if not np.all(np.isfinite(desc)):
            raise ValueError("descriptors must be finite")
        if self.normalize:
            norms = np.linalg.norm(desc, axis=1, keepdims=True)
            desc = np.ascontiguousarray(desc / np.maximum(norms, 1e-12), dtype=np.float32)
        return desc

    def add(self, ids: np.ndarray, descriptors: np.ndarray) -> None:
        """Append ``ids [N]`` with ``descriptors [N,D]``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        desc = self._prepare(descriptors)
        if len(ids) != len(desc):
            raise ValueError(f"{len(ids)} ids for {len(desc)} descriptors")
        self._ids = np.concatenate([self._ids, ids])
        if self._faiss is not None:
            self._faiss.add(desc)
        else:
            self._desc = np.concatenate([self._desc, desc])

    def search(self, desc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(ids, scores)``, best first: shape [k'] for a [D] query, [M,k'] for [M,D].

        ``k' = min(k, len(self))``; scores are inner products (cosine if normalised).
        """
        if int(k) <= 0:
            raise ValueError(f"k must be positive, got {k}")
        single = np.asarray(desc).ndim == 1
        q = self._prepare(np.atleast_2d(desc))
        kk = min(int(k), len(self))
        if kk == 0:
            ids, scores = np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        elif self._faiss is not None:
            scores, pos = self._faiss.search(q, kk)
            ids = self._ids[pos]
        else:
            sims = q @ self._desc.T
            pos = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            ids, scores = self._ids[pos], np.take_along_axis(sims, pos, axis=1)
        return (ids[0], scores[0]) if single else (ids, scores)


def nearest_by_pose(ids: np.ndarray, T_world_cam: np.ndarray, T_prior: np.ndarray, k: int,
                    rot_weight_m_per_rad: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` keyframes closest to a prior pose: ``(ids [k'], cost [k'])``, lowest cost first.

    ``cost = |C_i - C_prior| + rot_weight_m_per_rad * angle(R_i, R_prior)``, with camera
    centres in metres and the geodesic angle in radians, so one radian of viewing-direction
    difference counts like ``rot_weight_m_per_rad`` metres of displacement.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    T_world_cam = np.asarray(T_world_cam, dtype=float).reshape(-1, 4, 4)
    if len(ids) != len(T_world_cam):
        raise ValueError(f"{len(ids)} ids for {len(T_world_cam)} poses")
    if int(k) <= 0 or rot_weight_m_per_rad < 0:
        raise ValueError(f"need k > 0 and rot_weight_m_per_rad >= 0, got {k}, {rot_weight_m_per_rad}")
    T_prior = np.asarray(T_prior, dtype=float)
    dist = np.linalg.norm(T_world_cam[:, :3, 3] - T_prior[:3, 3], axis=1)
    angle = np.array([np.radians(rotation_error_deg(T[:3, :3], T_prior[:3, :3])) for T in T_world_cam])
    cost = dist + rot_weight_m_per_rad * angle
    order = np.argsort(cost, kind="stable")[: int(k)]
    return ids[order], cost[order]


def thumbnail_descriptor(image_bgr: np.ndarray, size: tuple[int, int] = (16, 12)) -> np.ndarray:
    """A weights-free global descriptor: a tiny zero-mean, unit-norm grey thumbnail [w*h] float32.

    Only good for nearby viewpoints under similar light; a learned descriptor replaces it.
    """
    grey = cv2.cvtColor(np.asarray(image_bgr), cv2.COLOR_BGR2GRAY) if np.ndim(image_bgr) == 3 else image_bgr
    thumb = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    thumb -= thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-6)


def store_global_descriptors(store: KeyframeStore, backend: str, fingerprint: str,
                             describe: Callable[[np.ndarray], np.ndarray], only_missing: bool = True) -> int:
    """Compute ``describe(image_bgr) -> [D]`` for keyframes and store it as blob
    ``(backend, "global", fingerprint)`` = ``pack_arrays({"descriptor": float32 [D]})``.

    With ``only_missing`` keyframes that already hold a descriptor of this fingerprint are skipped.
    Returns the number of descriptors written.
    """
    have = {i for i, _ in store.iter_blobs(backend, GLOBAL_KEY, fingerprint)} if only_missing else set()
    written = 0
    for kf in store.iter_keyframes():
        if kf.kf_id in have:
            continue
        desc = np.asarray(describe(kf.decode_image()), dtype=np.float32).reshape(-1)
        store.put_blob(kf.kf_id, backend, GLOBAL_KEY, pack_arrays({"descriptor": desc}), fingerprint)
        written += 1
    logger.info("stored %d '%s' global descriptors (%s) in %s", written, backend, fingerprint, store.path)
    return written


def load_global_index(store: KeyframeStore, backend: str = THUMBNAIL_BACKEND,
                      fingerprint: str = THUMBNAIL_FINGERPRINT, index_backend: str = "auto") -> GlobalIndex:
    """A :class:`GlobalIndex` over the stored global descriptors of one backend/fingerprint.

    KeyframeDBError if the database holds none (index it first, e.g. ``db build`` stores
    thumbnails); keyframes without a descriptor are left out with a warning.
    """
    ids, descs = [], []
    for kf_id, data in store.iter_blobs(backend, GLOBAL_KEY, fingerprint):
        ids.append(kf_id)
        descs.append(unpack_arrays(data)["descriptor"])
    if not ids:
        raise KeyframeDBError(f"{store.path}: no '{backend}' global descriptors with fingerprint "
                              f"{fingerprint!r}; index the database first")
    missing = len(store) - len(ids)
    if missing:
        logger.warning("%d keyframes of %s have no '%s' global descriptor", missing, store.path, backend)
    index = GlobalIndex(len(descs[0]), backend=index_backend)
    index.add(np.array(ids), np.stack(descs))
    return index
