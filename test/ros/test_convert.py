"""Message conversions on a real image: encodings, camera_info, poses, covariance checks."""

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from geometry_msgs.msg import Pose  # noqa: E402

from reloc_vggt_ros.errors import DataError  # noqa: E402
from reloc_vggt_ros.geometry import Intrinsics, make_T, so3_exp  # noqa: E402
from reloc_vggt_ros.ros.convert import (bgr_to_image, camera_info_to_intrinsics, compressed_to_bgr,  # noqa: E402
                                        decode_raw_image, image_to_bgr,
                                        intrinsics_to_camera_info, ns_to_stamp, pose_to_T,
                                        pose_with_covariance, stamp_to_ns, T_to_pose)
from reloc_vggt_ros.session import covariance_problems, sanitize_covariance  # noqa: E402

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
IMAGE = DATA / "middlebury-temple-ring" / "images" / "templeR0001.jpg"


@pytest.fixture(scope="module")
def bgr() -> np.ndarray:
    img = cv2.imread(str(IMAGE))
    assert img is not None and img.shape == (480, 640, 3)
    return img


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8"])
def test_image_round_trip_is_exact(bgr, encoding):
    msg = bgr_to_image(bgr, Image(), encoding)
    assert isinstance(msg.data, (bytes, bytearray)) or len(msg.data) == bgr.size
    assert (msg.width, msg.height, msg.step) == (640, 480, 1920)
    np.testing.assert_array_equal(image_to_bgr(msg), bgr)


def test_mono8_and_padded_rows(bgr):
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    padded = np.zeros((480, 648), np.uint8)
    padded[:, :640] = grey
    out = decode_raw_image("mono8", 480, 640, 648, padded.tobytes())
    assert out.shape == (480, 640, 3)
    np.testing.assert_array_equal(out[:, :, 0], grey)


@pytest.mark.parametrize("encoding", ["16UC1", "bayer_rggb8", "yuv422", "32FC1"])
def test_unsupported_encoding_names_itself(encoding):
    with pytest.raises(DataError, match=f"unsupported image encoding '{encoding}'.*rgb8, bgr8, mono8"):
        decode_raw_image(encoding, 4, 4, 8, bytes(32))


def test_truncated_image_data_is_rejected(bgr):
    msg = bgr_to_image(bgr, Image())
    msg.data = bytes(msg.data)[:1000]
    with pytest.raises(DataError, match="1000 bytes, expected 921600"):
        image_to_bgr(msg)


def test_compressed_image(bgr):
    msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", bgr)[1].tobytes())
    out = compressed_to_bgr(msg)
    assert out.shape == bgr.shape
    assert np.abs(out.astype(int) - bgr).mean() < 3.0  # JPEG round trip of a real photo
    with pytest.raises(DataError, match="does not decode"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"not a jpeg"))


def test_camera_info_round_trip_and_unset_k():
    intr = Intrinsics(1520.4, 1525.9, 302.32, 246.87, 640, 480)
    assert camera_info_to_intrinsics(intrinsics_to_camera_info(intr, CameraInfo())) == intr
    with pytest.raises(DataError, match="no valid intrinsics"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))


def test_stamp_and_pose_round_trip():
    from builtin_interfaces.msg import Time

    assert stamp_to_ns(ns_to_stamp(1_700_000_001_250_000_000, Time())) == 1_700_000_001_250_000_000
    T = make_T(so3_exp(np.array([0.3, -1.2, 2.0])), np.array([1.5, -2.0, 0.25]))
    np.testing.assert_allclose(pose_to_T(T_to_pose(T, Pose())), T, atol=1e-12)
    bad = T_to_pose(T, Pose())
    bad.position.x = float("nan")
    with pytest.raises(DataError, match="not finite"):
        pose_to_T(bad)


def test_node_pose_message_passes_robot_localization_checks():
    """What the node publishes: sanitized backend covariance in frame map, xyzw quaternion."""
    T = make_T(so3_exp(np.array([0.1, 0.2, -0.3])), np.array([0.5, 1.0, 2.0]))
    backend_cov = np.diag([4e-4, 9e-4, 1e-3, 1e-4, 2e-4, 3e-4])
    backend_cov[0, 1] = backend_cov[1, 0] = 1e-4 + 1e-12   # slightly asymmetric, as numerics produce
    cov = sanitize_covariance(backend_cov, 1e-6, 1e-6)
    msg = pose_with_covariance(T, cov, 1_700_000_000_000_000_000, "map")
    assert msg.header.frame_id == "map"
    assert covariance_problems(msg.pose.covariance, msg.header.frame_id) == []
    q = msg.pose.pose.orientation
    assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1) < 1e-9
    np.testing.assert_allclose(pose_to_T(msg.pose.pose), T, atol=1e-9)


def test_covariance_checks_catch_what_robot_localization_rejects():
    good = np.diag([1e-3] * 6)
    assert covariance_problems(good.ravel(), "odom") == ["frame_id 'odom' is not 'map'"]
    assert "non-positive variances" in covariance_problems(np.zeros(36), "map")[0]
    asym = good.copy()
    asym[0, 5] = 1e-4
    assert "not symmetric" in covariance_problems(asym.ravel(), "map")[0]
    indefinite = good.copy()
    indefinite[0, 1] = indefinite[1, 0] = 5e-3
    assert covariance_problems(indefinite.ravel(), "map") == ["covariance is not positive definite"]
    nan = good.copy()
    nan[2, 2] = np.nan
    assert covariance_problems(nan.ravel(), "map") == ["covariance has non-finite entries"]
    # the node floors zero variances instead of publishing infinite trust
    floored = sanitize_covariance(np.zeros((6, 6)), 1e-6, 1e-5)
    np.testing.assert_allclose(np.diag(floored), [1e-6] * 3 + [1e-5] * 3)
    with pytest.raises(DataError, match="not finite"):
        sanitize_covariance(nan, 1e-6, 1e-6)
