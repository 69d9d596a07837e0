"""Umeyama Sim(3)/SE(3) alignment: exact recovery, weights, RANSAC with outliers, real trajectories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import (apply_T, make_sim3, quat_to_R, rotation_error_deg, umeyama,
                                     umeyama_ransac)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def random_sim3(rng: np.random.Generator, with_scale: bool = True) -> np.ndarray:
    q = rng.normal(size=4)
    s = rng.uniform(0.2, 5.0) if with_scale else 1.0
    return make_sim3(s, quat_to_R(q / np.linalg.norm(q)), rng.normal(scale=3.0, size=3))


def sim3_parts(S: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    return s, S[:3, :3] / s, S[:3, 3]


@pytest.mark.parametrize("seed", range(10))
def test_umeyama_recovers_known_sim3_and_se3(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(20, 3))
    S = random_sim3(rng)
    np.testing.assert_allclose(umeyama(src, apply_T(S, src)), S, atol=1e-9)
    T = random_sim3(rng, with_scale=False)
    est = umeyama(src, apply_T(T, src), with_scale=False)
    np.testing.assert_allclose(est, T, atol=1e-9)
    # minimal case: three non-collinear points
    np.testing.assert_allclose(umeyama(src[:3], apply_T(S, src[:3])), S, atol=1e-8)


def test_umeyama_with_noise_and_no_reflection() -> None:
    rng = np.random.default_rng(7)
    src = rng.normal(size=(200, 3))
    S = random_sim3(rng)
    dst = apply_T(S, src) + rng.normal(scale=0.01, size=src.shape)
    s, R, t = sim3_parts(umeyama(src, dst))
    s0, R0, t0 = sim3_parts(S)
    assert s == pytest.approx(s0, rel=1e-2) and rotation_error_deg(R, R0) < 0.5
    # a mirrored target must still give a proper rotation (det +1), not a reflection
    mirrored = src * np.array([1.0, 1.0, -1.0])
    assert np.linalg.det(umeyama(src, mirrored)[:3, :3]) > 0


def test_weighted_fit() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    S = random_sim3(rng)
    dst = apply_T(S, src)
    dst[:8] += rng.normal(scale=5.0, size=(8, 3))            # gross outliers ...
    w = np.ones(30)
    w[:8] = 0.0                                             # ... with zero weight are ignored
    np.testing.assert_allclose(umeyama(src, dst, weights=w), S, atol=1e-9)
    # an integer weight is the same as repeating the point
    dst_noisy = apply_T(S, src) + rng.normal(scale=0.1, size=src.shape)
    w2 = rng.integers(1, 4, size=30).astype(float)
    rep = np.repeat(np.arange(30), w2.astype(int))
    np.testing.assert_allclose(umeyama(src, dst_noisy, weights=w2), umeyama(src[rep], dst_noisy[rep]),
                               atol=1e-10)
    with pytest.raises(ValueError, match="non-negative"):
        umeyama(src, dst, weights=-w)
    with pytest.raises(ValueError, match="matching"):
        umeyama(src, dst[:5])


@pytest.mark.parametrize("seed", range(5))
def test_ransac_recovers_sim3_with_outliers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_out = 100, 35
    src = rng.uniform(-5, 5, size=(n, 3))
    S = random_sim3(rng)
    dst = apply_T(S, src) + rng.normal(scale=0.005, size=src.shape)
    out = rng.choice(n, n_out, replace=False)
    dst[out] += rng.uniform(2.0, 20.0, size=(n_out, 3)) * rng.choice([-1, 1], size=(n_out, 3))
    plain = umeyama(src, dst)
    res = umeyama_ransac(src, dst, threshold=0.05, rng=np.random.default_rng(seed))
    truth = np.ones(n, bool)
    truth[out] = False
    assert np.array_equal(res.inliers, truth)
    s, R, t = sim3_parts(res.S)
    s0, R0, t0 = sim3_parts(S)
    assert s == pytest.approx(s0, rel=1e-3) and rotation_error_deg(R, R0) < 0.2  # noise-limited
    assert np.linalg.norm(t - t0) < 0.05
    assert np.abs(plain - S).max() > 10 * np.abs(res.S - S).max()    # outliers do hurt a plain fit
    assert res.residuals.shape == (n,) and np.all(res.residuals[res.inliers] < 0.05)


def test_ransac_small_inputs() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(3, 3))
    S = random_sim3(rng)
    res = umeyama_ransac(src, apply_T(S, src), threshold=1e-6)
    np.testing.assert_allclose(res.S, S, atol=1e-8)
    assert res.inliers.all()
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_ransac(src[:2], src[:2], threshold=1.0)


def test_align_real_trajectory_under_known_sim3() -> None:
    """Evaluation use: a scene's camera centres in another frame and scale are aligned back."""
    recs = read_posed_folder(DATA / "middlebury-temple-ring", check_images=False)
    C = np.stack([r.T_world_cam[:3, 3] for r in recs])
    S = make_sim3(3.7, quat_to_R([0.9, 0.1, -0.3, 0.2]), [10.0, -4.0, 1.5])
    moved = apply_T(S, C) + np.random.default_rng(1).normal(scale=1e-4, size=C.shape)
    np.testing.assert_allclose(apply_T(umeyama(C, moved), C), apply_T(S, C), atol=1e-3)
