"""Pose-error metrics on known perturbations and on real ground-truth poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import (make_T, pose_error, quat_to_R, recall_at, rotation_error_deg, so3_exp,
                                     translation_error)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENES = sorted(p.name for p in DATA.iterdir() if (p / "poses.txt").is_file())


@pytest.mark.parametrize("angle", [1e-9, 1e-7, 1e-3, 0.5, 2.0, np.pi - 1e-6, np.pi])
def test_rotation_error_of_known_angles(angle: float) -> None:
    rng = np.random.default_rng(0)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    R0 = so3_exp(rng.normal(size=3))
    R1 = R0 @ so3_exp(axis * angle)
    assert rotation_error_deg(R0, R1) == pytest.approx(np.degrees(angle), rel=1e-6)
    assert rotation_error_deg(R1, R0) == pytest.approx(np.degrees(angle), rel=1e-6)   # symmetric
    assert rotation_error_deg(R0, R0) == 0.0


def test_pose_error_of_known_perturbation() -> None:
    T_gt = make_T(so3_exp([0.2, -0.1, 0.4]), [1.0, 2.0, 3.0])
    # 5 deg about the camera's own y axis plus a 0.3 m step along its optical axis
    T_est = T_gt @ make_T(so3_exp([0.0, np.radians(5.0), 0.0]), [0.0, 0.0, 0.3])
    t_err, r_err = pose_error(T_est, T_gt)
    assert t_err == pytest.approx(0.3) and r_err == pytest.approx(5.0)
    assert translation_error(T_est, T_gt) == pytest.approx(0.3)
    assert pose_error(T_gt, T_gt) == (0.0, 0.0)


def test_recall_at() -> None:
    t = np.array([0.01, 0.2, 0.04, np.inf, 0.05])
    r = np.array([0.5, 0.5, 3.0, np.inf, 2.0])
    assert recall_at(t, r, 0.05, 2.0) == pytest.approx(2 / 5)     # bounds are inclusive
    assert recall_at(t, r, 1.0, 5.0) == pytest.approx(4 / 5)       # unlocalized never counts
    assert recall_at(np.array([]), np.array([]), 1.0, 1.0) == 0.0


@pytest.mark.parametrize("scene", SCENES)
def test_pose_error_between_real_cameras(scene: str) -> None:
    """Between GT cameras: centre distance, and the angle 2 acos|<q_a, q_b>| of the file's quaternions."""
    recs = read_posed_folder(DATA / scene, check_images=False)
    quats = {}
    for line in (DATA / scene / "poses.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f = line.split()
            quats[f[0]] = np.array(f[5:9], float)
    for a, b in zip(recs, recs[1:]):
        t_err, r_err = pose_error(a.T_world_cam, b.T_world_cam)
        assert t_err == pytest.approx(np.linalg.norm(a.T_world_cam[:3, 3] - b.T_world_cam[:3, 3]))
        qa, qb = quats[a.name] / np.linalg.norm(quats[a.name]), quats[b.name] / np.linalg.norm(quats[b.name])
        angle = np.degrees(2 * np.arccos(min(1.0, abs(float(qa @ qb)))))
        assert r_err == pytest.approx(angle, abs=1e-6)
        assert rotation_error_deg(quat_to_R(qa), quat_to_R(qb)) == pytest.approx(angle, abs=1e-6)
