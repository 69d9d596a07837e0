"""Pose-consistency maths: difference layout, Mahalanobis distance, covariance propagation."""

import numpy as np
import pytest

from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.geometry.gating import (chi2_gate, fuse_poses, mahalanobis2, motion_noise, pose_difference,
                                            propagate_covariance)


def _random_T(rng):
    return make_T(so3_exp(rng.normal(size=3)), rng.normal(size=3))


def test_difference_is_zero_for_equal_poses_and_left_rotation_in_world_axes() -> None:
    rng = np.random.default_rng(0)
    T = _random_T(rng)
    assert np.allclose(pose_difference(T, T), 0)
    w = np.array([0.01, -0.02, 0.005])
    T2 = make_T(so3_exp(w) @ T[:3, :3], T[:3, 3] + [0.1, 0, 0])
    assert np.allclose(pose_difference(T, T2), [0.1, 0, 0, *w])


def test_mahalanobis_follows_the_summed_covariance_and_refuses_bad_ones() -> None:
    T = np.eye(4)
    T2 = make_T(np.eye(3), [0.3, 0, 0])
    P = np.eye(6) * 0.01
    assert mahalanobis2(T, P, T2, P) == pytest.approx(0.3**2 / 0.02)
    assert mahalanobis2(T, np.zeros((6, 6)), T2, np.zeros((6, 6))) == np.inf
    assert mahalanobis2(T, np.full((6, 6), np.nan), T2, P) == np.inf
    assert chi2_gate(0.999) == pytest.approx(22.458)
    with pytest.raises(ValueError, match="one of"):
        chi2_gate(0.5)


def test_propagated_covariance_matches_monte_carlo() -> None:
    """Sample errors of T_a in the documented layout, move each by D, compare with J P J^T + Q."""
    rng = np.random.default_rng(1)
    T_a, D = _random_T(rng), make_T(so3_exp([0.1, 0.2, -0.1]), [1.0, -0.5, 2.0])
    A = rng.normal(size=(6, 6)) * 0.01
    P = A @ A.T + np.eye(6) * 1e-5
    Q = motion_noise(D, 0.5, 0.05, 0.05, 0.01, 0.01)
    samples = rng.multivariate_normal(np.zeros(6), P, 20000)
    q = rng.multivariate_normal(np.zeros(6), Q, 20000)
    T_b = T_a @ D
    diffs = []
    for e, n in zip(samples, q):
        Ta = make_T(so3_exp(e[3:]) @ T_a[:3, :3], T_a[:3, 3] + e[:3])
        Tb = Ta @ D
        Tb = make_T(so3_exp(n[3:]) @ Tb[:3, :3], Tb[:3, 3] + n[:3])
        diffs.append(pose_difference(T_b, Tb))
    emp = np.cov(np.array(diffs).T)
    pred = propagate_covariance(T_a, P, D, Q)
    assert np.allclose(emp, pred, atol=0.05 * np.abs(pred).max())
    wrong = P + Q                                  # without the lever arm of the rotation error
    assert not np.allclose(emp, wrong, atol=0.05 * np.abs(pred).max())


def test_fuse_poses_weights_by_information() -> None:
    """Centres 0 and 2 m with variances 1 and 3: the fused centre 0.5 m, variance 0.75; equal
    rotation variances: half the rotation between them."""
    P_a, P_b = np.eye(6), 3.0 * np.eye(6)
    P_b[3:, 3:] = np.eye(3)
    T_b = make_T(so3_exp(np.array([0.0, 0.0, 0.4])), np.array([2.0, 0.0, 0.0]))
    T, P = fuse_poses(np.eye(4), P_a, T_b, P_b)
    assert np.allclose(T[:3, 3], [0.5, 0.0, 0.0]) and np.allclose(np.diag(P)[:3], 0.75)
    assert np.allclose(T[:3, :3], so3_exp(np.array([0.0, 0.0, 0.2]))) and np.allclose(np.diag(P)[3:], 0.5)
