"""The covariance of a pose composed with fixed transforms (camera -> base_link, odom -> map),
checked against Monte-Carlo sampling of the perturbation the covariance is defined over."""

from __future__ import annotations

import numpy as np
import pytest

from reloc_vggt_ros.geometry import (camera_mount, invert_T, make_T, perturb_pose, pose_delta, so3_exp,
                                     transform_pose_covariance)

# REP-105 base_link -> camera optical frame mounted 0.3 m forward, 1.2 m up and pitched 20 deg
# down: the non-trivial extrinsic
T_BASE_CAM = camera_mount([0.3, 0.0, 1.2], pitch_deg=20.0)


def test_camera_mount_looks_forward_and_down():
    R = T_BASE_CAM[:3, :3]
    np.testing.assert_allclose(R[:, 2], [np.cos(np.radians(20)), 0.0, -np.sin(np.radians(20))], atol=1e-12)  # z ahead, down
    np.testing.assert_allclose(R[:, 0], [0.0, -1.0, 0.0], atol=1e-12)                                     # x right
    np.testing.assert_allclose(T_BASE_CAM[:3, 3], [0.3, 0.0, 1.2])


def _camera_covariance() -> np.ndarray:
    """A correlated camera-pose covariance (cm, about a degree: a weak fix)."""
    A = np.random.default_rng(3).normal(size=(6, 6)) * np.array([0.02, 0.02, 0.03, 0.01, 0.01, 0.008])[:, None]
    return A @ A.T + np.diag([1e-4] * 3 + [1e-6] * 3)


def _sampled(cov: np.ndarray, T: np.ndarray, compose, n: int = 10_000) -> np.ndarray:
    """Covariance of pose_delta(compose(T), compose(perturb(T, xi))) with xi ~ N(0, cov)."""
    xis = np.random.default_rng(7).multivariate_normal(np.zeros(6), cov, size=n)
    ref = compose(T)
    d = np.array([pose_delta(ref, compose(perturb_pose(T, xi))) for xi in xis])
    return np.cov(d.T)


def test_perturb_and_delta_are_inverse():
    T = make_T(so3_exp(np.array([0.3, -1.0, 2.0])), np.array([4.0, -2.0, 1.0]))
    xi = np.array([0.1, -0.2, 0.3, 0.05, -0.4, 0.2])
    np.testing.assert_allclose(pose_delta(T, perturb_pose(T, xi)), xi, atol=1e-12)


@pytest.mark.parametrize("case", ["camera_to_base", "odom_to_map", "both"])
def test_transformed_covariance_matches_sampling(case):
    T_map_cam = make_T(so3_exp(np.array([0.2, 0.9, -0.4])), np.array([12.0, -3.0, 1.5]))
    T_cam_base = invert_T(T_BASE_CAM)
    T_map_odom = make_T(so3_exp(np.array([0.0, 0.0, 1.1])), np.array([5.0, 2.0, 0.0]))
    left = T_map_odom if case in ("odom_to_map", "both") else None
    right = T_cam_base if case in ("camera_to_base", "both") else None
    C = _camera_covariance()

    def compose(T):
        return (left if left is not None else np.eye(4)) @ T @ (right if right is not None else np.eye(4))

    predicted = transform_pose_covariance(C, T_map_cam, T_a_b=left, T_c_d=right)
    sampled = _sampled(C, T_map_cam, compose)
    scale = np.sqrt(np.outer(np.diag(sampled), np.diag(sampled)))
    assert np.abs(predicted - sampled).max() / scale.max() < 0.03, (predicted, sampled)
    np.testing.assert_allclose(np.diag(predicted), np.diag(sampled), rtol=0.05)
    if case == "camera_to_base":
        # the lever arm matters: 1.25 m of it turns rotation variance into position variance,
        # so the camera's covariance copied unchanged is far from what sampling gives
        assert np.diag(predicted)[:3].sum() > 1.1 * np.diag(C)[:3].sum()
        assert np.abs(C - sampled).max() / scale.max() > 0.1
