"""Map-free mode without ROS: the Session drives a map-free backend through the adapter, with the
reference from files (real fountain image + depth triangulated under the true poses) or
remembered from the current frame; unusable references give the reason and keep the last one."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.errors import ConfigError, DataError
from reloc_vggt_ros.geometry import R_to_quat, pose_error
from reloc_vggt_ros.mapfree.registry import make_mapfree_localizer
from reloc_vggt_ros.session import Published, Rejected, Session, SessionConfig
from reloc_vggt_ros.session.map_free import MapFreeConfig, MapFreeLocalizerAdapter

sys.path.insert(0, str(Path(__file__).parents[1] / "mapfree"))
from mapfree_scene import REFERENCE, SAMPLE, build_reference  # noqa: E402


def reference_params(ref, T_world_cam: np.ndarray, depth_file: str) -> dict:  # noqa: ANN001
    """map_free.* settings of the reference (pose as x y z qx qy qz qw)."""
    q = R_to_quat(T_world_cam[:3, :3])
    i = ref.intrinsics
    return dict(reference_image=str(SAMPLE / "images" / REFERENCE), reference_intrinsics=(i.fx, i.fy, i.cx, i.cy),
                reference_pose=(*T_world_cam[:3, 3], q[1], q[2], q[3], q[0]), reference_depth=depth_file)


def write_depth_png(path: Path, depth_m: np.ndarray) -> str:
    cv2.imwrite(str(path), np.round(depth_m * 1000).astype(np.uint16))
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    ref, queries = build_reference()
    folder = tmp_path_factory.mktemp("mf")
    return ref, queries, write_depth_png(folder / "ref.depth.png", ref.depth_m), folder


def _session(adapter: MapFreeLocalizerAdapter) -> Session:
    session = Session(SessionConfig(), lambda store: adapter)
    session.attach(adapter)
    return session


def test_reference_from_files_then_remembered_from_the_current_frame(scene) -> None:
    ref, queries, depth_file, _ = scene
    adapter = MapFreeLocalizerAdapter(make_mapfree_localizer("depth_pnp"))
    session = _session(adapter)
    (q0, T0), (q1, _) = queries
    first = session.localize(q0.image_bgr, q0.intrinsics, 1)
    assert isinstance(first, Rejected) and "no map-free reference set" in first.reason
    msg = adapter.load(MapFreeConfig(**reference_params(ref, ref.T_world_cam, depth_file)))
    assert "0003.jpg (640x427, depth image)" in msg
    out = session.localize(q0.image_bgr, q0.intrinsics, 2)
    assert isinstance(out, Published), out
    t_err, r_err = pose_error(out.T_map_cam, T0)
    assert t_err < 0.02 and r_err < 0.2, (t_err, r_err)         # mm depth PNG, real matches
    # remember this place: the last frame (q0) at the last published pose, no depth
    msg = adapter.remember_place(out.T_map_cam)
    assert msg == "reference set from frame 2 at the last published pose, no depth"
    assert adapter.reference.name == "frame_2" and np.allclose(adapter.reference.T_world_cam, out.T_map_cam)
    nodepth = session.localize(q1.image_bgr, q1.intrinsics, 3)
    assert isinstance(nodepth, Rejected) and "has no depth image" in nodepth.reason
    assert "identity" in adapter.remember_place(None)
    np.testing.assert_array_equal(adapter.reference.T_world_cam, np.eye(4))


def test_unusable_reference_files_name_the_reason_and_keep_the_last_reference(scene) -> None:
    ref, queries, depth_file, folder = scene
    adapter = MapFreeLocalizerAdapter(make_mapfree_localizer("depth_pnp"))
    with pytest.raises(DataError, match="no frame received yet"):
        adapter.remember_place(None)
    good = reference_params(ref, ref.T_world_cam, depth_file)
    adapter.load(MapFreeConfig(**good))
    bad = {
        "missing.jpg": (dict(good, reference_image=str(folder / "missing.jpg")), "reference image not found"),
        "missing depth": (dict(good, reference_depth=str(folder / "none.png")), "depth image not found"),
        "half-size depth": (dict(good, reference_depth=write_depth_png(folder / "half.png", ref.depth_m[::2, ::2])),
                            "reference depth is 320x214 but the reference image is 640x427"),
        "all-invalid depth": (dict(good, reference_depth=write_depth_png(folder / "zero.png", 0 * ref.depth_m)),
                              "reference depth has no valid pixel"),
        "8-bit depth": (dict(good, reference_depth=str(SAMPLE / "images" / REFERENCE)), "must be single-channel 16-bit"),
        "zero focal": (dict(good, reference_intrinsics=(0.0, 1.0, 2.0, 3.0)), "intrinsics .* are unusable"),
    }
    session = _session(adapter)
    for case, (params, reason) in bad.items():
        with pytest.raises(DataError, match=reason):
            adapter.load(MapFreeConfig(**params))
        assert adapter.reference.name == REFERENCE, case                 # the good one is kept
    out = session.localize(queries[0][0].image_bgr, queries[0][0].intrinsics, 1)
    assert isinstance(out, Published)
    fresh = MapFreeLocalizerAdapter(make_mapfree_localizer("depth_pnp"))
    with pytest.raises(DataError):
        fresh.load(MapFreeConfig(**bad["all-invalid depth"][0]))
    out = _session(fresh).localize(queries[0][0].image_bgr, queries[0][0].intrinsics, 1)
    assert isinstance(out, Rejected) and "no map-free reference: reference depth has no valid pixel" in out.reason


def test_map_free_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"reference_intrinsics must be \[fx, fy, cx, cy\]"):
        MapFreeConfig(reference_image="a.jpg")
    with pytest.raises(ConfigError, match="reference_pose must be 7 finite numbers"):
        MapFreeConfig(reference_pose=(0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="quaternion is zero"):
        MapFreeConfig(reference_pose=(0.0,) * 7)
    with pytest.raises(ConfigError, match="reference_depth is set but map_free.reference_image is not"):
        MapFreeConfig(reference_depth="d.png")
    T = MapFreeConfig(reference_pose=(1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 0.0)).reference_T()
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)   # 180 deg about z


def test_remembered_place_with_odometry_gives_metric_poses(scene) -> None:
    """Track 2 in the node's policy: a place remembered without depth (0003 at its true pose), then
    frames with odometry (their true poses in an odometry frame) are published at metric scale;
    a frame without odometry is Track 1 again: no scale, not published."""
    from reloc_vggt_ros.data import load_image, read_posed_folder
    from reloc_vggt_ros.geometry import make_T, so3_exp

    ref, _, _, _ = scene
    recs = {r.name: r for r in read_posed_folder(SAMPLE)}
    adapter = MapFreeLocalizerAdapter(make_mapfree_localizer("geometric"), window=3)
    session = _session(adapter)
    assert isinstance(session.localize(ref.image_bgr, ref.intrinsics, 1), Rejected)      # no reference yet
    adapter.remember_place(ref.T_world_cam)
    T_odom_world = make_T(so3_exp(np.array([0.1, 0.2, -0.3])), np.array([5.0, -2.0, 1.0]))
    outs = []
    for stamp, name in enumerate(("0004.jpg", "0005.jpg"), start=10):
        rec = recs[name]
        outs.append(session.localize(load_image(rec.path), rec.intrinsics, stamp,
                                     T_odom_base=T_odom_world @ rec.T_world_cam))
    assert isinstance(outs[0], Rejected) and "no source of metric scale" in outs[0].reason   # one frame: Track 1
    out = outs[1]
    assert isinstance(out, Published) and out.result.diagnostics["scale"] == "odometry", out
    t_err, r_err = pose_error(out.T_map_cam, recs["0005.jpg"].T_world_cam)
    assert t_err < 0.05 and r_err < 0.2, (t_err, r_err)                  # 3.6 m from the remembered place
    rec = recs["0005.jpg"]
    alone = session.localize(load_image(rec.path), rec.intrinsics, 20)  # no odometry: the sequence breaks
    assert isinstance(alone, Rejected) and "no source of metric scale" in alone.reason


def test_a_second_reference_image_gives_the_metric_scale(scene) -> None:
    """No depth image, but a second posed photo of the place (0002.jpg, 0.7 m beside the
    reference): the reference's keypoints triangulated with it give metric poses; without it the
    same query has no scale and is not published."""
    from reloc_vggt_ros.data import read_posed_folder

    ref, queries, _, _ = scene
    (q0, T0), (q1, T1) = queries
    second = next(r for r in read_posed_folder(SAMPLE, "db") if r.name == "0002.jpg")
    params = reference_params(ref, ref.T_world_cam, "")
    adapter = MapFreeLocalizerAdapter(make_mapfree_localizer("geometric"))
    session = _session(adapter)
    assert "no depth" in adapter.load(MapFreeConfig(**params))
    out = session.localize(q0.image_bgr, q0.intrinsics, 1)
    assert isinstance(out, Rejected) and "no source of metric scale" in out.reason, out
    q = R_to_quat(second.T_world_cam[:3, :3])
    i = second.intrinsics
    stereo = dict(params, second_image=str(second.path), second_intrinsics=(i.fx, i.fy, i.cx, i.cy),
                  second_pose=(*second.T_world_cam[:3, 3], q[1], q[2], q[3], q[0]))
    msg = adapter.load(MapFreeConfig(**stereo))
    assert "scale from the second image 0002.jpg" in msg, msg
    for stamp, (q_, T_) in enumerate(queries, start=2):
        out = session.localize(q_.image_bgr, q_.intrinsics, stamp)
        assert isinstance(out, Published), out
        t_err, r_err = pose_error(out.T_map_cam, T_)
        assert t_err < 0.01 and r_err < 0.1, (q_.name, t_err, r_err)      # 2.7 / 1.9 mm measured
    # control: the second image's pose at twice its distance from the reference scales every answer
    # (1.7 m off): the scale really comes from the second view's baseline
    far = 2 * second.T_world_cam[:3, 3] - ref.T_world_cam[:3, 3]
    adapter.load(MapFreeConfig(**dict(stereo, second_pose=(*far, q[1], q[2], q[3], q[0]))))
    out = session.localize(q0.image_bgr, q0.intrinsics, 9)
    assert not isinstance(out, Published) or pose_error(out.T_map_cam, T0)[0] > 0.5
    # the second image at the reference's own place: no baseline, refused with the reason
    with pytest.raises(DataError, match="no baseline"):
        adapter.load(MapFreeConfig(**dict(stereo, second_pose=params["reference_pose"])))
    with pytest.raises(ConfigError, match="second_intrinsics"):
        MapFreeConfig(**dict(stereo, second_intrinsics=()))
