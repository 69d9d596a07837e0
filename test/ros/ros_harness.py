"""Real-process harness for node tests: the node in a child process, a probe node in this one.

Each test gets its own ROS domain (50 + 10*xdist worker + counter, within 0..101 and away from
the 40/41 bases conftest uses), so parallel workers and consecutive tests never hear each other.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reloc_vggt_ros.dds import localhost_env

_counter = itertools.count()


def next_domain_id() -> int:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    return 50 + 10 * (worker % 5) + next(_counter) % 10


class NodeProcess:
    """``python -m reloc_vggt_ros.ros.node`` with parameters, on a private domain; log to a file.

    ``base_frame`` defaults to '' (the camera pose is published): the test images come from
    cameras without a robot; tests of the base frame set it and publish the extrinsic on TF."""

    def __init__(self, tmp_path: Path, domain_id: int, params: dict[str, Any], name: str = "node") -> None:
        self.log_path = tmp_path / f"{name}.log"
        cmd = [sys.executable, "-m", "reloc_vggt_ros.ros.node", "--ros-args"]
        for k, v in {"base_frame": "''", **params}.items():
            cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        env = localhost_env()
        env["ROS_DOMAIN_ID"] = str(domain_id)
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"node ignored signal {sig} for {timeout} s; log:\n{self.log()}")
        self._log.close()
        return self.proc.returncode


class Probe:
    """A test-side rclpy node: publishes camera/keyframe/prior topics, records node outputs."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from reloc_vggt_ros.ros.qos import DIAGNOSTICS_QOS, KEYFRAME_POSE_QOS, POSE_QOS, TF_QOS

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        from sensor_msgs.msg import CompressedImage

        self.image_pub = self.node.create_publisher(Image, "image", reliable)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "image/compressed", reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.kf_pub = self.node.create_publisher(PoseStamped, "keyframe_pose", KEYFRAME_POSE_QOS)
        self.prior_pub = self.node.create_publisher(PoseWithCovarianceStamped, "initialpose", POSE_QOS)
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.poses: list[Any] = []
        self.diags: list[dict[str, str]] = []
        self.diag_messages: list[str] = []
        self.tf: list[Any] = []
        self.node.create_subscription(PoseWithCovarianceStamped, "/relocalized_pose", self.poses.append, POSE_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DIAGNOSTICS_QOS)
        self.node.create_subscription(TFMessage, "/tf", lambda m: self.tf.extend(m.transforms), TF_QOS)

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if st.name.startswith("reloc_vggt_node"):
                self.diags.append({kv.key: kv.value for kv in st.values})
                self.diag_messages.append(st.message)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(end - time.monotonic(), 0)))

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str, node: NodeProcess | None = None) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if node is not None and not node.alive():
                raise AssertionError(f"node died while waiting for {what}; log:\n{node.log()}")
            self.executor.spin_once(timeout_sec=0.01)
        last = self.diags[-1] if self.diags else "no diagnostics"
        log = node.log()[-3000:] if node is not None else ""
        raise AssertionError(f"timeout after {timeout} s waiting for {what}; last diagnostics: {last}\n{log}")

    def wait_for_node(self, node: NodeProcess, timeout: float = 60.0, compressed: bool = False) -> None:
        """Until the node's image subscription is matched (i.e. it is active)."""
        pub = self.compressed_pub if compressed else self.image_pub
        self.spin_until(lambda: pub.get_subscription_count() > 0
                        and self.info_pub.get_subscription_count() > 0, timeout, "the node to activate", node)
        self.spin(1.0)  # the node's best-effort readers must match our writers too, or data is dropped

    def wait_diag(self, pattern: str, key: str = "last_reason", timeout: float = 20.0,
                  node: NodeProcess | None = None) -> dict[str, str]:
        rx = re.compile(pattern)
        start = len(self.diags)
        self.spin_until(lambda: any(rx.search(d.get(key, "")) for d in self.diags[start:]), timeout,
                        f"diagnostics {key} ~ {pattern!r}", node)
        return next(d for d in self.diags[start:] if rx.search(d.get(key, "")))

    def send_frame(self, image_bgr: np.ndarray, intrinsics: Any, stamp_ns: int, frame_id: str = "camera",
                   encoding: str = "bgr8", info: bool = True, compressed: bool = False) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp

        if info:
            cam = intrinsics_to_camera_info(intrinsics, CameraInfo())
            cam.header.frame_id = frame_id
            ns_to_stamp(stamp_ns, cam.header.stamp)
            self.info_pub.publish(cam)
        if compressed:
            import cv2
            from sensor_msgs.msg import CompressedImage

            msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", image_bgr)[1].tobytes())
            msg.header.frame_id = frame_id
            ns_to_stamp(stamp_ns, msg.header.stamp)
            self.compressed_pub.publish(msg)
            return
        img = bgr_to_image(image_bgr, Image())
        if encoding != "bgr8":
            img.encoding = encoding
        img.header.frame_id = frame_id
        ns_to_stamp(stamp_ns, img.header.stamp)
        self.image_pub.publish(img)

    def send_keyframe_pose(self, T_map_cam: np.ndarray, stamp_ns: int, frame_id: str = "map",
                           nan: bool = False) -> None:
        from geometry_msgs.msg import PoseStamped

        from reloc_vggt_ros.ros.convert import T_to_pose, ns_to_stamp

        msg = PoseStamped()
        msg.header.frame_id = frame_id
        ns_to_stamp(stamp_ns, msg.header.stamp)
        T_to_pose(T_map_cam, msg.pose)
        if nan:
            msg.pose.position.x = float("nan")
        self.kf_pub.publish(msg)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
