"""Covisibility tuple sampling: ``[anchor, db_2 … db_K, query]`` sets of K + 1 frames.

Two frames are covisible when they look at the same part of the scene. Without depth we estimate
it from poses alone: points on the anchor's viewing frustum at a nominal depth are projected into
the other camera; the overlap is the fraction landing inside its image in front of it, taken
symmetrically (min of both directions). Pairs must also differ by at most ``max_angle_deg`` in
viewing direction and by at least ``min_baseline`` (near-duplicates teach nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..geometry import Intrinsics, apply_T, invert_T

__all__ = ["SamplerConfig", "CovisibilityIndex"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    """``num_frames`` = K + 1; ``nominal_depth`` None = 2.5 x the median distance between camera
    centres (a scene-scale guess for folders without depth; set it when the scene depth is known)."""

    num_frames: int = 4
    min_overlap: float = 0.3
    max_angle_deg: float = 75.0
    min_baseline: float = 0.0
    nominal_depth: float | None = None
    grid: int = 6

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ConfigError(f"num_frames must be >= 2 (anchor + query), got {self.num_frames}")
        if not 0 <= self.min_overlap < 1:
            raise ConfigError(f"min_overlap must be in [0, 1), got {self.min_overlap}")
        if not 0 < self.max_angle_deg <= 180:
            raise ConfigError(f"max_angle_deg must be in (0, 180], got {self.max_angle_deg}")
        if self.min_baseline < 0 or (self.nominal_depth is not None and self.nominal_depth <= 0):
            raise ConfigError("min_baseline must be >= 0 and nominal_depth > 0")
        if self.grid < 2:
            raise ConfigError(f"grid must be >= 2, got {self.grid}")


def _frustum_points(T_world_cam: np.ndarray, K: Intrinsics, depth: float, grid: int) -> np.ndarray:
    u = np.linspace(0, K.width - 1, grid)
    v = np.linspace(0, K.height - 1, grid)
    uu, vv = np.meshgrid(u, v)
    X_cam = np.stack([(uu - K.cx) / K.fx, (vv - K.cy) / K.fy, np.ones_like(uu)], -1).reshape(-1, 3) * depth
    return apply_T(T_world_cam, X_cam)


def _visible_fraction(X_world: np.ndarray, T_world_cam: np.ndarray, K: Intrinsics) -> float:
    X = apply_T(invert_T(T_world_cam), X_world)
    front = X[:, 2] > 1e-6
    if not front.any():
        return 0.0
    uv = K.project(X[front])
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= K.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= K.height - 0.5)
    return float(inside.sum()) / len(X_world)


class CovisibilityIndex:
    """Pairwise covisibility of the frames of one scene and tuple sampling over it."""

    def __init__(self, T_world_cam: list[np.ndarray], intrinsics: list[Intrinsics], cfg: SamplerConfig) -> None:
        n = len(T_world_cam)
        if n < cfg.num_frames:
            raise DataError(f"scene has {n} frames, fewer than num_frames={cfg.num_frames}")
        self.cfg = cfg
        centres = np.stack([T[:3, 3] for T in T_world_cam])
        axes = np.stack([T[:3, 2] for T in T_world_cam])
        dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        depth = cfg.nominal_depth or 2.5 * float(np.median(dist[np.triu_indices(n, 1)])) or 1.0
        pts = [_frustum_points(T, K, depth, cfg.grid) for T, K in zip(T_world_cam, intrinsics)]
        frac = np.array([[_visible_fraction(pts[i], T_world_cam[j], intrinsics[j]) if i != j else 1.0
                          for j in range(n)] for i in range(n)])
        self.overlap = np.minimum(frac, frac.T)
        angle = np.degrees(np.arccos(np.clip(axes @ axes.T, -1, 1)))
        self.ok = (self.overlap >= cfg.min_overlap) & (angle <= cfg.max_angle_deg) & (dist >= cfg.min_baseline)
        np.fill_diagonal(self.ok, False)
        self.num_frames_total = n
        logger.debug("covisibility over %d frames: %.1f partners per frame (nominal depth %.2f)",
                     n, self.ok.sum(1).mean(), depth)

    def partners(self, i: int) -> np.ndarray:
        return np.flatnonzero(self.ok[i])

    def sample(self, rng: np.random.Generator, anchor: int | None = None) -> list[int]:
        """Frame indices ``[anchor, db…, query]``; falls back to the best-overlapping frames when an
        anchor has too few covisible partners (the tuple is then harder, never invalid)."""
        k_plus_1 = self.cfg.num_frames
        n = self.num_frames_total
        if anchor is None:
            anchor = int(rng.integers(n))
        cand = self.partners(anchor)
        if len(cand) < k_plus_1 - 1:
            order = np.argsort(-self.overlap[anchor])
            cand = np.array([j for j in order if j != anchor][: k_plus_1 - 1])
        query = int(rng.choice(cand))
        rest = np.array([j for j in cand if j != query])
        if len(rest) < k_plus_1 - 2:
            order = [j for j in np.argsort(-self.overlap[anchor]) if j not in (anchor, query)]
            rest = np.array(order)
        # Prefer db frames that also see the query (the paper's retrieved-keyframe situation).
        weights = 1.0 + 4.0 * self.ok[query, rest] if len(rest) else np.ones(0)
        db = rng.choice(rest, size=k_plus_1 - 2, replace=False, p=weights / weights.sum()) if k_plus_1 > 2 else []
        return [anchor, *(int(j) for j in db), query]

