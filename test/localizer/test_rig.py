"""Camera rigs on real views: three fountain-P11 queries arranged as a rig whose extrinsics come
from their ground-truth poses (base = query 0001), localized as one generalized pose of the base."""

from pathlib import Path

import numpy as np
import pytest

from bench.localize import keyframe_at, resized_image
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import apply_T, invert_T, perturb_pose, pose_error
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.localizer.base import RelocStatus
from reloc_vggt_ros.localizer.geometric import RigCamera, RigFrame
from reloc_vggt_ros.localizer.geometric.pnp import RigObservations, reprojection_jacobian, rig_pose_covariance
from reloc_vggt_ros.localizer.registry import make_localizer

FOUNTAIN = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"
SIZE = (640, 427)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(localizer, rig frames of queries 0001, 0004, 0007, T_world_base = query 0001's pose)."""
    queries = read_posed_folder(FOUNTAIN, "query")[:3]
    store = KeyframeStore.create(tmp_path_factory.mktemp("rig") / "fountain.db")
    store.add_keyframes([keyframe_at(r, SIZE) for r in read_posed_folder(FOUNTAIN, "db")])
    base = queries[0].T_world_cam
    frames = []
    for q in queries:
        img, intr = resized_image(q, SIZE)
        frames.append(RigFrame(RigCamera(q.name, invert_T(base) @ q.T_world_cam), img, intr))
    yield make_localizer("geometric", store, preset="realtime"), frames, base
    store.close()


def test_rig_fuses_every_camera_into_one_base_pose(rig) -> None:  # type: ignore[no-untyped-def]
    """All three cameras: 1.4 mm / 0.003 deg (each camera alone: 0.8-2.9 mm, 0.011-0.024 deg)."""
    loc, frames, base = rig
    res = loc.localize_rig(frames)
    assert res.ok, res.reason
    t, r = pose_error(res.T_world_cam, base)
    assert t < 0.003 and r < 0.008, (t, r)
    cams = res.diagnostics["cameras"]
    assert list(cams) == [f.camera.name for f in frames]
    assert all(c["num_inliers"] > 50 for c in cams.values()) and res.num_inliers == sum(
        c["num_inliers"] for c in cams.values())
    assert np.all(np.linalg.eigvalsh(res.covariance) > 0)
    # the rotation is better constrained by three views than by the best single camera
    singles = [loc.localize(f.image_bgr, f.intrinsics) for f in frames]
    assert all(s.ok for s in singles)
    single_r = [pose_error(s.T_world_cam @ invert_T(f.camera.T_base_cam), base)[1] for s, f in zip(singles, frames)]
    assert r < min(single_r), (r, single_r)


def test_any_subset_of_cameras_works_and_one_camera_is_the_single_query(rig) -> None:  # type: ignore[no-untyped-def]
    loc, frames, base = rig
    res = loc.localize_rig(frames[1:])              # the base's own camera absent
    assert res.ok and list(res.diagnostics["cameras"]) == [f.camera.name for f in frames[1:]]
    t, r = pose_error(res.T_world_cam, base)
    assert t < 0.005 and r < 0.02, (t, r)
    one = loc.localize_rig(frames[2:])
    single = loc.localize(frames[2].image_bgr, frames[2].intrinsics)
    np.testing.assert_allclose(one.T_world_cam @ frames[2].camera.T_base_cam, single.T_world_cam, atol=1e-9)
    assert one.num_inliers == single.num_inliers


def test_wrong_extrinsics_or_bad_input_are_not_a_pose(rig) -> None:  # type: ignore[no-untyped-def]
    loc, frames, base = rig
    # every camera said to sit at the base: no single rigid pose fits all three views
    ident = [RigFrame(RigCamera(f.camera.name, np.eye(4)), f.image_bgr, f.intrinsics) for f in frames]
    res = loc.localize_rig(ident)
    assert not res.ok or pose_error(res.T_world_cam, base)[0] > 0.05
    assert res.num_inliers < 0.7 * loc.localize_rig(frames).num_inliers
    twice = loc.localize_rig([frames[0], frames[0]])
    assert twice.status is RelocStatus.INVALID_INPUT and "camera names must be unique" in twice.reason
    skew = np.eye(4)
    skew[0, 1] = 0.5
    bad = loc.localize_rig([RigFrame(RigCamera("cam", skew), frames[0].image_bgr, frames[0].intrinsics)])
    assert bad.status is RelocStatus.INVALID_INPUT and "T_base_cam is not a finite rigid" in bad.reason
    assert loc.localize_rig([]).status is RelocStatus.INVALID_INPUT


def test_rig_jacobian_is_the_base_perturbation(rig) -> None:  # type: ignore[no-untyped-def]
    """d(pixels)/d(base perturbation) against central differences, camera off the base."""
    _, frames, base = rig
    f = frames[2]
    T_bc, intr = f.camera.T_base_cam, f.intrinsics
    X = (base @ T_bc)[:3, 3] + np.random.default_rng(0).uniform(-3, 3, (30, 3)) + 8 * (base @ T_bc)[:3, 2]
    J = reprojection_jacobian(base, X, intr, T_bc)

    def pixels(xi: np.ndarray) -> np.ndarray:
        return intr.project(apply_T(invert_T(perturb_pose(base, xi) @ T_bc), X)).reshape(-1)

    num = np.stack([(pixels(e) - pixels(-e)) / 2e-6 for e in np.eye(6) * 1e-6], axis=1)
    np.testing.assert_allclose(J, num, rtol=1e-4, atol=1e-3)
    # a one-camera rig at the base is pose_covariance's single camera
    x2d = intr.project(apply_T(invert_T(base @ T_bc), X))
    noisy = x2d + np.random.default_rng(1).normal(0, 0.5, x2d.shape)
    cov_rig, _ = rig_pose_covariance(base, [RigObservations(noisy, X, intr, T_bc)])
    cov_cam, _ = rig_pose_covariance(base @ T_bc, [RigObservations(noisy, X, intr, np.eye(4))])
    # the same information, seen from the base: C_base = C_cam - R_wb t_bc moves with the rotation
    assert np.all(np.isfinite(cov_rig)) and np.allclose(cov_rig[3:, 3:], cov_cam[3:, 3:], rtol=1e-6)
