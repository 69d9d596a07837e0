"""Weighted Umeyama Sim(3)/SE(3) alignment and a RANSAC wrapper around it.

Used by the training-free ``vggt_align`` localizer (predicted keyframe cameras -> known poses)
and by evaluation (aligning trajectories).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .se3 import apply_T, make_sim3

__all__ = ["umeyama", "AlignResult", "umeyama_ransac"]


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> np.ndarray:
    """Least-squares ``S`` (4x4) with ``dst ~ s R src + t`` (Umeyama 1991), optional weights.

    ``src``, ``dst``: [N,3], N >= 3 non-collinear points (N >= 2 suffices only for translation).
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"need matching [N,3] point sets, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, D, Vt = np.linalg.svd(cov)
    E = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        E[2, 2] = -1.0
    R = U @ E @ Vt
    var_s = float(w @ np.sum(xs**2, axis=1))
    s = float(np.trace(np.diag(D) @ E) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return make_sim3(s, R, t)


@dataclass(frozen=True)
class AlignResult:
    S: np.ndarray            # 4x4 similarity (or rigid) transform src -> dst
    inliers: np.ndarray      # [N] bool
    residuals: np.ndarray    # [N] distances after alignment


def umeyama_ransac(src: np.ndarray, dst: np.ndarray, threshold: float,
                   weights: np.ndarray | None = None, with_scale: bool = True,
                   iterations: int = 200, min_samples: int = 3,
                   rng: np.random.Generator | None = None) -> AlignResult:
    """RANSAC over minimal Umeyama fits, then a weighted refit on the largest inlier set.

    With N <= min_samples every subset is the whole set, so a plain fit is returned.
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    n = len(src)
    if n < min_samples:
        raise ValueError(f"need at least {min_samples} correspondences, got {n}")
    rng = rng or np.random.default_rng(0)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    best = np.ones(n, bool)
    best_score = -1.0
    if n > min_samples:
        for _ in range(iterations):
            idx = rng.choice(n, size=min_samples, replace=False)
            try:
                S = umeyama(src[idx], dst[idx], w[idx], with_scale)
            except (ValueError, np.linalg.LinAlgError):
                continue
            res = np.linalg.norm(apply_T(S, src) - dst, axis=1)
            inl = res < threshold
            score = float(w[inl].sum())
            if score > best_score:
                best, best_score = inl, score
        if best.sum() < min_samples:
            best = np.ones(n, bool)
    S = umeyama(src[best], dst[best], w[best], with_scale)
    res = np.linalg.norm(apply_T(S, src) - dst, axis=1)
    return AlignResult(S=S, inliers=res < threshold, residuals=res)
