"""Descriptor matching (ratio test + mutual check) and known-pose epipolar filtering.

Descriptors are unit-norm, so one matrix product (BLAS) gives every squared distance
``2 - 2 cos``; both directions of the mutual check come from that one matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ...geometry import Intrinsics, invert_T

if TYPE_CHECKING:
    from .indexing import KeyframeEntry

__all__ = ["match_descriptors", "single_thread_blas", "fundamental_from_poses", "sampson_error_px",
           "Matches2D3D", "match_2d3d"]

# Small per-block products: multi-threaded OpenBLAS only spins (measured 6x more CPU, slower
# wall time on a busy 2-core machine), so matching runs BLAS on the calling thread (two BLAS
# threads cut the query's match time ~20% but their workers keep spinning afterwards and the
# next query's SIFT got ~25% slower: no net gain per query, more CPU).
_BLAS = ThreadpoolController()


def single_thread_blas() -> Any:
    """Context manager: BLAS on the calling thread only (restores the previous setting on exit)."""
    return _BLAS.limit(limits=1, user_api="blas")


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
    with single_thread_blas():
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


@dataclass(frozen=True)
class Matches2D3D:
    """2D-3D correspondences of a query, one row per (query keypoint, keyframe point) pair."""

    q_idx: np.ndarray        # [M] query keypoint index
    x3d: np.ndarray          # [M,3] point in the map's local frame
    kf_id: np.ndarray        # [M] keyframe the point was matched through
    kf_kp: np.ndarray        # [M] that keyframe's keypoint index

    def __len__(self) -> int:
        return len(self.q_idx)

    @property
    def num_query_keypoints(self) -> int:
        """Distinct query keypoints matched (what a pose can have as inliers at most)."""
        return int(len(np.unique(self.q_idx)))

    def subset(self, mask: np.ndarray) -> "Matches2D3D":
        return Matches2D3D(self.q_idx[mask], self.x3d[mask], self.kf_id[mask], self.kf_kp[mask])


# A query has ~1k descriptors: one product per keyframe measured faster than cache-sized row
# blocks there (fewer numpy calls); the map side keeps match_descriptors' default blocks.
QUERY_BLOCK_ROWS = 4096


def match_2d3d(entries: Mapping[int, "KeyframeEntry"], descriptors: np.ndarray, kf_ids: list[int],
               ratio: float, pool: Executor | None = None) -> Matches2D3D:
    """The query descriptors matched (ratio + mutual) against each keyframe's points with a 3D
    point, keyframe by keyframe in ``kf_ids`` order (on ``pool``'s threads if given)."""
    def one(kf_id: int) -> np.ndarray:
        return match_descriptors(descriptors, entries[kf_id].point_descriptors, ratio,
                                 block_rows=QUERY_BLOCK_ROWS)

    pairs = [one(k) for k in kf_ids] if pool is None else list(pool.map(one, kf_ids))
    q_idx, x3d, kf_of, kf_kp = [], [], [], []
    for kf_id, m in zip(kf_ids, pairs):
        e = entries[kf_id]
        q_idx.append(m[:, 0])
        kf_kp.append(e.point_index[m[:, 1]])
        x3d.append(e.points_local[kf_kp[-1]])
        kf_of.append(np.full(len(m), kf_id))
    return Matches2D3D(np.concatenate(q_idx), np.concatenate(x3d), np.concatenate(kf_of), np.concatenate(kf_kp))
