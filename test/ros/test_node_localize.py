"""End to end on real images: the node process localizes a query, and its TF agrees with the pose.

A small geometric database (3 real keyframes of sample/fountain-P11-small at 320 px) is built in
tmp_path; the probe publishes odom->camera on /tf around the image stamp, the node must publish
map->odom = T_map_cam * inv(T_odom_cam(stamp)) future-dated by transform_tolerance, and keep
republishing it between fixes.
"""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from reloc_vggt_ros.geometry import make_T, pose_error, so3_exp  # noqa: E402
from reloc_vggt_ros.ros.convert import pose_to_T, stamp_to_ns, transform_stamped, transform_to_T  # noqa: E402
from reloc_vggt_ros.session import covariance_problems  # noqa: E402
from reloc_vggt_ros.ros.tf import interpolate_T  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """3 fountain keyframes at 320 px (geometric index) and the held-out query 0001.jpg."""
    from bench.hostile_topics import build_scene

    return build_scene(tmp_path_factory.mktemp("db"))


def test_pose_accuracy_and_map_odom_tf(tmp_path, scene):
    db, img, intr, T_map_cam_gt = scene
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "odom_frame": "odom",
                                          "transform_tolerance_s": 0.2, "tf_publish_rate_hz": 10.0,
                                          "diagnostics_rate_hz": 10.0})
    stamp = T0 + 5 * S
    # odom -> camera: the robot drove between two /tf samples around the image stamp
    T_odom_a = make_T(so3_exp(np.array([0.0, 0.1, 0.0])), np.array([1.0, 0.0, 2.0]))
    T_odom_b = make_T(so3_exp(np.array([0.0, 0.3, 0.05])), np.array([1.4, 0.1, 2.5]))
    T_odom_cam = interpolate_T(T_odom_a, T_odom_b, 0.25)       # at the image stamp
    try:
        probe.wait_for_node(node)
        probe.spin_until(lambda: probe.tf_pub.get_subscription_count() > 0, 10, "the node's /tf listener", node)
        from tf2_msgs.msg import TFMessage

        probe.tf_pub.publish(TFMessage(transforms=[transform_stamped(T_odom_a, stamp - S // 4, "odom", "camera")]))
        probe.tf_pub.publish(TFMessage(transforms=[transform_stamped(T_odom_b, stamp + 3 * S // 4, "odom", "camera")]))
        probe.spin(0.3)
        probe.send_frame(img, intr, stamp, frame_id="camera")
        probe.spin_until(lambda: probe.poses, 90, "/relocalized_pose", node)
        msg = probe.poses[0]
        assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == stamp
        T_map_cam = pose_to_T(msg.pose.pose)
        t_err, r_err = pose_error(T_map_cam, T_map_cam_gt)
        assert t_err < 0.10 and r_err < 1.0, (t_err, r_err)     # scene spans ~14 m
        assert covariance_problems(msg.pose.covariance, msg.header.frame_id) == []
        # map->odom at the image stamp + tolerance, consistent with the pose
        def map_odom():
            return [t for t in probe.tf if t.header.frame_id == "map" and t.child_frame_id == "odom"]

        probe.spin_until(lambda: len(map_odom()) >= 4, 10, "map->odom republished", node)
        first = map_odom()[0]
        assert stamp_to_ns(first.header.stamp) == stamp + S // 5
        np.testing.assert_allclose(transform_to_T(first.transform) @ T_odom_cam, T_map_cam, atol=1e-6)
        later = map_odom()[1:]
        stamps = [stamp_to_ns(t.header.stamp) for t in later]
        assert stamps == sorted(stamps) and stamps[0] > stamp + S // 5   # future-dated from now, moving on
        for t in later:
            np.testing.assert_allclose(transform_to_T(t.transform), transform_to_T(first.transform), atol=1e-9)
        assert not [t for t in probe.tf if t.child_frame_id == "camera" and t.header.frame_id == "map"]
        d = probe.diags[-1]
        assert d["published"] == "1" and d["last_reason"] == "localized" and int(d["last_inliers"]) > 0
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.log()


def test_map_to_camera_tf_without_odom_and_prior(tmp_path, scene):
    """Compressed images, no odom frame: TF map->camera equals the pose; a prior is accepted."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from reloc_vggt_ros.ros.convert import T_to_pose

    db, img, intr, T_map_cam_gt = scene
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "camera_frame": "cam_optical",
                                          "use_compressed": True})
    try:
        probe.wait_for_node(node, compressed=True)
        prior = PoseWithCovarianceStamped()
        prior.header.frame_id = "map"
        T_to_pose(T_map_cam_gt @ make_T(np.eye(3), np.array([0.3, 0.0, 0.2])), prior.pose.pose)
        prior.pose.covariance = (np.eye(6) * 0.25).ravel()
        probe.prior_pub.publish(prior)
        probe.spin(0.3)
        probe.send_frame(img, intr, T0, frame_id="ignored_because_camera_frame_is_set", compressed=True)
        probe.spin_until(lambda: probe.poses and [t for t in probe.tf if t.child_frame_id == "cam_optical"],
                         90, "pose and map->cam_optical", node)
        T_map_cam = pose_to_T(probe.poses[0].pose.pose)
        t_err, r_err = pose_error(T_map_cam, T_map_cam_gt)
        assert t_err < 0.10 and r_err < 1.0, (t_err, r_err)
        tf = next(t for t in probe.tf if t.child_frame_id == "cam_optical")
        assert tf.header.frame_id == "map" and stamp_to_ns(tf.header.stamp) == T0
        np.testing.assert_allclose(transform_to_T(tf.transform), T_map_cam, atol=1e-6)
    finally:
        code = node.stop()
        probe.close()
    assert code == 0
    assert "prior set at" in node.log()
