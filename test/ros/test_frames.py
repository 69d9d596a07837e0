"""REP-105 frames and sim time through the real node process over loopback DDS.

The robot carries the camera 0.3 m forward, 1.2 m up, pitched 20 deg down; a static TF publisher
(transient local, started before the node: the node joins late) gives base_link -> camera, the
probe publishes odom -> base_link on /tf. Real images: 3 fountain keyframes at 320 px and the
held-out query 0001.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from reloc_vggt_ros.geometry import (camera_mount, interpolate_T, invert_T, make_T, pose_error,  # noqa: E402
                                     so3_exp, transform_pose_covariance)
from reloc_vggt_ros.ros.convert import pose_to_T, stamp_to_ns, transform_stamped, transform_to_T  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S
T_BASE_CAM = camera_mount([0.3, 0.0, 1.2], pitch_deg=20.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from bench.hostile_topics import build_scene

    return build_scene(tmp_path_factory.mktemp("db"))


def _odom_base(t: float) -> np.ndarray:
    """The robot's odometry: driving 1 m/s along a slowly turning heading."""
    return make_T(so3_exp(np.array([0.0, 0.0, 0.1 * t])), np.array([t, 0.05 * t * t, 0.0]))


def _static_tf(probe: Probe, transforms: list) -> None:
    from tf2_msgs.msg import TFMessage

    from reloc_vggt_ros.ros.qos import TF_STATIC_QOS

    probe.static_pub = probe.node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
    probe.static_pub.publish(TFMessage(transforms=transforms))


def _send_odom(probe: Probe, t0: float, t1: float, origin_ns: int, step: float = 0.25) -> None:
    from tf2_msgs.msg import TFMessage

    for t in np.arange(t0, t1 + 1e-9, step):
        probe.tf_pub.publish(TFMessage(transforms=[
            transform_stamped(_odom_base(t), origin_ns + int(round(t * S)), "odom", "base_link")]))


def _map_odom(probe: Probe) -> list:
    return [t for t in probe.tf if t.header.frame_id == "map" and t.child_frame_id == "odom"]


def test_base_pose_tf_and_covariance_through_the_extrinsic(tmp_path, scene):
    db, img, intr, T_map_cam_gt = scene
    domain = next_domain_id()
    probe = Probe(domain)
    _static_tf(probe, [transform_stamped(T_BASE_CAM, 0, "base_link", "camera"),
                       transform_stamped(np.eye(4), 0, "base_link", "camera_at_base")])
    probe.spin(0.5)
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "base_frame": "base_link", "odom_frame": "odom",
                                          "transform_tolerance_s": 0.2, "diagnostics_rate_hz": 10.0})
    try:
        probe.wait_for_node(node)
        probe.spin_until(lambda: probe.tf_pub.get_subscription_count() > 0, 10, "the node's /tf listener", node)
        _send_odom(probe, 0.0, 10.0, T0)
        probe.spin(0.3)
        # 1. the base pose: the camera's through the extrinsic; map->odom from odom->base_link
        stamp1 = T0 + int(2.1 * S)
        probe.send_frame(img, intr, stamp1, frame_id="camera")
        probe.spin_until(lambda: probe.poses, 90, "/relocalized_pose", node)
        msg = probe.poses[0]
        assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == stamp1
        T_map_base = pose_to_T(msg.pose.pose)
        t_err, r_err = pose_error(T_map_base @ T_BASE_CAM, T_map_cam_gt)
        assert t_err < 0.10 and r_err < 1.0, (t_err, r_err)
        t_base_err, _ = pose_error(T_map_base, T_map_cam_gt)
        assert t_base_err > 1.0                       # the base is not where the lens is
        probe.spin_until(lambda: _map_odom(probe), 10, "map->odom", node)
        first = _map_odom(probe)[0]
        assert stamp_to_ns(first.header.stamp) == stamp1 + S // 5
        T_odom_base = interpolate_T(_odom_base(2.0), _odom_base(2.25), 0.4)
        np.testing.assert_allclose(transform_to_T(first.transform) @ T_odom_base, T_map_base, atol=1e-6)
        assert not [t for t in probe.tf if t.header.frame_id == "map" and t.child_frame_id != "odom"]
        # 2. the same image from a camera at the base (identity extrinsic): the camera pose and
        # covariance, from which the first message's covariance is the adjoint transform
        probe.send_frame(img, intr, stamp1 + S, frame_id="camera_at_base")
        probe.spin_until(lambda: len(probe.poses) >= 2, 90, "the second pose", node)
        cam = probe.poses[1]
        T_map_cam = pose_to_T(cam.pose.pose)
        np.testing.assert_allclose(T_map_cam, T_map_base @ T_BASE_CAM, atol=1e-6)
        cov_cam = np.asarray(cam.pose.covariance).reshape(6, 6)
        cov_base = np.asarray(msg.pose.covariance).reshape(6, 6)
        expected = transform_pose_covariance(cov_cam, T_map_cam, T_c_d=invert_T(T_BASE_CAM))
        np.testing.assert_allclose(cov_base, expected, rtol=1e-5, atol=1e-12)
        assert not np.allclose(cov_base, cov_cam, rtol=1e-3)
        assert "camera extrinsic" not in node.log()   # two cameras, each with its own static extrinsic
        # 3. a camera frame with no extrinsic on TF: rejected with the reason, never an identity
        probe.send_frame(img, intr, stamp1 + 2 * S, frame_id="camera_unknown")
        d = probe.wait_diag(r"no TF base_link -> camera_unknown \(the camera extrinsic\)", node=node, timeout=90)
        assert d["published"] == "2" and len(probe.poses) == 2
        # 4. /initialpose of base_link in odom (nav2 style): into map through map->odom (the
        # session turns it into the camera's prior with each query's extrinsic), then a query
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from tf2_msgs.msg import TFMessage

        from reloc_vggt_ros.ros.convert import T_to_pose

        T_odom_prior = make_T(so3_exp(np.array([0.0, 0.0, 0.4])), np.array([3.0, 1.0, 0.0]))
        prior = PoseWithCovarianceStamped()
        prior.header.frame_id = "odom"                # stamp 0: the latest map->odom
        T_to_pose(T_odom_prior, prior.pose.pose)
        prior.pose.covariance = (np.eye(6) * 0.25).ravel()
        probe.prior_pub.publish(prior)
        probe.spin_until(lambda: "prior set at" in node.log(), 20, "the prior", node)
        latest = transform_to_T(_map_odom(probe)[-1].transform)
        x, y, z = map(float, re.search(r"prior set at \(([-\d.]+), ([-\d.]+), ([-\d.]+)\)", node.log()).groups())
        np.testing.assert_allclose([x, y, z], (latest @ T_odom_prior)[:3, 3], atol=0.006)
        probe.send_frame(img, intr, stamp1 + 3 * S, frame_id="camera")
        probe.spin_until(lambda: len(probe.poses) >= 3, 90, "the third pose", node)
        # 5. the "static" mount changes (a second static publisher disagrees): reported, and the
        # TF at the image stamp is used
        moved = T_BASE_CAM @ make_T(np.eye(3), np.array([0.0, 0.02, 0.0]))
        probe.static_pub.publish(TFMessage(transforms=[transform_stamped(moved, 0, "base_link", "camera")]))
        probe.spin(0.3)
        probe.send_frame(img, intr, stamp1 + 4 * S, frame_id="camera")
        probe.wait_diag(r"camera extrinsic of camera changed by 20\.0 mm", key="last_warning", node=node, timeout=90)
        probe.spin_until(lambda: len(probe.poses) >= 4, 20, "the fourth pose", node)
        np.testing.assert_allclose(pose_to_T(probe.poses[3].pose.pose) @ moved, T_map_cam, atol=1e-6)
        assert node.alive()
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.log()


def test_sim_time_and_a_backwards_clock_jump(tmp_path, scene):
    """use_sim_time: stamps on /clock time; a bag loop (clock back) resets the dynamic TF, so an
    image after the loop gets no map->odom from the abandoned timeline's odometry (the static
    extrinsic stays), the republished map->odom stops, the reason is in diagnostics."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    db, img, intr, _ = scene
    domain = next_domain_id()
    probe = Probe(domain)
    clock_pub = probe.node.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    _static_tf(probe, [transform_stamped(T_BASE_CAM, 0, "base_link", "camera")])
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "base_frame": "base_link", "odom_frame": "odom",
                                          "use_sim_time": True, "tf_publish_rate_hz": 10.0,
                                          "diagnostics_rate_hz": 10.0})
    now = {"t": 100.0}

    def tick(seconds: float, rate: float = 1.0) -> None:
        """Spin ``seconds`` of wall time, /clock advancing ``rate`` x as fast."""
        import time

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            clock_pub.publish(Clock(clock=_stamp(now["t"])))
            probe.spin(0.02)
            now["t"] += 0.02 * rate

    try:
        probe.wait_for_node(node)
        probe.spin_until(lambda: probe.tf_pub.get_subscription_count() > 0, 10, "the node's /tf listener", node)
        probe.spin_until(lambda: clock_pub.get_subscription_count() > 0, 10, "the node's /clock reader", node)
        tick(0.5, rate=0.0)
        _send_odom(probe, 95.0, 105.0, 0)
        probe.spin(0.3)
        probe.send_frame(img, intr, 100 * S, frame_id="camera")
        probe.spin_until(lambda: probe.poses, 90, "/relocalized_pose", node)
        tick(1.0)
        stamps = [stamp_to_ns(t.header.stamp) for t in _map_odom(probe)]
        assert stamps and stamps[0] == 100 * S + S // 10           # image stamp + tolerance
        assert all(s < 200 * S for s in stamps), stamps            # republished on sim time, not wall time
        assert len(stamps) >= 2 and stamps[-1] > stamps[0]
        # the bag loops: /clock back to 97 s
        now["t"] = 97.0
        tick(0.3, rate=0.0)
        probe.wait_diag(r"ROS time jumped back 3\.\d+ s", key="last_warning", node=node)
        n_before = len(_map_odom(probe))
        tick(1.0)                                                 # no stale map->odom republished
        assert len(_map_odom(probe)) == n_before, [stamp_to_ns(t.header.stamp) for t in _map_odom(probe)[n_before:]]
        probe.send_frame(img, intr, int(97.5 * S), frame_id="camera")
        probe.spin_until(lambda: len(probe.poses) >= 2, 90, "the pose after the loop", node)
        assert stamp_to_ns(probe.poses[1].header.stamp) == int(97.5 * S)   # the static extrinsic survived
        probe.wait_diag(r"no TF odom -> base_link \(odometry\)", key="last_warning", node=node)
        tick(0.5)
        assert len(_map_odom(probe)) == n_before                  # 95..105 s odometry is gone with the loop
        assert node.alive()
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.log()


def _stamp(t: float):
    from builtin_interfaces.msg import Time

    from reloc_vggt_ros.ros.convert import ns_to_stamp

    return ns_to_stamp(int(round(t * S)), Time())


def test_keyframe_pose_of_the_base_is_stored_as_the_camera_pose(tmp_path):
    """Mapping with a base frame: a keyframe_pose of base_link in odom is brought into map on
    arrival (map->odom at its stamp) and stored as the camera pose through the extrinsic of the
    paired image's camera; without the extrinsic it is rejected with the reason (node
    in-process, TF fed to its buffer directly)."""
    import cv2
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.data.posed_folder import read_posed_folder
    from reloc_vggt_ros.keyframes import KeyframeStore
    from reloc_vggt_ros.ros.convert import T_to_pose, bgr_to_image, intrinsics_to_camera_info, ns_to_stamp
    from reloc_vggt_ros.ros.node import RelocNode, _Frame

    db = tmp_path / "map.db"
    KeyframeStore.create(db).close()
    rec = read_posed_folder(Path(__file__).parents[2] / "sample" / "fountain-P11-small", "db")[0]
    T_map_odom = make_T(so3_exp(np.array([0.0, 0.0, 0.3])), np.array([5.0, -2.0, 0.0]))
    T_odom_base = make_T(so3_exp(np.array([0.0, 0.0, -1.0])), np.array([1.0, 2.0, 0.0]))
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "mapping.enabled:=true"])
    try:
        node = RelocNode(context=context, parameter_overrides=[Parameter("database_path", value=str(db))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS

        def keyframe(stamp: int) -> None:
            msg = PoseStamped()
            msg.header.frame_id = "odom"
            ns_to_stamp(stamp, msg.header.stamp)
            T_to_pose(T_odom_base, msg.pose)
            node.keyframe_pose_callback(msg)
            (_, T_map_base), = node._kf_sync._b                 # in map, waiting for its image
            node._kf_sync.clear()
            np.testing.assert_allclose(T_map_base, T_map_odom @ T_odom_base, atol=1e-9)
            image = bgr_to_image(cv2.imread(str(rec.path)), Image())
            image.header.frame_id = "camera"
            node._handle_keyframe((stamp, _Frame(stamp, image, intrinsics_to_camera_info(rec.intrinsics, CameraInfo()),
                                                 0.0), T_map_base))

        node._tf_lookup.buffer.set_transform(T_map_odom, 0, "map", "odom", static=True)
        keyframe(T0 + 3 * S)
        assert "no TF base_link -> camera (the camera extrinsic)" in node.stats.last_keyframe_reason
        node._tf_lookup.buffer.set_transform(T_BASE_CAM, 0, "base_link", "camera", static=True)
        keyframe(T0 + 4 * S)
        assert node.stats.keyframes_added == 1, node.stats.last_keyframe_reason
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    with KeyframeStore.open(db, readonly=True) as store:
        np.testing.assert_allclose(store.poses()[1][0], T_map_odom @ T_odom_base @ T_BASE_CAM, atol=1e-6)
