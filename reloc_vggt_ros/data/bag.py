"""rosbag2 files without ROS (rosbags): posed image folders to bags, and bags back to messages.

A bag written here is one bare ``.mcap`` file (the rosbag2 metadata record is inside it) holding
``/camera/image_raw`` (sensor_msgs/Image bgr8, or CompressedImage on ``.../compressed``),
``/camera/camera_info`` and ``/ground_truth/pose`` (geometry_msgs/PoseStamped of the camera
optical frame in ``map``), all with the same header stamp per image. Messages are CDR, so the
bytes can be published as-is by rclpy (``publisher.publish(raw)``).

A robot-style bag (:class:`RobotBag`) carries the camera on a base as a robot records it:
``/tf_static`` base_link -> camera (the mount), ``/tf`` odom -> base_link at ``tf_rate_hz`` from
odometry that drifts away from the truth (map -> odom grows by ``drift_m_per_s`` and
``drift_deg_per_s``), and ``/ground_truth/pose`` is then the base pose in ``map``; the base
trajectory is the images' camera poses through the mount.
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
from ..geometry import (Distortion, Intrinsics, T_to_quat_t, camera_mount, interpolate_T, invert_T, make_T,
                        quat_wxyz_to_xyzw, quat_xyzw_to_wxyz, so3_exp, T_from_quat_t)
from .distort import distort_image
from .posed_folder import load_image, read_posed_folder

__all__ = ["IMAGE_TOPIC", "COMPRESSED_TOPIC", "INFO_TOPIC", "GT_TOPIC", "TF_TOPIC", "TF_STATIC_TOPIC", "BagMessage",
           "RobotBag", "write_bag_from_folder", "read_bag", "ground_truth_from_bag", "has_topic", "typestore"]

logger = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/pose"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
TF_T = "tf2_msgs/msg/TFMessage"
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
    """CameraInfo of ``intr`` (K and its lens model, as the node reads them)."""
    from ..ros.convert import intrinsics_to_camera_info

    ROI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    msg = ts.types[INFO_T](header=_header(ts, stamp_ns, frame_id), height=0, width=0, distortion_model="",
                           d=np.zeros(0), k=np.zeros(9), r=np.zeros(9), p=np.zeros(12), binning_x=0, binning_y=0,
                           roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    return intrinsics_to_camera_info(intr, msg)


def _pose_msg(ts, T: np.ndarray, stamp_ns: int, frame_id: str):
    gm = "geometry_msgs/msg/"
    q_wxyz, t = T_to_quat_t(T)
    x, y, z, w = quat_wxyz_to_xyzw(q_wxyz)
    pose = ts.types[gm + "Pose"](position=ts.types[gm + "Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                 orientation=ts.types[gm + "Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
    return ts.types[POSE_T](header=_header(ts, stamp_ns, frame_id), pose=pose)


def _tf_msg(ts, transforms: list[tuple[np.ndarray, int, str, str]]):
    """tf2_msgs/TFMessage of ``(T_parent_child, stamp_ns, parent, child)`` entries."""
    gm = "geometry_msgs/msg/"
    out = []
    for T, stamp_ns, parent, child in transforms:
        q_wxyz, t = T_to_quat_t(T)
        x, y, z, w = quat_wxyz_to_xyzw(q_wxyz)
        tr = ts.types[gm + "Transform"](translation=ts.types[gm + "Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                        rotation=ts.types[gm + "Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))
        out.append(ts.types[gm + "TransformStamped"](header=_header(ts, stamp_ns, parent), child_frame_id=child,
                                                     transform=tr))
    return ts.types[TF_T](transforms=out)


@dataclass(frozen=True)
class RobotBag:
    """How ``bag from-images --robot`` mounts the camera on a base and makes its odometry."""

    mount_xyz: tuple[float, float, float] = (0.3, 0.0, 1.2)   # base_link -> camera, metres (x fwd, z up)
    mount_pitch_deg: float = 20.0                              # camera pitched down
    drift_m_per_s: float = 0.02                                # odometry drift (map -> odom) ...
    drift_deg_per_s: float = 0.2                               # ... and its yaw drift
    tf_rate_hz: float = 20.0                                   # odom -> base_link samples per second
    base_frame: str = "base_link"
    odom_frame: str = "odom"

    def __post_init__(self) -> None:
        if not self.tf_rate_hz > 0:
            raise DataError(f"tf_rate_hz must be > 0, got {self.tf_rate_hz}")
        if not all(np.isfinite([*self.mount_xyz, self.mount_pitch_deg, self.drift_m_per_s, self.drift_deg_per_s])):
            raise DataError("robot bag mount and drift must be finite")

    @property
    def T_base_cam(self) -> np.ndarray:
        return camera_mount(np.asarray(self.mount_xyz, float), pitch_deg=self.mount_pitch_deg)

    def T_map_odom(self, t_s: float) -> np.ndarray:
        """The odometry's accumulated error ``t_s`` seconds into the bag (identity at 0)."""
        d = self.drift_m_per_s * t_s
        return make_T(so3_exp(np.array([0.0, 0.0, np.radians(self.drift_deg_per_s * t_s)])), np.array([d, 0.5 * d, 0.0]))


def _odometry(robot: RobotBag, stamps: list[int], T_map_base: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """odom -> base samples at ``tf_rate_hz`` and at every image stamp, the base moving linearly
    (geodesic in rotation) between consecutive images."""
    step = int(round(1e9 / robot.tf_rate_hz))
    grid = sorted(set(range(stamps[0], stamps[-1] + 1, step)) | set(stamps))
    out = []
    for s in grid:
        i = max(0, min(int(np.searchsorted(stamps, s, side="right")) - 1, len(stamps) - 2))
        if len(stamps) == 1:
            T = T_map_base[0]
        else:
            alpha = min(max((s - stamps[i]) / (stamps[i + 1] - stamps[i]), 0.0), 1.0)
            T = interpolate_T(T_map_base[i], T_map_base[i + 1], alpha)
        out.append((s, invert_T(robot.T_map_odom((s - stamps[0]) / 1e9)) @ T))
    return out


def write_bag_from_folder(folder: Path | str, out: Path | str, split: str | None = "query", fps: float = 2.0,
                          max_side: int | None = None, compressed: bool = False, camera_frame: str = "camera",
                          map_frame: str = "map", overwrite: bool = False, robot: RobotBag | None = None,
                          distortion: Distortion | None = None) -> Path:
    """Write the ``split`` images of a posed folder as a bag at ``out`` (one ``.mcap`` file).

    Images are stamped ``1/fps`` apart in sorted name order; ``max_side`` downsizes (intrinsics
    scaled to match). With ``robot`` the bag is robot-style (module doc). ``distortion`` shows
    the (pinhole) images through that lens (``data.distort``), CameraInfo carrying its model and
    coefficients; a distorted folder's own lens is written as it is. Returns ``out``. Refuses
    to replace ``out`` unless ``overwrite``.
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
            stamps = [START_NS + i * period_ns for i in range(len(records))]
            if robot is not None:
                _write_robot_tf(writer, ts, robot, stamps, [r.T_world_cam for r in records], camera_frame)
            for i, rec in enumerate(records):
                img, intr = load_image(rec.path), rec.intrinsics
                scale = min(1.0, max_side / max(img.shape[:2])) if max_side else 1.0
                if scale < 1.0:
                    intr = intr.scaled(scale)
                    img = cv2.resize(img, (intr.width, intr.height), interpolation=cv2.INTER_AREA)
                if distortion is not None:
                    if intr.distortion is not None:
                        raise DataError(f"{folder} is already distorted ({intr.distortion.model}): no second lens")
                    intr = Intrinsics(intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height, distortion)
                    img = distort_image(img, intr)
                stamp = START_NS + i * period_ns
                writer.write(c_img, stamp, ts.serialize_cdr(_image_msg(ts, img, stamp, camera_frame, compressed), img_type))
                writer.write(c_info, stamp, ts.serialize_cdr(_info_msg(ts, intr, stamp, camera_frame), INFO_T))
                T_gt = rec.T_world_cam if robot is None else rec.T_world_cam @ invert_T(robot.T_base_cam)
                writer.write(c_gt, stamp, ts.serialize_cdr(_pose_msg(ts, T_gt, stamp, map_frame), POSE_T))
        files = list(bag_dir.glob("*.mcap"))
        if len(files) != 1:
            raise DataError(f"rosbags wrote {files} in {bag_dir}, expected one .mcap")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            shutil.rmtree(out)
        shutil.move(str(files[0]), out)
    logger.info("wrote %d images of %s (split=%s) to %s", len(records), folder, split, out)
    return out


def _write_robot_tf(writer, ts, robot: RobotBag, stamps: list[int], T_map_cams: list[np.ndarray],
                    camera_frame: str) -> None:
    """/tf_static (the mount, first in the bag; recorded as offered transient local, as a static
    broadcaster offers it, so ``ros2 bag play`` latches it too) and /tf odom -> base_link."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                  QosLiveliness.AUTOMATIC, zero, False)
    c_static = writer.add_connection(TF_STATIC_TOPIC, TF_T, typestore=ts, offered_qos_profiles=[latched])
    c_tf = writer.add_connection(TF_TOPIC, TF_T, typestore=ts)
    first = stamps[0] - 1  # before anything else: a player publishes the static tree first
    writer.write(c_static, first, ts.serialize_cdr(
        _tf_msg(ts, [(robot.T_base_cam, stamps[0], robot.base_frame, camera_frame)]), TF_T))
    T_map_base = [T @ invert_T(robot.T_base_cam) for T in T_map_cams]
    for s, T_odom_base in _odometry(robot, stamps, T_map_base):
        writer.write(c_tf, s, ts.serialize_cdr(_tf_msg(ts, [(T_odom_base, s, robot.odom_frame, robot.base_frame)]), TF_T))


def has_topic(path: Path | str, topic: str) -> bool:
    """True if the bag holds at least one message on ``topic``."""
    return next(iter(read_bag(path, {topic})), None) is not None


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
