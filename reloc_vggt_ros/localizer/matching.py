"""Descriptor matching (ratio test + mutual check) and known-pose epipolar filtering.

Descriptors are unit-norm, so one matrix product (BLAS) gives every squared distance
``2 - 2 cos``; both directions of the mutual check come from that one matrix.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

from ..geometry import Intrinsics, invert_T

__all__ = ["match_descriptors", "pairs_within", "match_guided", "fundamental_from_poses", "sampson_error_px"]

# Small per-block products: multi-threaded OpenBLAS only spins (measured 6x more CPU, slower
# wall time on a busy 2-core machine), so matching runs BLAS on the calling thread (two BLAS
# threads cut the query's match time ~20% but their workers keep spinning afterwards and the
# next query's SIFT got ~25% slower: no net gain per query, more CPU).
_BLAS = ThreadpoolController()


def match_descriptors(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.8,
                      mutual: bool = True, block_rows: int = 256) -> np.ndarray:
    """Index pairs [M,2] ``(i_a, i_b)`` passing Lowe's ratio test (on distances) and mutual NN.

    ``desc_a`` [Na,D], ``desc_b`` [Nb,D] float32 unit-norm (BLAS reads ``desc_b.T`` as a view: a
    contiguous copy measured no faster). The similarity matrix is processed in row blocks that
    stay in cache (4x faster than one big matrix for 4k x 2k descriptors). The mutual check needs
    the best row of a column only for columns some ratio-passing row chose, so it is one small
    product over those columns instead of a column argmax over the whole matrix (which cost as
    much as the main product).
    """
    n_a, n_b = len(desc_a), len(desc_b)
    if n_a == 0 or n_b < 2:
        return np.zeros((0, 2), np.int64)
    best = np.empty(n_a, np.int64)
    s_best = np.empty(n_a, np.float32)
    s_second = np.empty(n_a, np.float32)
    b_t = desc_b.T
    with _BLAS.limit(limits=1, user_api="blas"):
        _match_blocks(desc_a, b_t, block_rows, best, s_best, s_second)
        d_best = np.sqrt(np.maximum(2.0 - 2.0 * s_best, 0.0))
        d_second = np.sqrt(np.maximum(2.0 - 2.0 * s_second, 0.0))
        rows = np.flatnonzero(d_best < ratio * d_second)
        if mutual and len(rows):
            cols, which = np.unique(best[rows], return_inverse=True)
            col_arg = (desc_a @ b_t[:, cols]).argmax(axis=0)      # best row of each chosen column
            rows = rows[col_arg[which.ravel()] == rows]
    return np.stack([rows, best[rows]], axis=1)


def _match_blocks(desc_a: np.ndarray, b_t: np.ndarray, block_rows: int, best: np.ndarray,
                  s_best: np.ndarray, s_second: np.ndarray) -> None:
    """Fill row-best and row-second similarities block by block (in place)."""
    for start in range(0, len(desc_a), block_rows):
        sim = desc_a[start:start + block_rows] @ b_t
        rows = np.arange(len(sim))
        arg = sim.argmax(axis=1)
        best[start:start + len(sim)] = arg
        s_best[start:start + len(sim)] = sim[rows, arg]
        sim[rows, arg] = -np.inf
        s_second[start:start + len(sim)] = sim.max(axis=1)


def pairs_within(xy_a: np.ndarray, xy_b: np.ndarray, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i_a, i_b)`` of points [Na,2], [Nb,2] closer than ``radius_px`` (grid buckets).

    Cells of ``radius_px``: every pair closer than that lies in a 3x3 block of cells, so each
    point of ``a`` looks up 9 contiguous runs of the cell-sorted ``b``.
    """
    if len(xy_a) == 0 or len(xy_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    origin = np.minimum(xy_a.min(axis=0), xy_b.min(axis=0)) - radius_px
    cell_a = np.floor((xy_a - origin) / radius_px).astype(np.int64)
    cell_b = np.floor((xy_b - origin) / radius_px).astype(np.int64)
    rows = int(max(cell_a[:, 1].max(), cell_b[:, 1].max())) + 2
    key_b = cell_b[:, 0] * rows + cell_b[:, 1]
    order = np.argsort(key_b, kind="stable")
    sorted_keys = key_b[order]
    offsets = np.array([dx * rows + dy for dx in (-1, 0, 1) for dy in (-1, 0, 1)], np.int64)
    keys = (cell_a[:, 0] * rows + cell_a[:, 1])[:, None] + offsets[None, :]        # [Na,9]
    lo = np.searchsorted(sorted_keys, keys, "left").ravel()
    counts = np.searchsorted(sorted_keys, keys, "right").ravel() - lo
    total = int(counts.sum())
    ia = np.repeat(np.repeat(np.arange(len(xy_a)), 9), counts)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    ib = order[starts + np.arange(total)]
    near = np.sum((xy_a[ia] - xy_b[ib]) ** 2, axis=1) < radius_px**2
    return ia[near], ib[near]


def match_guided(ia: np.ndarray, ib: np.ndarray, sim: np.ndarray, xy_b: np.ndarray, ratio: float,
                 distinct_px: float = 1.5) -> np.ndarray:
    """One match per ``a`` among its candidate pairs (e.g. map points projected near a keypoint).

    ``ia``, ``ib``: candidate pairs, ``sim``: their descriptor similarity (cosine), ``xy_b``: the
    positions of the ``b`` points. Each ``a`` takes its most similar candidate if that passes the
    ratio test against the best candidate projecting more than ``distinct_px`` away (the same
    physical point seen from several keyframes is not a rival), and each ``b`` keeps only its
    most similar ``a`` (mutual). Returns index pairs [M,2].
    """
    if len(ia) == 0:
        return np.zeros((0, 2), np.int64)
    order = np.lexsort((-sim, ia))                       # by a, most similar first
    ia, ib, sim = ia[order], ib[order], sim[order]
    first = np.ones(len(ia), bool)
    first[1:] = ia[1:] != ia[:-1]
    group = np.cumsum(first) - 1
    best_pos = np.flatnonzero(first)
    far = np.linalg.norm(xy_b[ib] - xy_b[ib[best_pos[group]]], axis=1) > distinct_px
    rival = np.full(len(best_pos), -1.0)
    np.maximum.at(rival, group[far], sim[far])
    d_best = np.sqrt(np.maximum(2.0 - 2.0 * sim[best_pos], 0.0))
    d_rival = np.sqrt(np.maximum(2.0 - 2.0 * rival, 0.0))     # rival -1 (none): distance 2
    keep = best_pos[d_best < ratio * d_rival]
    a, b, s = ia[keep], ib[keep], sim[keep]
    order = np.lexsort((-s, b))                          # mutual: each b to its most similar a
    first_b = np.ones(len(order), bool)
    first_b[1:] = b[order][1:] != b[order][:-1]
    sel = np.sort(order[first_b])
    return np.stack([a[sel], b[sel]], axis=1)


def fundamental_from_poses(T_world_a: np.ndarray, intr_a: Intrinsics, T_world_b: np.ndarray,
                           intr_b: Intrinsics) -> np.ndarray:
    """F with ``x_b^T F x_a = 0`` for pixels of camera a and b (OpenCV convention, both)."""
    T_b_a = invert_T(T_world_b) @ T_world_a
    R, t = T_b_a[:3, :3], T_b_a[:3, 3]
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(intr_b.K).T @ (tx @ R) @ np.linalg.inv(intr_a.K)


def sampson_error_px(F: np.ndarray, x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """Sampson distance [N] in pixels of matches ``x_a`` [N,2] -> ``x_b`` [N,2] under F."""
    ha = np.hstack([x_a, np.ones((len(x_a), 1))])
    hb = np.hstack([x_b, np.ones((len(x_b), 1))])
    Fa = ha @ F.T          # epipolar lines in b
    Ftb = hb @ F           # epipolar lines in a
    num = np.einsum("ij,ij->i", hb, Fa)
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-30))
