"""mode map_free in a real node process over loopback DDS.

Reference: fountain-P11 (sample/, 640 px) image 0003.jpg with its true pose and a depth PNG
(uint16 mm) of its SIFT keypoints triangulated from three neighbours under the true poses (the
scene ships no depth); queries: the held-out real views 0004 and 0001. The node must publish the
query pose in the map (= the scene's world) frame with the default backend (weights-free
geometric), remember a place through ~/set_reference, and stay up with the reason in /diagnostics
when the reference is unusable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("std_srvs.srv")

from reloc_vggt_ros.geometry import R_to_quat, pose_error  # noqa: E402
from reloc_vggt_ros.ros.convert import pose_to_T, stamp_to_ns  # noqa: E402
from reloc_vggt_ros.session import covariance_problems  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "mapfree"))
from mapfree_scene import REFERENCE, SAMPLE, build_reference  # noqa: E402

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    ref, queries = build_reference()
    folder = tmp_path_factory.mktemp("mf")
    depth = folder / "ref.depth.png"
    cv2.imwrite(str(depth), np.round(ref.depth_m * 1000).astype(np.uint16))
    return ref, queries, depth, folder


def _params(ref: Any, depth: Path, **over: Any) -> dict[str, Any]:
    i, T = ref.intrinsics, ref.T_world_cam
    q = R_to_quat(T[:3, :3])
    pose = [*T[:3, 3], q[1], q[2], q[3], q[0]]
    params = {"mode": "map_free", "diagnostics_rate_hz": 10.0,          # the default backend (geometric)
              "map_free.reference_image": str(SAMPLE / "images" / REFERENCE),
              "map_free.reference_intrinsics": f"[{i.fx!r}, {i.fy!r}, {i.cx!r}, {i.cy!r}]",
              "map_free.reference_pose": "[" + ", ".join(repr(float(v)) for v in pose) + "]",
              "map_free.reference_depth": str(depth)}
    params.update({f"map_free.{k}": v for k, v in over.items()})
    return params


def _set_reference(probe: Probe, node: NodeProcess) -> Any:
    from std_srvs.srv import Trigger

    client = probe.node.create_client(Trigger, "/reloc_vggt_node/set_reference")
    probe.spin_until(client.service_is_ready, 20, "the set_reference service", node)
    future = client.call_async(Trigger.Request())
    probe.spin_until(future.done, 30, "the set_reference response", node)
    return future.result()


def test_map_free_node_publishes_the_query_pose_and_remembers_a_place(tmp_path, scene):
    ref, queries, depth, _ = scene
    (q0, T0_gt), (q1, _) = queries
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, _params(ref, depth))
    try:
        probe.wait_for_node(node)
        d = probe.wait_diag(r".", key="reference", node=node)
        assert d["reference"] == REFERENCE and d["database_size"] == "0", d
        stamp = T0 + 5 * S
        probe.send_frame(q0.image_bgr, q0.intrinsics, stamp, frame_id="camera")
        probe.spin_until(lambda: probe.poses, 60, "/relocalized_pose", node)
        msg = probe.poses[0]
        assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == stamp
        t_err, r_err = pose_error(pose_to_T(msg.pose.pose), T0_gt)
        assert t_err < 0.02 and r_err < 0.2, (t_err, r_err)           # 2.5 m baseline, metric from depth
        assert covariance_problems(msg.pose.covariance, msg.header.frame_id) == []
        # remember this place: the frame just localized, at the pose just published
        res = _set_reference(probe, node)
        assert res.success and res.message == f"reference set from frame {stamp} at the last published pose, no depth"
        probe.send_frame(q1.image_bgr, q1.intrinsics, stamp + S, frame_id="camera")
        d = probe.wait_diag("no source of metric scale", node=node)  # no depth: direction only, not published
        assert d["reference"] == f"frame_{stamp}" and len(probe.poses) == 1
        assert node.alive()
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


@pytest.mark.parametrize("case", ["missing image", "half-size depth", "all-invalid depth"])
def test_unusable_reference_keeps_the_node_up_with_the_reason(tmp_path, scene, case):
    ref, queries, depth, folder = scene
    bad = folder / f"{case.replace(' ', '_')}.png"
    over, reason = {
        "missing image": ({"reference_image": str(folder / "missing.jpg")}, "reference image not found"),
        "half-size depth": ({"reference_depth": str(bad)}, "reference depth is 320x214 but the reference image is 640x427"),
        "all-invalid depth": ({"reference_depth": str(bad)}, "reference depth has no valid pixel"),
    }[case]
    half = np.round(ref.depth_m[::2, ::2] * 1000).astype(np.uint16)
    cv2.imwrite(str(bad), half if case == "half-size depth" else np.zeros(ref.depth_m.shape, np.uint16))
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, _params(ref, depth, **over))
    try:
        probe.wait_for_node(node)
        d = probe.wait_diag(reason, key="last_warning", node=node)
        assert d["state"] == "active" and d["reference"] == "none", d
        assert d["last_warning"].startswith("map-free reference not loaded: ")
        q, _ = queries[0]
        probe.send_frame(q.image_bgr, q.intrinsics, T0 + S, frame_id="camera")
        d = probe.wait_diag("no_match: no map-free reference: " + reason, node=node)
        # the service rescues the node: the current frame becomes the reference (identity, no depth)
        res = _set_reference(probe, node)
        assert res.success and "at the identity (nothing published yet)" in res.message, res.message
        probe.send_frame(q.image_bgr, q.intrinsics, T0 + 2 * S, frame_id="camera")
        d = probe.wait_diag("no source of metric scale", node=node)
        assert d["reference"] == f"frame_{T0 + S}" and node.alive() and not probe.poses
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


@pytest.mark.slow
def test_remembered_place_with_odometry_publishes_metric_poses(tmp_path, scene):
    """No reference by parameters: the first frame is remembered (identity: the map frame is that
    camera), then frames with odom -> camera on /tf are localized jointly (map_free.window 3,
    Track 2 of the default backend) and published at metric scale."""
    from tf2_msgs.msg import TFMessage

    from reloc_vggt_ros.data import load_image, read_posed_folder
    from reloc_vggt_ros.geometry import invert_T, make_T, so3_exp
    from reloc_vggt_ros.ros.convert import transform_stamped

    recs = {r.name: r for r in read_posed_folder(SAMPLE)}
    T_odom_world = make_T(so3_exp(np.array([0.1, 0.2, -0.3])), np.array([5.0, -2.0, 1.0]))
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, {"mode": "map_free", "diagnostics_rate_hz": 10.0, "odom_frame": "odom",
                                          "map_free.window": 3})
    try:
        probe.wait_for_node(node)
        probe.spin_until(lambda: probe.tf_pub.get_subscription_count() > 0, 10, "the node's /tf listener", node)

        def send(name: str, stamp: int) -> None:
            rec = recs[name]
            probe.tf_pub.publish(TFMessage(transforms=[transform_stamped(T_odom_world @ rec.T_world_cam, stamp,
                                                                         "odom", "camera")]))
            probe.spin(0.3)
            probe.send_frame(load_image(rec.path), rec.intrinsics, stamp, frame_id="camera")
            probe.spin_until(lambda: any(d.get("last_stamp_ns") == str(stamp) for d in probe.diags), 120,
                             f"frame {name} processed", node)

        send(REFERENCE, T0 + S)
        assert _set_reference(probe, node).success
        for i, name in enumerate(("0004.jpg", "0005.jpg"), start=2):
            send(name, T0 + i * S)
        probe.spin_until(lambda: len(probe.poses) >= 2, 30, "/relocalized_pose", node)
        # the remembered frame had odometry too, so 0004 already has a sequence of two
        assert [stamp_to_ns(p.header.stamp) for p in probe.poses] == [T0 + 2 * S, T0 + 3 * S]
        for msg, name in zip(probe.poses, ("0004.jpg", "0005.jpg")):
            T_ref_gt = invert_T(recs[REFERENCE].T_world_cam) @ recs[name].T_world_cam   # map = the remembered camera
            t_err, r_err = pose_error(pose_to_T(msg.pose.pose), T_ref_gt)
            assert t_err < 0.05 and r_err < 0.3, (name, t_err, r_err)
    finally:
        probe.close()
        assert node.stop() == 0, node.log()
