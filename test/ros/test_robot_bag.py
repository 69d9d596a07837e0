"""Robot-style bags (`bag from-images --robot`): the mount on /tf_static, drifting odometry on
/tf, the base pose as ground truth; replayed with use_sim_time through the node process and
scored as the base pose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data.bag import (COMPRESSED_TOPIC, GT_TOPIC, IMAGE_TOPIC, INFO_TOPIC, TF_STATIC_TOPIC, TF_TOPIC,
                                     RobotBag, ground_truth_from_bag, read_bag, typestore, write_bag_from_folder)
from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.geometry import Distortion, T_from_quat_t, camera_mount, pose_error, quat_xyzw_to_wxyz

SAMPLE = Path(__file__).parents[2] / "sample" / "fountain-P11-small"
LENS = Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012))


def _T(tr) -> np.ndarray:
    t, q = tr.transform.translation, tr.transform.rotation
    return T_from_quat_t(quat_xyzw_to_wxyz([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def test_robot_bag_tf_tree_and_ground_truth_are_consistent(tmp_path):
    robot = RobotBag(drift_m_per_s=0.1, drift_deg_per_s=1.0, tf_rate_hz=10.0)
    out = write_bag_from_folder(SAMPLE, tmp_path / "r.mcap", split="query", fps=2.0, max_side=320, robot=robot)
    msgs = list(read_bag(out))
    ts = typestore()
    assert msgs[0].topic == TF_STATIC_TOPIC                      # the static tree comes first
    static = ts.deserialize_cdr(msgs[0].raw, msgs[0].msgtype).transforms
    assert [(s.header.frame_id, s.child_frame_id) for s in static] == [("base_link", "camera")]
    np.testing.assert_allclose(_T(static[0]), camera_mount([0.3, 0.0, 1.2], pitch_deg=20.0), atol=1e-12)
    odom = {}
    for m in msgs:
        if m.topic == TF_TOPIC:
            (tr,) = ts.deserialize_cdr(m.raw, m.msgtype).transforms
            assert (tr.header.frame_id, tr.child_frame_id) == ("odom", "base_link")
            odom[tr.header.stamp.sec * 10**9 + tr.header.stamp.nanosec] = _T(tr)
    gt = ground_truth_from_bag(out)
    images = [m.t_ns for m in msgs if m.topic == IMAGE_TOPIC]
    assert sorted(gt) == images and set(images) <= set(odom)
    assert len(odom) == 1 + 10 * (len(images) - 1) // 2           # 10 Hz over the 2 fps image span
    recs = read_posed_folder(SAMPLE, "query")
    t0 = images[0]
    for s, rec in zip(images, recs):
        # ground truth = the base, whose camera is the image's pose; odometry = truth + drift
        np.testing.assert_allclose(gt[s] @ robot.T_base_cam, rec.T_world_cam, atol=1e-9)
        np.testing.assert_allclose(robot.T_map_odom((s - t0) / 1e9) @ odom[s], gt[s], atol=1e-9)
    t_drift, r_drift = pose_error(odom[images[-1]], gt[images[-1]])
    assert r_drift > 1.0                                        # 1.5 s at 1 deg/s: the odometry really drifts


def test_robot_bag_command_line(tmp_path, capsys):
    from reloc_vggt_ros.cli import main

    out = tmp_path / "r.mcap"
    assert main(["bag", "from-images", str(SAMPLE), "--out", str(out), "--max-side", "160", "--robot", "--compressed",
                 "--mount", "0", "0", "1.5", "0", "--drift", "0", "0", "--tf-rate", "4"]) == 0
    assert {m.topic for m in read_bag(out)} == {COMPRESSED_TOPIC, INFO_TOPIC, GT_TOPIC, TF_TOPIC, TF_STATIC_TOPIC}
    lens = tmp_path / "lens.mcap"
    assert main(["bag", "from-images", str(SAMPLE), "--out", str(lens), "--max-side", "160", "--distortion",
                 "equidistant", "0.05", "-0.01", "0.002", "0"]) == 0
    ts = typestore()
    info = ts.deserialize_cdr(next(m for m in read_bag(lens) if m.topic == INFO_TOPIC).raw, "sensor_msgs/msg/CameraInfo")
    assert info.distortion_model == "equidistant" and info.d.tolist() == [0.05, -0.01, 0.002, 0.0]
    assert main(["bag", "from-images", str(SAMPLE), "--out", str(tmp_path / "y.mcap"), "--distortion", "fisheye",
                 "1"]) != 0
    assert "--distortion: unknown distortion model 'fisheye'" in capsys.readouterr().err
    gt = ground_truth_from_bag(out)
    recs = read_posed_folder(SAMPLE, "query")
    for T, rec in zip((gt[s] for s in sorted(gt)), recs):
        np.testing.assert_allclose(T @ camera_mount([0, 0, 1.5]), rec.T_world_cam, atol=1e-9)
    assert main(["bag", "from-images", str(SAMPLE), "--out", str(tmp_path / "x.mcap"), "--drift", "0", "0"]) != 0
    assert "--drift describe a robot-style bag: add --robot" in capsys.readouterr().err
    with pytest.raises(DataError, match="tf_rate_hz must be > 0"):
        RobotBag(tf_rate_hz=0)


@pytest.mark.ros
@pytest.mark.slow
def test_sim_time_replay_scores_the_base_pose(tmp_path):
    """End to end at 320 px: db of the sample's db split, a robot bag of its queries (/tf_static
    mount, drifting /tf odometry, images through a plumb_bob lens with its CameraInfo, /clock from
    the player), `evaluate` with sim time, map->odom mode: every query localized and the base
    pose as accurate as the camera's (the camera pose scored as the base would be 1.25 m off)."""
    pytest.importorskip("rclpy")
    from reloc_vggt_ros.keyframes import build_keyframe_db
    from reloc_vggt_ros.ros.evaluate import evaluate

    db = tmp_path / "db.db"
    build_keyframe_db(SAMPLE, db, split="db", backend="geometric", max_side=320)
    bag = write_bag_from_folder(SAMPLE, tmp_path / "robot.mcap", split="query", max_side=320, robot=RobotBag(),
                                distortion=LENS)
    params = Path(__file__).parents[2] / "config" / "reloc_vggt.yaml"
    m = evaluate(db, bag, tmp_path / "eval", params, domain_id=98, sim_time=True, overrides={"odom_frame": "odom"})
    assert m["n_localized"] == m["n_queries"] == 4, m["node_diagnostics"]
    assert m["median_translation_m"] < 0.05 and m["median_rotation_deg"] < 0.5, m
    assert m["node_exit_code"] == 0 and m["sim_time"]
    # the node's clock is the bag's: its last diagnostics are stamped within the bag's 1.5 s
    from reloc_vggt_ros.data.bag import START_NS

    assert START_NS <= int(m["node_diagnostics"]["header_stamp_ns"]) <= START_NS + 2 * 10**9, m["node_diagnostics"]
    log = (tmp_path / "eval" / "node.log").read_text()
    assert "no TF" not in log and "jumped back" not in log, log

