"""Torch rotation maths agrees with the numpy formulas of geometry.se3 on every real ground-truth
camera of ../shared/data, in float64 (to 1e-12) and float32, batched, including the edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import quat_to_R, R_to_quat, rotation_error_deg
from reloc_vggt_ros.geometry.torch_rotations import (matrix_to_quat, quat_angle, quat_conjugate, quat_multiply,
                                                     quat_to_matrix, quat_to_rot6d, wxyz_to_xyzw, xyzw_to_wxyz)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENES = sorted(p.name for p in DATA.iterdir() if (p / "poses.txt").is_file())


@pytest.fixture(scope="module")
def rotations() -> np.ndarray:
    """Camera-to-world rotations of every posed image of every scene [N, 3, 3]."""
    Rs = [rec.T_world_cam[:3, :3] for scene in SCENES for rec in read_posed_folder(DATA / scene)]
    assert len(Rs) > 30
    return np.stack(Rs)


def test_matrix_quaternion_round_trip_matches_numpy(rotations: np.ndarray) -> None:
    R = torch.from_numpy(rotations)
    q = matrix_to_quat(R)
    np.testing.assert_allclose(q.numpy(), np.stack([R_to_quat(r) for r in rotations]), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q).numpy(), rotations, atol=1e-12)
    # any non-zero scale and either sign describe the same rotation
    np.testing.assert_allclose(quat_to_matrix(-3.0 * q).numpy(), rotations, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q.float()).numpy(), rotations, atol=1e-5)
    assert torch.all(q[:, 0] >= 0)


def test_multiply_conjugate_and_angle_match_matrices(rotations: np.ndarray) -> None:
    Ra, Rb = rotations, np.roll(rotations, 1, axis=0)
    qa, qb = matrix_to_quat(torch.from_numpy(Ra)), matrix_to_quat(torch.from_numpy(Rb))
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(qa, qb)).numpy(), Ra @ Rb, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quat_conjugate(qa)).numpy(), Ra.transpose(0, 2, 1), atol=1e-12)
    ang = np.degrees(quat_angle(qa, -2.0 * qb).numpy())
    np.testing.assert_allclose(ang, [rotation_error_deg(a, b) for a, b in zip(Ra, Rb)], atol=1e-5)


def test_rot6d_is_the_first_two_columns_and_scale_free(rotations: np.ndarray) -> None:
    q = matrix_to_quat(torch.from_numpy(rotations))
    six = quat_to_rot6d(-0.3 * q).numpy()
    np.testing.assert_allclose(six, np.concatenate([rotations[:, :, 0], rotations[:, :, 1]], axis=1), atol=1e-12)
    assert torch.all(torch.isfinite(quat_to_rot6d(torch.zeros(1, 4))))      # floored norm: no NaN
    assert not torch.any(torch.isfinite(quat_to_matrix(torch.zeros(1, 4))))  # unfloored: degenerate shows


def test_scalar_order_conversions_are_exact_inverses() -> None:
    q = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xyzw_to_wxyz(wxyz_to_xyzw(q)), q)
    np.testing.assert_array_equal(xyzw_to_wxyz(q)[0, 0].numpy(), q[0, 0].numpy()[[3, 0, 1, 2]])
    np.testing.assert_allclose(quat_to_matrix(q.double())[2, 1].numpy(), quat_to_R(q[2, 1].double().numpy()),
                               atol=1e-12)
