"""rosbag2 files without ROS (rosbags): posed image folders to bags, and bags back to messages.

A bag written here is one bare ``.mcap`` file (the rosbag2 metadata record is inside it) holding
``/camera/image_raw`` (sensor_msgs/Image bgr8, or CompressedImage on ``.../compressed``),
``/camera/camera_info`` and ``/ground_truth/pose`` (geometry_msgs/PoseStamped of the camera
optical frame in ``map``), all with the same header stamp per image. Messages are CDR, so the
bytes can be published as-is by rclpy (``publisher.publish(raw)``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..distro import rosbags_store
from ..errors import DataError
from ..geometry import T_to_quat_t, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz, T_from_quat_t
from .posed_folder import load_image, read_posed_folder

__all__ = ["IMAGE_TOPIC", "COMPRESSED_TOPIC", "INFO_TOPIC", "GT_TOPIC", "BagMessage", "write_bag_from_folder",
           "read_bag", "ground_truth_from_bag", "typestore"]

logger = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/pose"
IMAGE_T = "sensor_msgs/msg/Image"
COMPRESSED_T = "sensor_msgs/msg/CompressedImage"
INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_T = "geometry_msgs/msg/PoseStamped"
START_NS = 1_700_000_000 * 1_000_000_000  # a fixed, plausible epoch so bags are reproducible


def typestore():
    """The type store of the running ROS 2 distribution (its type hashes equal the wheels')."""
    from rosbags.typesys import get_typestore

    return get_typestore(rosbags_store())


@dataclass(frozen=True)
class BagMessage:
    """One message: topic, ROS type name, receive time (ns), raw CDR bytes."""

    topic: str
    msgtype: str
    t_ns: int
    raw: bytes


def _header(ts, stamp_ns: int, frame_id: str):
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def _image_msg(ts, img: np.ndarray, stamp_ns: int, frame_id: str, compressed: bool):
    if compressed:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise DataError("cannot JPEG-encode image")
        return ts.types[COMPRESSED_T](header=_header(ts, stamp_ns, frame_id), format="jpeg",
                                      data=np.frombuffer(buf.tobytes(), np.uint8))
    h, w = img.shape[:2]
    return ts.types[IMAGE_T](header=_header(ts, stamp_ns, frame_id), height=h, width=w, encoding="bgr8",
                             is_bigendian=0, step=w * 3, data=np.ascontiguousarray(img).reshape(-1))


def _info_msg(ts, intr, stamp_ns: int, frame_id: str):
    ROI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    K = intr.K
    P = np.hstack([K, np.zeros((3, 1))])
    return ts.types[INFO_T](header=_header(ts, stamp_ns, frame_id), height=intr.height, width=intr.width,
                            distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                            p=P.reshape(-1), binning_x=0, binning_y=0,
                            roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _pose_msg(ts, T: np.ndarray, stamp_ns: int, frame_id: str):
    gm = "geometry_msgs/msg/"
    q_wxyz, t = T_to_quat_t(T)
    x, y, z, w = quat_wxyz_to_xyzw(q_wxyz)
    pose = ts.types[gm + "Pose"](position=ts.types[gm + "Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                 orientation=ts.types[gm + "Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
    return ts.types[POSE_T](header=_header(ts, stamp_ns, frame_id), pose=pose)


def write_bag_from_folder(folder: Path | str, out: Path | str, split: str | None = "query", fps: float = 2.0,
                          max_side: int | None = None, compressed: bool = False, camera_frame: str = "camera",
                          map_frame: str = "map", overwrite: bool = False) -> Path:
    """Write the ``split`` images of a posed folder as a bag at ``out`` (one ``.mcap`` file).

    Images are stamped ``1/fps`` apart in sorted name order; ``max_side`` downsizes (intrinsics
    scaled to match). Returns ``out``. Refuses to replace ``out`` unless ``overwrite``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    if fps <= 0:
        raise DataError(f"fps must be > 0, got {fps}")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it")
    records = read_posed_folder(folder, split)
    if not records:
        raise DataError(f"{folder}: no images in split {split!r}")
    ts = typestore()
    period_ns = int(round(1e9 / fps))
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        bag_dir = Path(tmp) / out.stem
        with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            img_topic, img_type = (COMPRESSED_TOPIC, COMPRESSED_T) if compressed else (IMAGE_TOPIC, IMAGE_T)
            c_img = writer.add_connection(img_topic, img_type, typestore=ts)
            c_info = writer.add_connection(INFO_TOPIC, INFO_T, typestore=ts)
            c_gt = writer.add_connection(GT_TOPIC, POSE_T, typestore=ts)
            for i, rec in enumerate(records):
                img, intr = load_image(rec.path), rec.intrinsics
                scale = min(1.0, max_side / max(img.shape[:2])) if max_side else 1.0
                if scale < 1.0:
                    intr = intr.scaled(scale)
                    img = cv2.resize(img, (intr.width, intr.height), interpolation=cv2.INTER_AREA)
                stamp = START_NS + i * period_ns
                writer.write(c_img, stamp, ts.serialize_cdr(_image_msg(ts, img, stamp, camera_frame, compressed), img_type))
                writer.write(c_info, stamp, ts.serialize_cdr(_info_msg(ts, intr, stamp, camera_frame), INFO_T))
                writer.write(c_gt, stamp, ts.serialize_cdr(_pose_msg(ts, rec.T_world_cam, stamp, map_frame), POSE_T))
        files = list(bag_dir.glob("*.mcap"))
        if len(files) != 1:
            raise DataError(f"rosbags wrote {files} in {bag_dir}, expected one .mcap")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            shutil.rmtree(out)
        shutil.move(str(files[0]), out)
    logger.info("wrote %d images of %s (split=%s) to %s", len(records), folder, split, out)
    return out


def read_bag(path: Path | str, topics: set[str] | None = None) -> Iterator[BagMessage]:
    """Messages of a bag (a ``.mcap`` file or a rosbag2 directory) in time order."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise DataError(f"bag not found: {path}")
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:  # rosbags reads *every* connection when given an empty list
                return
            for conn, t_ns, raw in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw))
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - rosbags raises its own ReaderError and OSErrors
        raise DataError(f"cannot read bag {path}: {err}") from err


def ground_truth_from_bag(path: Path | str, topic: str = GT_TOPIC) -> dict[int, np.ndarray]:
    """``{header stamp ns: T_world_cam}`` from the ground-truth PoseStamped topic."""
    ts = typestore()
    gt: dict[int, np.ndarray] = {}
    for m in read_bag(path, {topic}):
        msg = ts.deserialize_cdr(m.raw, m.msgtype)
        p, q = msg.pose.position, msg.pose.orientation
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        gt[stamp] = T_from_quat_t(quat_xyzw_to_wxyz([q.x, q.y, q.z, q.w]), [p.x, p.y, p.z])
    if not gt:
        raise DataError(f"{path}: no ground truth on {topic}")
    return gt
