"""Hostile topics: what the node does with each (docs/ros.md, "Hostile input").

    .venv/bin/python -m bench.hostile_topics [--json bench/results/hostile_topics.json]

Runs the node in this process (rclpy, no DDS traffic: messages go straight to its callbacks and
worker-side handler, as the subscriptions would deliver them) against a 3-keyframe fountain
database and feeds one hostile message per case: a raw Image whose fields say 10,000 x 10,000,
a JPEG whose SOF says so, BMP bytes as a CompressedImage, zero and 1 h-ahead stamps, 1,000
camera_info without an image, /initialpose with NaN or a zero quaternion, a keyframe_pose in
another frame. Each row is the reason the node shows in /diagnostics (``key`` names the field),
then a good image must still be localized. The real-process version of the same sequence is
``test/ros/test_hostile_topics.py``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SAMPLE = Path(__file__).parents[1] / "sample" / "fountain-P11-small"
S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S
MAX_SIDE = 320


def jpeg_claiming(img: np.ndarray, width: int, height: int) -> bytes:
    """A real JPEG of ``img`` whose SOF0 says ``width x height`` (a lying or broken encoder)."""
    buf = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    sof = buf.index(b"\xff\xc0")
    buf[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(buf)


def initialpose(x: float = 0.0, quat: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0)) -> Any:
    """A /initialpose in map at ``(x, 0, 0)`` with orientation ``quat`` (x, y, z, w)."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    msg = PoseWithCovarianceStamped()
    msg.header.frame_id = "map"
    msg.pose.pose.position.x = x
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = quat
    return msg


def build_scene(folder: Path) -> tuple[Path, np.ndarray, Any, np.ndarray]:
    """3 fountain keyframes at 320 px (geometric index) and the held-out query 0001.jpg."""
    from reloc_vggt_ros.data.posed_folder import read_posed_folder
    from reloc_vggt_ros.keyframes import KeyframeStore
    from reloc_vggt_ros.keyframes.build import keyframe_from_posed
    from reloc_vggt_ros.localizer.registry import index_database

    recs = {r.name: r for r in read_posed_folder(SAMPLE)}
    db = folder / "fountain3.db"
    with KeyframeStore.create(db, creator="bench") as store:
        store.add_keyframes([keyframe_from_posed(recs[n], MAX_SIDE) for n in ("0000.jpg", "0002.jpg", "0003.jpg")])
        index_database(store, "geometric")
    q = recs["0001.jpg"]
    img = cv2.imread(str(q.path))
    s = MAX_SIDE / max(img.shape[:2])
    intr = q.intrinsics.scaled(round(img.shape[1] * s) / img.shape[1], round(img.shape[0] * s) / img.shape[0])
    return db, cv2.resize(img, (intr.width, intr.height), interpolation=cv2.INTER_AREA), intr, q.T_world_cam


def run(folder: Path) -> list[dict[str, str]]:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from reloc_vggt_ros.dds import ensure_localhost_dds
    from reloc_vggt_ros.ros.convert import T_to_pose, bgr_to_image, intrinsics_to_camera_info, ns_to_stamp
    from reloc_vggt_ros.ros.node import RelocNode, _Frame

    db, img, intr, T_gt = build_scene(folder)

    def info(stamp: int) -> Any:
        msg = intrinsics_to_camera_info(intr, CameraInfo())
        ns_to_stamp(stamp, msg.header.stamp)
        return msg

    def raw(stamp: int, width: int | None = None, height: int | None = None) -> Any:
        msg = bgr_to_image(img, Image())
        if width:
            msg.width, msg.height, msg.step = width, height, width * 3
        msg.header.frame_id = "camera"
        ns_to_stamp(stamp, msg.header.stamp)
        return msg

    def compressed(data: bytes, stamp: int) -> Any:
        msg = CompressedImage(format="jpeg", data=data)
        msg.header.frame_id = "camera"
        ns_to_stamp(stamp, msg.header.stamp)
        return msg

    def keyframe_pose(frame_id: str, stamp: int) -> Any:
        msg = PoseStamped()
        msg.header.frame_id = frame_id
        ns_to_stamp(stamp, msg.header.stamp)
        T_to_pose(T_gt, msg.pose)
        return msg

    ensure_localhost_dds()
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "mapping.enabled:=true", "-p", "autostart:=false"])
    rows: list[dict[str, str]] = []
    try:
        node = RelocNode(context=context, parameter_overrides=[Parameter("database_path", value=str(db)),
                                                               Parameter("base_frame", value="")])  # camera pose
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.stats.last_reason
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        now = node.get_clock().now().nanoseconds

        def frame(image: Any, stamp: int) -> None:
            node._handle_frame(_Frame(stamp, image, info(stamp), time.monotonic()))

        def flood() -> None:
            for k in range(1000):
                node.camera_info_callback(info(T0 + 2 * S + k * MS))
            assert node._image_sync.pending()[1] <= node._image_sync.depth

        cases = [
            ("raw Image 10000x10000", "last_reason", lambda: frame(raw(T0 + S, 10_000, 10_000), T0 + S)),
            ("CompressedImage jpeg header 10000x10000", "last_reason",
             lambda: frame(compressed(jpeg_claiming(img, 10_000, 10_000), T0 + S), T0 + S)),
            ("CompressedImage BMP bytes", "last_reason",
             lambda: frame(compressed(cv2.imencode(".bmp", img)[1].tobytes(), T0 + S), T0 + S)),
            ("image stamp zero", "last_reason", lambda: node.image_callback(raw(0))),
            ("image stamp 1 h ahead", "last_reason", lambda: node.image_callback(raw(now + 3600 * S))),
            ("1000 camera_info, no image", "last_warning", flood),
            ("initialpose NaN position", "last_warning", lambda: node.initialpose_callback(initialpose(x=float("nan")))),
            ("initialpose zero quaternion", "last_warning",
             lambda: node.initialpose_callback(initialpose(quat=(0.0, 0.0, 0.0, 0.0)))),
            ("keyframe_pose in frame base_link", "last_keyframe_reason",
             lambda: node.keyframe_pose_callback(keyframe_pose("base_link", T0 + 3 * S))),
            ("good image afterwards", "last_reason", lambda: frame(raw(T0 + 4 * S), T0 + 4 * S)),
        ]
        for case, key, send in cases:
            send()
            rows.append({"case": case, "key": key, "reason": str(node.stats.snapshot()[key])})
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(Path(tmp))
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  {r['key']:<20}  {r['reason']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if rows[-1]["reason"] == "localized" else 1


if __name__ == "__main__":
    sys.exit(main())
