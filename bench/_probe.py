"""The bench side of a node process: an rclpy node that feeds camera frames and records answers.

Used by the benches that run ``reloc_vggt_node`` in its own process (``bench.soak``,
``bench.kill``): it publishes pre-built Image + CameraInfo messages (and ``keyframe_pose`` in
mapping mode) on a private ROS domain, and records when each pose arrives and the node's latest
``/diagnostics`` values. ``reloc_vggt_ros.dds.ensure_localhost_dds()`` must have run first.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["BenchProbe", "FrameMessages", "frame_messages"]


class FrameMessages:
    """One camera frame as ROS messages, built once and re-stamped for every publish."""

    def __init__(self, image: Any, info: Any, T_world_cam: np.ndarray) -> None:
        self.image, self.info, self.T_world_cam = image, info, T_world_cam


def frame_messages(paths_intrinsics_poses: list[tuple[Path, Any, np.ndarray]]) -> list[FrameMessages]:
    """bgr8 Image + CameraInfo (frame ``camera``) for each (image file, Intrinsics, T_world_cam)."""
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info

    out = []
    for path, intr, T in paths_intrinsics_poses:
        image = bgr_to_image(cv2.imread(str(path)), Image())
        info = intrinsics_to_camera_info(intr, CameraInfo())
        image.header.frame_id = info.header.frame_id = "camera"
        out.append(FrameMessages(image, info, np.asarray(T, float)))
    return out


class BenchProbe:
    """Publishers for ``image``, ``camera_info``, ``keyframe_pose``; ``/relocalized_pose`` arrival
    times (``answered``: stamp -> monotonic s) and the latest ``/diagnostics`` values (``diag``)."""

    def __init__(self, domain_id: int, name: str = "bench_probe") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from reloc_vggt_ros.ros.executor import make_executor
        from reloc_vggt_ros.ros.qos import DIAGNOSTICS_QOS, KEYFRAME_POSE_QOS, POSE_QOS

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.kf_pub = self.node.create_publisher(PoseStamped, "keyframe_pose", KEYFRAME_POSE_QOS)
        self.answered: dict[int, float] = {}
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.node.create_subscription(PoseWithCovarianceStamped, "/relocalized_pose", self._on_pose, POSE_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)

    def _on_pose(self, msg: Any) -> None:
        from reloc_vggt_ros.ros.convert import stamp_to_ns

        self.answered.setdefault(stamp_to_ns(msg.header.stamp), time.monotonic())

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("reloc_vggt_node"):
                self.diag = {kv.key: kv.value for kv in status.values}
                self.diag_count += 1

    def counter(self, key: str) -> int:
        """An integer value of the latest diagnostics (0 before the first)."""
        return int(self.diag.get(key, 0))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(left, 0.005))

    def wait_for_node(self, proc: subprocess.Popen, timeout_s: float, log: Path, keyframes: bool = False) -> None:
        """Until the node's subscriptions match ours (it is active); RuntimeError if it exits."""
        end = time.monotonic() + timeout_s
        pubs = [self.image_pub, self.info_pub] + ([self.kf_pub] if keyframes else [])
        while not all(p.get_subscription_count() > 0 for p in pubs):
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with code {proc.returncode}; see {log}")
            if time.monotonic() > end:
                raise RuntimeError(f"node did not activate within {timeout_s:.0f} s; see {log}")
            self.spin(0.05)
        self.spin(0.5)  # its best-effort readers must match our writers too, or data is dropped

    def publish_frame(self, frame: FrameMessages, stamp_ns: int) -> None:
        from reloc_vggt_ros.ros.convert import ns_to_stamp

        ns_to_stamp(stamp_ns, frame.info.header.stamp)
        ns_to_stamp(stamp_ns, frame.image.header.stamp)
        self.info_pub.publish(frame.info)
        self.image_pub.publish(frame.image)

    def publish_keyframe_pose(self, T_map_cam: np.ndarray, stamp_ns: int) -> None:
        from geometry_msgs.msg import PoseStamped

        from reloc_vggt_ros.ros.convert import T_to_pose, ns_to_stamp

        msg = PoseStamped()
        msg.header.frame_id = "map"
        ns_to_stamp(stamp_ns, msg.header.stamp)
        T_to_pose(T_map_cam, msg.pose)
        self.kf_pub.publish(msg)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
