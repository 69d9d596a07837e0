"""Message <-> numpy conversions at the ROS edge (no cv_bridge).

Everything inside the package is numpy with w-first quaternions; ROS messages carry x-y-z-w
quaternions, nanosecond stamps split in sec/nanosec and row-major 6x6 covariances. The raw-image
decoder works on plain fields so the bag tools (rosbags messages) share it with the node (rclpy).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from ..errors import DataError
from ..geometry import Distortion, Intrinsics, T_from_quat_t, T_to_quat_t, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz
from ..session.input_checks import check_image_size, compressed_header

__all__ = [
    "SUPPORTED_ENCODINGS", "decode_raw_image", "image_to_bgr", "compressed_to_bgr", "bgr_to_image",
    "camera_info_to_intrinsics", "intrinsics_to_camera_info", "stamp_to_ns", "ns_to_stamp",
    "pose_to_T", "T_to_pose", "pose_with_covariance", "transform_stamped", "transform_to_T",
]

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "mono8")
NO_LIMIT = 1 << 62  # max_pixels of the bag tools, which read trusted recordings


def decode_raw_image(encoding: str, height: int, width: int, step: int, data: Any,
                     max_pixels: int = NO_LIMIT) -> np.ndarray:
    """BGR uint8 [H,W,3] from the fields of a sensor_msgs/Image; DataError with the reason.

    The claimed size is checked against ``max_pixels`` and the data length before any copy."""
    enc = encoding.lower()
    if enc not in SUPPORTED_ENCODINGS:
        raise DataError(f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    check_image_size(width, height, max_pixels)
    channels = 1 if enc == "mono8" else 3
    if height <= 0 or width <= 0 or step < width * channels:
        raise DataError(f"invalid image geometry {width}x{height} step {step} for {enc}")
    buf = np.frombuffer(data, np.uint8)
    if buf.size < step * height:
        raise DataError(f"image data has {buf.size} bytes, expected {step * height} ({width}x{height} {enc})")
    rows = buf[: step * height].reshape(height, step)[:, : width * channels]
    img = rows.reshape(height, width, channels)
    if enc == "mono8":
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if enc == "rgb8":
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return img.copy()


def image_to_bgr(msg: Any, max_pixels: int = NO_LIMIT) -> np.ndarray:
    """sensor_msgs/Image -> BGR uint8 [H,W,3]."""
    return decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, max_pixels)


def compressed_to_bgr(msg: Any, max_pixels: int = NO_LIMIT) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> BGR uint8 [H,W,3].

    The format (magic bytes) and size (JPEG SOF / PNG IHDR) are read from the header first, so
    another format or an oversized image is refused without decoding a pixel."""
    fmt, width, height = compressed_header(msg.data)
    check_image_size(width, height, max_pixels, what=f"{fmt} image")
    img = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"compressed image ({msg.format!r}, {len(msg.data)} bytes) does not decode")
    return img


def bgr_to_image(img_bgr: np.ndarray, msg: Any, encoding: str = "bgr8") -> Any:
    """Fill ``msg`` (a sensor_msgs/Image of either rclpy or rosbags) from a BGR image."""
    if encoding == "rgb8":
        img_bgr = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
    elif encoding != "bgr8":
        raise DataError(f"cannot encode to {encoding!r}; use bgr8 or rgb8")
    msg.height, msg.width = int(img_bgr.shape[0]), int(img_bgr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img_bgr.shape[1] * 3)
    msg.data = np.ascontiguousarray(img_bgr).tobytes()  # bytes: ndarray assignment is 300x slower
    return msg


def camera_info_to_intrinsics(msg: Any, image_size: tuple[int, int] | None = None) -> Intrinsics:
    """The camera of a CameraInfo (K, lens distortion, binning, ROI) for an image of
    ``image_size`` (width, height); DataError with the reason if it cannot be used.

    ``distortion_model`` / ``d``: ``plumb_bob``, ``rational_polynomial``, ``equidistant`` (an
    empty or all-zero ``d`` of a polynomial model is a rectified ``image_rect``: pinhole); an
    unknown model, a wrong coefficient count or a non-finite coefficient is refused.
    ``binning_x/y`` and ``roi`` are applied as the driver applied them to the image (K is the
    full-resolution camera's); an image of another size than that, with the same aspect ratio
    within a pixel, was resized downstream: K is scaled to it (pixel-centre convention).
    """
    k = np.asarray(msg.k, float).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DataError(f"camera_info has no valid intrinsics (k = {k.ravel().tolist()})")
    if msg.width <= 0 or msg.height <= 0:
        raise DataError(f"camera_info has no image size ({msg.width}x{msg.height})")
    try:
        distortion = Distortion.from_ros(str(msg.distortion_model), np.asarray(msg.d, float).ravel().tolist())
    except ValueError as err:
        raise DataError(f"camera_info: {err}") from err
    intr = _binned(_roi(Intrinsics.from_K(k, msg.width, msg.height, distortion), msg), msg)
    return intr if image_size is None else _resized(intr, *image_size)


def _roi(intr: Intrinsics, msg: Any) -> Intrinsics:
    """The camera of the CameraInfo's region of interest (all-zero ``roi``: the full image)."""
    roi = getattr(msg, "roi", None)
    if roi is None or (int(roi.width) == 0 and int(roi.height) == 0):
        return intr
    x, y, w, h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    if w <= 0 or h <= 0 or x + w > intr.width or y + h > intr.height:
        raise DataError(f"camera_info roi {w}x{h} at ({x}, {y}) does not lie inside the "
                        f"{intr.width}x{intr.height} camera")
    return Intrinsics(intr.fx, intr.fy, intr.cx - x, intr.cy - y, w, h, intr.distortion)


def _binned(intr: Intrinsics, msg: Any) -> Intrinsics:
    """The camera after the CameraInfo's binning (0 and 1: none); a binned pixel's centre is the
    centre of the block it sums (pixel-centre convention)."""
    bx, by = (max(int(getattr(msg, f"binning_{a}", 0)), 1) for a in "xy")
    if (bx, by) == (1, 1):
        return intr
    if intr.width // bx == 0 or intr.height // by == 0:
        raise DataError(f"camera_info binning {bx}x{by} leaves no pixel of the {intr.width}x{intr.height} image")
    return Intrinsics(intr.fx / bx, intr.fy / by, (intr.cx + 0.5) / bx - 0.5, (intr.cy + 0.5) / by - 0.5,
                      intr.width // bx, intr.height // by, intr.distortion)


def _resized(intr: Intrinsics, width: int, height: int) -> Intrinsics:
    """``intr`` scaled to an image of ``width`` x ``height``; DataError unless that is a resize."""
    if (width, height) == (intr.width, intr.height):
        return intr
    sx, sy = width / intr.width, height / intr.height
    if abs(sx - sy) > 1.0 / min(width, height, intr.width, intr.height):
        raise DataError(f"camera_info is for {intr.width}x{intr.height} but the image is {width}x{height} "
                        "(not a resize: the aspect ratios differ)")
    return intr.scaled(sx, sy)


def intrinsics_to_camera_info(intr: Intrinsics, msg: Any) -> Any:
    """Fill a CameraInfo (rclpy or rosbags): K, and the lens model (``plumb_bob`` with zero D
    for a pinhole camera)."""
    msg.width, msg.height = int(intr.width), int(intr.height)
    d = intr.distortion
    msg.distortion_model = "plumb_bob" if d is None else d.model
    coeffs = [0.0] * 5 if d is None else list(d.coefficients)
    msg.d = np.asarray(coeffs, float) if isinstance(msg.d, np.ndarray) else coeffs
    K = intr.K
    P = np.hstack([K, np.zeros((3, 1))])
    msg.k = K.ravel().astype(float)
    msg.r = np.eye(3).ravel()
    msg.p = P.ravel()
    return msg


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int, msg: Any) -> Any:
    """Fill a builtin_interfaces/Time (rclpy or rosbags) from nanoseconds."""
    msg.sec, msg.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg


def pose_to_T(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4; DataError if not finite or the quaternion has no direction."""
    p, q = pose.position, pose.orientation
    vals = [p.x, p.y, p.z, q.x, q.y, q.z, q.w]
    if not all(math.isfinite(v) for v in vals):
        raise DataError(f"pose is not finite: position ({p.x}, {p.y}, {p.z}), orientation ({q.x}, {q.y}, {q.z}, {q.w})")
    q_wxyz = quat_xyzw_to_wxyz([q.x, q.y, q.z, q.w])
    n = float(np.linalg.norm(q_wxyz))
    if n < 1e-6:
        raise DataError("pose quaternion is zero (0, 0, 0, 0): no orientation given; identity is (0, 0, 0, 1)")
    if abs(n - 1.0) > 1e-2:
        raise DataError(f"pose quaternion is not unit length (norm {n:.4f})")
    return T_from_quat_t(q_wxyz, [p.x, p.y, p.z])


def T_to_pose(T: np.ndarray, pose: Any) -> Any:
    """Fill a geometry_msgs/Pose from a 4x4 rigid transform."""
    q_wxyz, t = T_to_quat_t(T)
    x, y, z, w = quat_wxyz_to_xyzw(q_wxyz)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = float(x), float(y), float(z), float(w)
    return pose


def pose_with_covariance(T_map_cam: np.ndarray, covariance: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """geometry_msgs/PoseWithCovarianceStamped (rclpy) for a camera pose in ``frame_id``."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    msg = PoseWithCovarianceStamped()
    msg.header.frame_id = frame_id
    ns_to_stamp(stamp_ns, msg.header.stamp)
    T_to_pose(T_map_cam, msg.pose.pose)
    msg.pose.covariance = np.asarray(covariance, float).reshape(36)
    return msg


def transform_stamped(T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> Any:
    """geometry_msgs/TransformStamped (rclpy) parent <- child."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    ns_to_stamp(stamp_ns, msg.header.stamp)
    q_wxyz, t = T_to_quat_t(T_parent_child)
    x, y, z, w = quat_wxyz_to_xyzw(q_wxyz)
    tr = msg.transform
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in t)
    tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = float(x), float(y), float(z), float(w)
    return msg


def transform_to_T(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    t, q = transform.translation, transform.rotation
    return T_from_quat_t(quat_xyzw_to_wxyz([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])
