"""Camera rigs through the real node process over loopback DDS (``rig.cameras``).

Three fountain-P11 queries (0001, 0004, 0007 at 640x427) are the cameras of one rig: the robot's
base_link sits 1.2 m behind and below camera ``front`` (query 0001), and each camera's extrinsic
base_link -> its optical frame comes from the ground truth, published on /tf_static. The map is
the scene's db split. The node subscribes ``<camera>/image`` + ``<camera>/camera_info`` per
camera, groups them by stamp and publishes one base pose per instant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from bench.localize import keyframe_at, resized_image  # noqa: E402
from reloc_vggt_ros.data import read_posed_folder  # noqa: E402
from reloc_vggt_ros.geometry import Intrinsics, camera_mount, invert_T, pose_error  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore  # noqa: E402
from reloc_vggt_ros.ros.convert import pose_to_T, stamp_to_ns, transform_stamped  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

pytestmark = pytest.mark.ros

FOUNTAIN = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"
SIZE = (640, 427)
S = 1_000_000_000
T0 = 1_700_000_000 * S
CAMERAS = ("front", "left", "right")
FRONT_MOUNT = camera_mount([0.3, 0.0, 1.2], pitch_deg=10.0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):  # type: ignore[no-untyped-def]
    """(map db, db records, {camera: (image, intrinsics, T_base_cam)}, T_map_base)."""
    from reloc_vggt_ros.localizer.registry import index_database

    db = tmp_path_factory.mktemp("rig") / "fountain.db"
    records = read_posed_folder(FOUNTAIN, "db")
    with KeyframeStore.create(db, creator="test rig") as store:
        store.add_keyframes([keyframe_at(r, SIZE) for r in records])
        index_database(store, "geometric")
    queries = read_posed_folder(FOUNTAIN, "query")[:3]
    T_map_base = queries[0].T_world_cam @ invert_T(FRONT_MOUNT)
    cams = {}
    for name, q in zip(CAMERAS, queries):
        img, intr = resized_image(q, SIZE)
        cams[name] = (img, intr, invert_T(T_map_base) @ q.T_world_cam)
    return db, records, cams, T_map_base


class RigProbe:
    """The harness probe plus one image + camera_info publisher per rig camera and /tf_static."""

    def __init__(self, domain: int, extrinsics: dict[str, np.ndarray]) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from reloc_vggt_ros.ros.qos import TF_STATIC_QOS

        self.probe = Probe(domain)
        node = self.probe.node
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image = {c: node.create_publisher(Image, f"{c}/image", reliable) for c in CAMERAS}
        self.info = {c: node.create_publisher(CameraInfo, f"{c}/camera_info", reliable) for c in CAMERAS}
        static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        static.publish(TFMessage(transforms=[transform_stamped(T, 0, "base_link", f"{c}_optical")
                                             for c, T in extrinsics.items()]))
        self._static = static

    def wait_for_node(self, node: NodeProcess) -> None:
        self.probe.spin_until(lambda: all(p.get_subscription_count() > 0 for p in self.image.values()), 60,
                              "the node's rig subscriptions", node)
        self.probe.spin(1.0)

    def send(self, camera: str, image: np.ndarray, intr: Intrinsics, stamp_ns: int, frame_id: str = "") -> None:
        from sensor_msgs.msg import CameraInfo, Image

        from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp

        info = intrinsics_to_camera_info(intr, CameraInfo())
        msg = bgr_to_image(image, Image())
        for m in (info, msg):
            m.header.frame_id = frame_id or f"{camera}_optical"
            ns_to_stamp(stamp_ns, m.header.stamp)
        self.info[camera].publish(info)
        self.image[camera].publish(msg)


def _base_error(msg, T_map_base: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    return pose_error(pose_to_T(msg.pose.pose), T_map_base)


def test_a_rig_publishes_one_base_pose_per_instant_from_the_cameras_present(tmp_path, rig):  # type: ignore
    db, _, cams, T_map_base = rig
    domain = next_domain_id()
    rp = RigProbe(domain, {c: T for c, (_, _, T) in cams.items()})
    probe = rp.probe
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "base_frame": "base_link",
                                          "rig.cameras": "[front, left, right]", "geometric.preset": "realtime",
                                          "diagnostics_rate_hz": 10.0})
    try:
        rp.wait_for_node(node)
        # 1. all three cameras, stamps within the slop: one pose of the base, not of any lens
        for i, (c, (img, intr, _)) in enumerate(cams.items()):
            rp.send(c, img, intr, T0 + i * 5_000_000)
        probe.spin_until(lambda: probe.poses, 120, "the rig pose", node)
        msg = probe.poses[0]
        assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == T0
        t, r = _base_error(msg, T_map_base)
        assert t < 0.01 and r < 0.1, (t, r)
        assert min(pose_error(pose_to_T(msg.pose.pose), T_map_base @ T)[0] for _, _, T in cams.values()) > 0.3
        cov = np.asarray(msg.pose.covariance).reshape(6, 6)
        assert np.all(np.linalg.eigvalsh(cov) > 0)
        d = probe.wait_diag(r"inliers of", key="camera right", node=node)
        for c in CAMERAS:
            assert int(d[f"camera {c}"].split()[0]) > 30, d
        # 2. camera "left" stops: the next instant goes out without it once a newer frame shows it
        # late (rig.wait_s), named in diagnostics; the pose still comes from the other two
        t1, t2 = T0 + 2 * S, T0 + 3 * S
        for c in ("front", "right"):
            rp.send(c, *cams[c][:2], t1)
        probe.spin(0.5)
        assert len(probe.poses) == 1                       # waits for "left" within rig.wait_s
        rp.send("front", *cams["front"][:2], t2)
        probe.spin_until(lambda: len(probe.poses) >= 2, 120, "the partial rig pose", node)
        assert stamp_to_ns(probe.poses[1].header.stamp) == t1
        t, r = _base_error(probe.poses[1], T_map_base)
        assert t < 0.02 and r < 0.2, (t, r)
        probe.wait_diag(r"missing from the rig query|silent: no image for more than", key="camera left", node=node)
        # 3. a camera whose extrinsic is not on TF is left out with the reason, never an identity
        for c in ("left", "right"):
            rp.send(c, *cams[c][:2], t2 + 10_000_000, frame_id="unknown_optical" if c == "right" else "")
        probe.spin_until(lambda: len(probe.poses) >= 3, 120, "the pose without the unknown camera", node)
        t, r = _base_error(probe.poses[2], T_map_base)
        assert t < 0.02 and r < 0.2, (t, r)
        d = probe.wait_diag(r"left out of the rig query: no TF base_link -> unknown_optical", key="camera right",
                            node=node)
        assert node.alive()
    finally:
        probe.close()
        assert node.stop() == 0


def test_rig_mapping_stores_each_camera_as_a_keyframe(tmp_path, rig) -> None:  # type: ignore[no-untyped-def]
    """Mapping with a rig: keyframe_pose is the base's; each camera is stored with its own pose
    (base through its extrinsic), then a rig query localizes against what the rig mapped."""
    _, records, cams, T_map_base = rig
    db = tmp_path / "live.db"
    KeyframeStore.create(db, creator="test rig mapping").close()
    # the rig at three db poses: extrinsics from db views 0000 / 0002 / 0003 around a base
    mapped = [r for r in records if r.name in ("0000.jpg", "0002.jpg", "0003.jpg")]
    T_map_base_kf = mapped[0].T_world_cam @ invert_T(FRONT_MOUNT)
    kf_cams = {c: (*resized_image(r, SIZE), invert_T(T_map_base_kf) @ r.T_world_cam)
               for c, r in zip(CAMERAS, mapped)}
    domain = next_domain_id()
    rp = RigProbe(domain, {c: T for c, (_, _, T) in kf_cams.items()})
    probe = rp.probe
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "base_frame": "base_link",
                                          "rig.cameras": "[front, left, right]", "mapping.enabled": True,
                                          "diagnostics_rate_hz": 10.0})
    try:
        rp.wait_for_node(node)
        probe.spin_until(lambda: probe.kf_pub.get_subscription_count() > 0, 30, "keyframe_pose", node)
        for c, (img, intr, _) in kf_cams.items():
            rp.send(c, img, intr, T0)
        probe.send_keyframe_pose(T_map_base_kf, T0)
        probe.wait_diag(r"^3$", key="keyframes_added", node=node, timeout=60)
        with KeyframeStore.open(db, readonly=True) as store:
            names = sorted(store.get_keyframe(i).name for i in store.keyframe_ids())
            poses = store.poses()[1]
        assert names == [f"live_{c}_{T0}" for c in sorted(CAMERAS)], names
        for r in mapped:   # each camera's own pose (base · extrinsic), not the base's
            assert min(pose_error(P, r.T_world_cam)[0] for P in poses) < 1e-6
        assert min(pose_error(P, T_map_base_kf)[0] for P in poses) > 0.3
        # then the rig at a later instant localizes against what it mapped (live re-index)
        for c, (img, intr, _) in kf_cams.items():
            rp.send(c, img, intr, T0 + 5 * S)
        probe.spin_until(lambda: probe.poses, 120, "a rig pose on the live map", node)
        t, r = _base_error(probe.poses[0], T_map_base_kf)
        assert t < 0.01 and r < 0.1, (t, r)
    finally:
        probe.close()
        assert node.stop() == 0
