"""SE(3)/Sim(3)/quaternion maths: seeded random round trips, known transforms, and the real
ground-truth poses of every scene in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import transforms3d.axangles as tax

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.geometry import (absolute_from_relative, apply_T, camera_centre, compose, invert_sim3,
                                     invert_T, is_valid_T, make_sim3, make_T, project_to_SO3, quat_to_R,
                                     quat_wxyz_to_xyzw, quat_xyzw_to_wxyz, R_to_quat, relative_pose,
                                     se3_exp, so3_exp, so3_log, T_from_quat_t, T_to_quat_t)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENES = sorted(p.name for p in DATA.iterdir() if (p / "poses.txt").is_file())
RNG_SEEDS = range(20)


def random_R(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return quat_to_R(q / np.linalg.norm(q))


def random_T(rng: np.random.Generator) -> np.ndarray:
    return make_T(random_R(rng), rng.normal(scale=5.0, size=3))


def test_scenes_present() -> None:
    assert len(SCENES) >= 4, f"expected the shared scenes in {DATA}"


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_invert_compose_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    A, B, C = random_T(rng), random_T(rng), random_T(rng)
    assert is_valid_T(A) and is_valid_T(compose(A, B, C))
    np.testing.assert_allclose(invert_T(A), np.linalg.inv(A), atol=1e-12)
    np.testing.assert_allclose(compose(A, invert_T(A)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(compose(A, B, C), A @ B @ C, atol=1e-12)
    np.testing.assert_allclose(invert_T(compose(A, B)), compose(invert_T(B), invert_T(A)), atol=1e-12)
    np.testing.assert_allclose(compose(), np.eye(4))
    # relative/absolute poses invert each other: T_world_q = T_world_a T_a_q
    T_a_q = relative_pose(A, B)
    np.testing.assert_allclose(absolute_from_relative(A, T_a_q), B, atol=1e-12)
    X = rng.normal(size=(10, 3))
    np.testing.assert_allclose(apply_T(A, apply_T(invert_T(A), X)), X, atol=1e-12)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_quaternion_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    q_pos = q if q[0] >= 0 else -q
    R = quat_to_R(q)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R_to_quat(R), q_pos, atol=1e-12)    # w >= 0 representative
    np.testing.assert_allclose(quat_to_R(-q), R, atol=1e-12)       # q and -q are one rotation
    np.testing.assert_allclose(quat_to_R(3.0 * q), R, atol=1e-12)  # normalised on the way in
    np.testing.assert_allclose(quat_xyzw_to_wxyz(quat_wxyz_to_xyzw(q)), q)
    T = make_T(R, rng.normal(size=3))
    q2, t2 = T_to_quat_t(T)
    np.testing.assert_allclose(T_from_quat_t(q2, t2), T, atol=1e-12)


def test_known_rotations() -> None:
    th = 0.3
    Rz = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    np.testing.assert_allclose(quat_to_R([np.cos(th / 2), 0, 0, np.sin(th / 2)]), Rz, atol=1e-15)
    np.testing.assert_allclose(so3_exp([0, 0, th]), Rz, atol=1e-15)
    # 90 deg about x takes y to z (right-handed, active rotation)
    np.testing.assert_allclose(so3_exp([np.pi / 2, 0, 0]) @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(quat_wxyz_to_xyzw([1, 2, 3, 4]), [2, 3, 4, 1])
    np.testing.assert_allclose(quat_xyzw_to_wxyz([2, 3, 4, 1]), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="no direction"):
        quat_to_R([0, 0, 0, 0])
    # a camera 2 m along +x looking down +z: T_world_cam maps its origin to its centre
    T_world_cam = make_T(np.eye(3), [2.0, 0, 0])
    np.testing.assert_allclose(camera_centre(T_world_cam), [2, 0, 0])
    np.testing.assert_allclose(apply_T(invert_T(T_world_cam), [[2.0, 0, 5.0]]), [[0, 0, 5.0]])


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_so3_exp_log_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    for angle in (1e-9, 1e-6, 1e-3, rng.uniform(0, np.pi), np.pi - 1e-6):
        w = axis * angle
        R = so3_exp(w)
        np.testing.assert_allclose(R, tax.axangle2mat(axis, angle), atol=1e-14)
        np.testing.assert_allclose(so3_log(R), w, rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(so3_log(np.eye(3)), np.zeros(3))
    assert np.linalg.norm(so3_log(so3_exp(axis * np.pi))) == pytest.approx(np.pi)


def test_se3_exp_is_decoupled() -> None:
    rho, phi = np.array([0.1, -0.2, 0.3]), np.array([0.01, 0.02, -0.03])
    T = se3_exp(np.concatenate([rho, phi]))
    np.testing.assert_allclose(T[:3, 3], rho)
    np.testing.assert_allclose(T[:3, :3], so3_exp(phi))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_sim3_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s, R, t = rng.uniform(0.1, 10.0), random_R(rng), rng.normal(size=3)
    S = make_sim3(s, R, t)
    X = rng.normal(size=(5, 3))
    np.testing.assert_allclose(apply_T(S, X), s * X @ R.T + t, atol=1e-12)
    np.testing.assert_allclose(invert_sim3(S) @ S, np.eye(4), atol=1e-10)


def test_project_to_SO3_and_validity() -> None:
    rng = np.random.default_rng(0)
    R = random_R(rng)
    np.testing.assert_allclose(project_to_SO3(R), R, atol=1e-12)
    R_noisy = project_to_SO3(R + 1e-3 * rng.normal(size=(3, 3)))
    assert is_valid_T(make_T(R_noisy, np.zeros(3)), tol=1e-10)
    assert np.linalg.det(project_to_SO3(-np.eye(3))) == pytest.approx(1.0)
    T = random_T(rng)
    assert is_valid_T(T)
    bad = T.copy()
    bad[1, 1] = np.nan
    assert not is_valid_T(bad)
    assert not is_valid_T(make_sim3(1.1, R, np.zeros(3)))
    assert not is_valid_T(make_T(-R, np.zeros(3)))    # reflection, det -1
    bad = T.copy()
    bad[3, 0] = 0.5
    assert not is_valid_T(bad)
    assert not is_valid_T(np.eye(3))


def read_raw_poses(scene: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (q_wxyz, t) exactly as written in poses.txt (world-to-camera)."""
    out = {}
    for line in (DATA / scene / "poses.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f = line.split()
            out[f[0]] = (np.array(f[5:9], float), np.array(f[9:12], float))
    return out


@pytest.mark.parametrize("scene", SCENES)
def test_real_poses_centres_and_quaternions(scene: str) -> None:
    raw = read_raw_poses(scene)
    recs = read_posed_folder(DATA / scene, check_images=False)
    assert len(recs) == len(raw)
    for r in recs:
        q, t = raw[r.name]
        R_cw = quat_to_R(q)
        assert is_valid_T(r.T_world_cam, tol=1e-9)
        np.testing.assert_allclose(camera_centre(r.T_world_cam), -R_cw.T @ t, atol=1e-9)   # C = -R^T t
        np.testing.assert_allclose(r.T_world_cam[:3, :3], R_cw.T, atol=1e-12)
        assert q[0] >= 0
        np.testing.assert_allclose(R_to_quat(R_cw), q / np.linalg.norm(q), atol=1e-9)
        T_cw = invert_T(r.T_world_cam)
        np.testing.assert_allclose(T_to_quat_t(T_cw)[1], t, atol=1e-9)


def _sift(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kp, desc = cv2.SIFT_create(nfeatures=4000).detectAndCompute(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), None)
    return np.array([k.pt for k in kp]), desc


def _ratio_matches(d_a: np.ndarray, d_b: np.ndarray) -> dict[int, int]:
    pairs = cv2.BFMatcher().knnMatch(d_a, d_b, k=2)
    return {m.queryIdx: m.trainIdx for m, n in pairs if m.distance < 0.75 * n.distance}


@pytest.mark.parametrize("scene", SCENES)
def test_points_triangulated_from_two_views_reproject_in_a_third(scene: str) -> None:
    """GT poses + intrinsics (scaled to half resolution for speed) explain real SIFT tracks."""
    recs = read_posed_folder(DATA / scene)
    views = [recs[0], recs[2], recs[1]]
    scale = 0.5 if recs[0].intrinsics.width > 1000 else 1.0
    kps, descs, intr = [], [], []
    for r in views:
        img = load_image(r.path)
        h, w = img.shape[:2]
        nw, nh = round(w * scale), round(h * scale)
        kp, desc = _sift(cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA))
        kps.append(kp)
        descs.append(desc)
        intr.append(r.intrinsics.scaled(nw / w, nh / h))
    m01, m02 = _ratio_matches(descs[0], descs[1]), _ratio_matches(descs[0], descs[2])
    track = [i for i in m01 if i in m02]
    assert len(track) > 50
    x0, x1 = kps[0][track], kps[1][[m01[i] for i in track]]
    x2 = kps[2][[m02[i] for i in track]]
    P = [intr[i].K @ invert_T(views[i].T_world_cam)[:3] for i in range(3)]
    Xh = cv2.triangulatePoints(P[0], P[1], x0.T, x1.T)
    X_world = (Xh[:3] / Xh[3]).T

    def reproj_px(T_world_cam: np.ndarray) -> np.ndarray:
        X_cam = apply_T(invert_T(T_world_cam), X_world)
        return np.linalg.norm(intr[2].project(X_cam) - x2, axis=1)

    err = reproj_px(views[2].T_world_cam)
    assert np.median(err) < 0.5, f"median reprojection error {np.median(err):.3f} px"   # measured ~0.1 px
    assert np.mean(err < 2.0) > 0.75
    wrong = reproj_px(recs[-1].T_world_cam)    # negative control: another camera's pose
    assert np.median(wrong) > 10.0
