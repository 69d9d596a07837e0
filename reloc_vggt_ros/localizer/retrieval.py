"""Choosing which keyframes to match a query against: one :class:`Retriever`, one prior policy.

A retriever ranks the keyframes by a global descriptor over a :class:`GlobalIndex` (exact
inner-product search; above a size threshold inverted lists over 8-bit codes in faiss, see
:meth:`GlobalIndex.approximate`, the candidates re-ranked by the exact descriptors;
either serialises to bytes, so a map stores it and start-up does not rebuild it) and, given a pose
prior (from ``/initialpose`` or the last fix), takes half of its top-k by distance to the prior
(:class:`PoseIndex`, a k-d tree over the camera centres) and the rest by similarity
(:meth:`Retriever.retrieve`). A query costs the same on a map of 100 keyframes and of 100k.
Two descriptors implement it: VLAD over the query's local features (:class:`VLADRetriever`, the
geometric backend) and a small weights-free grey thumbnail (:class:`ThumbnailRetriever`, the VGGT
backends). Thumbnails live in the database (``db build`` stores them); a retriever reads them and
computes, and stores where the store is writable, only the missing ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..errors import KeyframeDBError
from ..geometry import rotation_error_deg
from ..keyframes.blobs import pack_arrays, unpack_arrays
from ..keyframes.store import KeyframeStore
from ..keyframes.types import Keyframe

__all__ = ["GlobalIndex", "PoseIndex", "nearest_by_pose", "Retriever", "VLADRetriever", "ThumbnailRetriever",
           "thumbnail_descriptor", "store_global_descriptors", "thumbnail_descriptors", "GLOBAL_KEY",
           "THUMBNAIL_BACKEND", "THUMBNAIL_FINGERPRINT"]

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
    faiss may order exact ties differently. :meth:`approximate` builds the large-map variant;
    :meth:`to_bytes` / :meth:`from_bytes` persist either.
    """

    kind = "flat"            # exact; "ivf-sq8": approximate (:meth:`approximate`)

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
        self.kind = "flat"

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

    @classmethod
    def approximate(cls, dim: int, training: np.ndarray, n_lists: int, n_probe: int = 8,
                    normalize: bool = True) -> "GlobalIndex":
        """An empty approximate index for large maps (faiss ``IVF<n_lists>,SQ8``, inner product):
        k-means lists trained on ``training`` [M,D], a query scans the ``n_probe`` lists whose
        centroids it is most similar to, over 8-bit codes (8 kB a keyframe for an 8192-d VLAD
        instead of 32 kB). Distances are computed in the full space, so a map of many look-alike
        (or duplicated) keyframes cannot hide a distinct one from its own lists.
        """
        if faiss is None:
            raise ValueError("the approximate global index needs faiss, which is not importable")
        index = cls(dim, backend="faiss", normalize=normalize)
        train = index._prepare(training)
        lists = max(1, min(int(n_lists), len(train)))
        ivf = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf.train(train)
        ivf.nprobe = max(1, int(n_probe))
        index._faiss, index.kind = ivf, "ivf-sq8"
        return index

    def to_bytes(self) -> bytes:
        """The whole index (ids, vectors or the faiss structure) as one blob (:meth:`from_bytes`)."""
        arrays = {"ids": self._ids, "dim": np.array(self.dim), "normalize": np.array(self.normalize),
                  "kind": np.array(self.kind)}
        if self._faiss is not None and self.kind != "flat":
            arrays.update(_ivf_arrays(self._faiss))
        elif self._faiss is not None:
            arrays["faiss"] = faiss.serialize_index(self._faiss)
        else:
            arrays["descriptors"] = self._desc
        return pack_arrays(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "GlobalIndex":
        """The index :meth:`to_bytes` wrote; ValueError if the blob is not one (or needs faiss)."""
        try:
            arrays = unpack_arrays(data, copy=False)
            dim, kind, ids = int(arrays["dim"]), str(arrays["kind"]), arrays["ids"].astype(np.int64)
            normalize = bool(arrays["normalize"])
        except (KeyError, TypeError, ValueError, KeyframeDBError) as err:
            raise ValueError(f"not a global index blob: {err}") from err
        if "faiss" in arrays or "ivf_empty" in arrays:
            if faiss is None:
                raise ValueError("the stored global index needs faiss, which is not importable")
            index = cls(dim, backend="faiss", normalize=normalize)
            index._faiss = (_ivf_from_arrays(arrays) if "ivf_empty" in arrays
                            else faiss.deserialize_index(np.ascontiguousarray(arrays["faiss"], np.uint8)))
            if index._faiss.ntotal != len(ids) or index._faiss.d != dim:
                raise ValueError(f"global index blob holds {index._faiss.ntotal} vectors of dim {index._faiss.d} "
                                 f"for {len(ids)} ids of dim {dim}")
        else:
            index = cls(dim, backend="numpy", normalize=normalize)
            desc = arrays.get("descriptors")
            if desc is None or desc.shape != (len(ids), dim):
                raise ValueError(f"global index blob: descriptors {None if desc is None else desc.shape} for "
                                 f"{len(ids)} ids of dim {dim}")
            index._desc = np.array(desc, np.float32)          # a copy: the arrays are views of the blob
        index._ids, index.kind = ids, kind
        return index

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    @property
    def nbytes(self) -> int:
        """Memory the index holds (vectors, ids; the faiss structure by its serialised size)."""
        inner = 0 if self._faiss is None else int(faiss.serialize_index(self._faiss).nbytes)
        return int(self._desc.nbytes + self._ids.nbytes) + inner

    def search(self, desc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(ids, scores)``, best first: shape [k'] for a [D] query, [M,k'] for [M,D].

        ``k' = min(k, len(self))``; scores are inner products (cosine if normalised); an
        approximate index may find fewer than ``k'`` (id -1 pads).
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
            ids = np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)
        else:
            sims = (self._desc @ q[0])[None] if single else q @ self._desc.T
            pos = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            ids, scores = self._ids[pos], np.take_along_axis(sims, pos, axis=1)
        return (ids[0], scores[0]) if single else (ids, scores)


def _ivf_arrays(index: Any) -> dict[str, np.ndarray]:
    """An inverted-file index as its trained empty structure (centroids, quantiser: small) and its
    lists' ids and codes as flat arrays, which :func:`_ivf_from_arrays` hands to faiss with one
    copy (``serialize_index`` bytes cost three at load: a 10k-keyframe map's lists are 80 MB)."""
    ivf = faiss.extract_index_ivf(index)
    lists, size = ivf.invlists, ivf.code_size
    sizes = np.array([lists.list_size(n) for n in range(ivf.nlist)], np.int64)
    ids = [faiss.rev_swig_ptr(lists.get_ids(n), int(m)).copy() for n, m in enumerate(sizes) if m]
    codes = [faiss.rev_swig_ptr(lists.get_codes(n), int(m) * size).copy() for n, m in enumerate(sizes) if m]
    empty = faiss.clone_index(index)
    empty.reset()
    return {"ivf_empty": faiss.serialize_index(empty), "ivf_sizes": sizes,
            "ivf_ids": np.concatenate(ids) if ids else np.zeros(0, np.int64),
            "ivf_codes": np.concatenate(codes) if codes else np.zeros(0, np.uint8)}


def _ivf_from_arrays(arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`_ivf_arrays`; ValueError if the arrays do not fit together."""
    index = faiss.deserialize_index(np.ascontiguousarray(arrays["ivf_empty"], np.uint8))
    ivf = faiss.extract_index_ivf(index)
    sizes = np.asarray(arrays["ivf_sizes"], np.int64)
    ids = np.ascontiguousarray(arrays["ivf_ids"], np.int64)
    codes = np.ascontiguousarray(arrays["ivf_codes"], np.uint8)
    if len(sizes) != ivf.nlist or (sizes < 0).any() or len(ids) != sizes.sum() or len(codes) != len(ids) * ivf.code_size:
        raise ValueError(f"global index blob: {len(sizes)} lists of {sizes.sum()} entries for an index of "
                         f"{ivf.nlist} lists, {len(ids)} ids and {len(codes)} code bytes")
    start = 0
    for n, m in enumerate(sizes.tolist()):
        if m:
            ivf.invlists.add_entries(n, m, faiss.swig_ptr(ids[start:]),
                                     faiss.swig_ptr(codes[start * ivf.code_size:]))
            start += m
    ivf.ntotal = index.ntotal = start
    return index


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


class PoseIndex:
    """The keyframes nearest to a prior pose (the cost of :func:`nearest_by_pose`) through a k-d
    tree over the camera centres: a query reads a few dozen keyframes, not every one.

    Exact: the cost is at least the centre distance, so once the k-th best cost among the
    nearest centres is no larger than the farthest of them, no other keyframe can beat it; the
    candidate set grows 4x until that holds.
    """

    def __init__(self, ids: np.ndarray, T_world_cam: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64).reshape(-1)
        self.T_world_cam = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
        if len(self.ids) != len(self.T_world_cam):
            raise ValueError(f"{len(self.ids)} ids for {len(self.T_world_cam)} poses")
        self._tree = cKDTree(self.T_world_cam[:, :3, 3]) if len(self.ids) else None

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, T_prior: np.ndarray, k: int, rot_weight_m_per_rad: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
        """As :func:`nearest_by_pose` over every keyframe: ``(ids [k'], cost [k'])``."""
        n, k = len(self.ids), int(k)
        if self._tree is None or k <= 0:
            return nearest_by_pose(self.ids[:0], self.T_world_cam[:0], T_prior, max(k, 1), rot_weight_m_per_rad)
        T_prior = np.asarray(T_prior, dtype=float)
        m = min(n, max(4 * k, 32))
        while True:
            _, pos = self._tree.query(T_prior[:3, 3], m)
            pos = np.sort(np.atleast_1d(pos))          # id order: nearest_by_pose's tie order
            ids, cost = nearest_by_pose(self.ids[pos], self.T_world_cam[pos], T_prior, k, rot_weight_m_per_rad)
            reach = float(np.max(np.linalg.norm(self.T_world_cam[pos, :3, 3] - T_prior[:3, 3], axis=1)))
            if m == n or cost[-1] <= reach:
                return ids, cost
            m = min(n, 4 * m)


def thumbnail_descriptor(image_bgr: np.ndarray, size: tuple[int, int] = (16, 12)) -> np.ndarray:
    """A weights-free global descriptor: a tiny zero-mean, unit-norm grey thumbnail [w*h] float32.

    Only good for nearby viewpoints under similar light; a learned descriptor replaces it.
    """
    grey = cv2.cvtColor(np.asarray(image_bgr), cv2.COLOR_BGR2GRAY) if np.ndim(image_bgr) == 3 else image_bgr
    thumb = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    thumb -= thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-6)


def _describe(store: KeyframeStore, keyframes: Iterable[Keyframe], backend: str, fingerprint: str,
              describe: Callable[[np.ndarray], np.ndarray], write: bool) -> dict[int, np.ndarray]:
    """``describe(image_bgr) -> [D]`` (float32) of each of ``keyframes`` (consumed one at a time),
    stored as blob ``(backend, "global", fingerprint)`` = ``pack_arrays({"descriptor": ...})``
    when ``write``."""
    out: dict[int, np.ndarray] = {}
    for kf in keyframes:
        out[kf.kf_id] = np.asarray(describe(kf.decode_image()), dtype=np.float32).reshape(-1)
        if write:
            store.put_blob(kf.kf_id, backend, GLOBAL_KEY, pack_arrays({"descriptor": out[kf.kf_id]}), fingerprint)
    return out


def store_global_descriptors(store: KeyframeStore, backend: str, fingerprint: str,
                             describe: Callable[[np.ndarray], np.ndarray], only_missing: bool = True) -> int:
    """Compute ``describe(image_bgr) -> [D]`` for keyframes and store it as blob
    ``(backend, "global", fingerprint)`` = ``pack_arrays({"descriptor": float32 [D]})``.

    With ``only_missing`` keyframes that already hold a descriptor of this fingerprint are skipped.
    Returns the number of descriptors written.
    """
    have = {i for i, _ in store.iter_blobs(backend, GLOBAL_KEY, fingerprint)} if only_missing else set()
    todo = (kf for kf in store.iter_keyframes() if kf.kf_id not in have)
    written = len(_describe(store, todo, backend, fingerprint, describe, write=True))
    logger.info("stored %d '%s' global descriptors (%s) in %s", written, backend, fingerprint, store.path)
    return written


def thumbnail_descriptors(store: KeyframeStore, known: Mapping[int, np.ndarray] | None = None
                          ) -> dict[int, np.ndarray]:
    """The thumbnail descriptor of every keyframe of ``store``: from ``known`` (an earlier call's
    result), else from the database, else computed (and stored unless the store is read-only)."""
    ids = [int(i) for i in store.keyframe_ids()]
    out = {i: known[i] for i in ids if known is not None and i in known}
    want = set(ids) - set(out)
    if want:
        for kf_id, data in store.iter_blobs(THUMBNAIL_BACKEND, GLOBAL_KEY, THUMBNAIL_FINGERPRINT):
            if kf_id in want:
                out[kf_id] = unpack_arrays(data)["descriptor"]
    missing = [i for i in ids if i not in out]
    writable = not getattr(store, "readonly", False)
    out.update(_describe(store, (store.get_keyframe(i) for i in missing), THUMBNAIL_BACKEND,
                         THUMBNAIL_FINGERPRINT, thumbnail_descriptor, writable))
    if missing:
        logger.info("computed %d thumbnail descriptors (%s) for %s", len(missing),
                    "stored" if writable else "read-only database, not stored", store.path)
    return out


class Retriever:
    """Keyframes to match a query against, by global-descriptor similarity and a pose prior.

    ``ids`` [N] keyframe ids, ``T_world_cam`` [N,4,4] their poses, ``descriptors`` [N,D] their
    global descriptors (``normalize``: see :class:`GlobalIndex`), or ``index``: a built (e.g.
    stored) :class:`GlobalIndex` over the same ids. Subclasses say how a query is described
    (:meth:`describe`); the prior policy is this class's and the same for every backend.
    """

    #: candidates an approximate index hands to the exact re-ranking, per keyframe asked for
    RERANK_FACTOR = 8

    def __init__(self, ids: np.ndarray, T_world_cam: np.ndarray, descriptors: np.ndarray | None = None,
                 normalize: bool = True, index: GlobalIndex | None = None,
                 rerank: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.rerank = rerank
        self.ids = np.asarray(ids, np.int64).reshape(-1)
        self.T_world_cam = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
        self.poses = PoseIndex(self.ids, self.T_world_cam)
        self.index = index
        if index is not None and len(index) != len(self.ids):
            raise ValueError(f"global index holds {len(index)} keyframes, the retriever {len(self.ids)}")
        if index is None and len(self.ids):
            if descriptors is None:
                raise ValueError("a retriever needs descriptors or an index")
            self.index = GlobalIndex(descriptors.shape[1], backend="numpy", normalize=normalize)
            self.index.add(self.ids, descriptors)

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self, query: np.ndarray) -> np.ndarray:
        """The query's global descriptor [D]."""
        raise NotImplementedError

    def retrieve(self, query: np.ndarray, k: int, prior_T_world_cam: np.ndarray | None = None) -> list[int]:
        """Up to ``k`` keyframe ids: by similarity, best first; with a prior pose, the
        ``max(1, k // 2)`` keyframes nearest to it (:func:`nearest_by_pose`) first, then the most
        similar of the rest (the geometric backend's policy; the VGGT backends follow it too)."""
        if min(int(k), len(self.ids)) <= 0 or self.index is None:
            return []
        return self.rank(self.describe(query), k, prior_T_world_cam)

    def rank(self, descriptor: np.ndarray, k: int, prior_T_world_cam: np.ndarray | None = None) -> list[int]:
        """:meth:`retrieve` for a query already described (the part that depends on the map's size)."""
        k = min(int(k), len(self.ids))
        if k <= 0 or self.index is None:
            return []
        # the top k suffice: at most k // 2 of them are taken by the prior already
        if self.rerank is not None and self.index.kind != "flat":
            # an approximate index finds the neighbourhood; the exact descriptors order it
            cand, _ = self.index.search(descriptor, max(self.RERANK_FACTOR * k, 32))
            cand = cand[cand >= 0]
            q = np.asarray(descriptor, np.float32).reshape(-1)
            if self.index.normalize:
                q = q / max(float(np.linalg.norm(q)), 1e-12)
            order = cand[np.argsort(-(self.rerank(cand) @ q), kind="stable")][:k] if len(cand) else cand
        else:
            order, _ = self.index.search(descriptor, k)
        ranked = [int(i) for i in order if i >= 0]
        if prior_T_world_cam is None:
            return ranked[:k]
        near, _ = self.poses.nearest(prior_T_world_cam, max(1, k // 2))
        chosen = [int(i) for i in near]
        chosen += [i for i in ranked if i not in chosen][: k - len(chosen)]
        return chosen


class VLADRetriever(Retriever):
    """VLAD of the query's local descriptors against the map's vocabulary (unit-norm already)."""

    def __init__(self, ids: np.ndarray, T_world_cam: np.ndarray, vlads: np.ndarray | None, vocabulary: np.ndarray,
                 index: GlobalIndex | None = None, rerank: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(ids, T_world_cam, vlads, normalize=False, index=index, rerank=rerank)
        self.vocabulary = vocabulary

    def describe(self, query: np.ndarray) -> np.ndarray:
        from .geometric.vocabulary import vlad

        return vlad(query, self.vocabulary)


class ThumbnailRetriever(Retriever):
    """The weights-free thumbnail of the query image (BGR or grey uint8)."""

    def describe(self, query: np.ndarray) -> np.ndarray:
        return thumbnail_descriptor(query)

    @classmethod
    def from_store(cls, store: KeyframeStore, known: Mapping[int, np.ndarray] | None = None
                   ) -> tuple["ThumbnailRetriever", dict[int, np.ndarray]]:
        """Over every keyframe of ``store`` (:func:`thumbnail_descriptors`); also returns the
        descriptors, to pass as ``known`` on the next refresh."""
        desc = thumbnail_descriptors(store, known)
        ids, poses = store.poses()
        stacked = (np.stack([desc[int(i)] for i in ids]) if len(ids)
                   else np.zeros((0, THUMBNAIL_DIM), np.float32))
        return cls(ids, poses, stacked), desc


THUMBNAIL_DIM = 16 * 12
