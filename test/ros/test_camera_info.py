"""CameraInfo -> camera model: the three ROS lens models, rectified input, binning, ROI, resize, bad input."""

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo  # noqa: E402

from reloc_vggt_ros.errors import DataError  # noqa: E402
from reloc_vggt_ros.geometry import Distortion, Intrinsics  # noqa: E402
from reloc_vggt_ros.ros.convert import camera_info_to_intrinsics, intrinsics_to_camera_info  # noqa: E402

# fountain-P11's camera at half resolution, with a lens of each model
K = (689.87, 691.04, 379.8, 251.3, 768, 512)
LENSES = [Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012)),
          Distortion("rational_polynomial", (0.6, -0.1, 0.0008, -0.0005, 0.01, 0.9, 0.0, 0.02)),
          Distortion("equidistant", (0.02, -0.01, 0.005, -0.001))]


def _info(model: str, d: list[float], **fields) -> CameraInfo:
    msg = intrinsics_to_camera_info(Intrinsics(*K), CameraInfo())
    msg.distortion_model, msg.d = model, d
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("lens", LENSES, ids=lambda d: d.model)
def test_each_model_round_trips_and_projects_like_opencv(lens: Distortion) -> None:
    import cv2

    cam = camera_info_to_intrinsics(intrinsics_to_camera_info(Intrinsics(*K, lens), CameraInfo()))
    assert cam == Intrinsics(*K, lens)
    X = np.random.default_rng(0).uniform([-2, -1.5, 4], [2, 1.5, 8], size=(50, 3))
    if lens.fisheye:
        want = cv2.fisheye.projectPoints(X.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.K, lens.D)[0]
    else:
        want = cv2.projectPoints(X, np.zeros(3), np.zeros(3), cam.K, lens.D)[0]
    np.testing.assert_allclose(cam.project(X), want.reshape(-1, 2), atol=1e-6)
    # undistortion inverts it: ideal pixels are the pinhole projection
    np.testing.assert_allclose(cam.undistort_px(cam.project(X)), cam.pinhole.project(X), atol=1e-6)


def test_rectified_input_is_pinhole() -> None:
    for model, d in (("plumb_bob", [0.0] * 5), ("rational_polynomial", [0.0] * 8), ("", []), ("none", [])):
        assert camera_info_to_intrinsics(_info(model, d)).distortion is None, model
    # a fisheye with zero coefficients is still a fisheye (r = f theta), not a pinhole
    assert camera_info_to_intrinsics(_info("equidistant", [0.0] * 4)).distortion == Distortion("equidistant", (0.0,) * 4)


@pytest.mark.parametrize("model, d, reason", [
    ("kannala_brandt", [0.1, 0.0, 0.0, 0.0], "unknown distortion model 'kannala_brandt' (supported: plumb_bob, "
                                             "rational_polynomial, equidistant"),
    ("plumb_bob", [0.1, 0.0, 0.0, 0.0], "'plumb_bob' takes 5 coefficients, got 4"),
    ("rational_polynomial", [0.1, 0.0, 0.0, 0.0, 0.0], "'rational_polynomial' takes 8 coefficients, got 5"),
    ("equidistant", [0.1, math.nan, 0.0, 0.0], "distortion coefficients must be finite"),
    ("", [0.1, 0.0, 0.0, 0.0, 0.0], "distortion model '' with non-zero coefficients"),
])
def test_bad_distortion_is_refused_with_the_reason(model: str, d: list[float], reason: str) -> None:
    with pytest.raises(DataError) as err:
        camera_info_to_intrinsics(_info(model, d))
    assert str(err.value).startswith("camera_info: ") and reason in str(err.value)


def test_binning_and_roi_are_applied_as_the_driver_applied_them() -> None:
    """A 3D point's pixel in the binned / cropped image follows from its full-resolution pixel."""
    lens = LENSES[0]
    full = Intrinsics(*K, lens)
    X = np.random.default_rng(1).uniform([-0.3, -0.2, 4], [0.3, 0.2, 8], size=(20, 3))
    uv = full.project(X)
    binned = camera_info_to_intrinsics(_info(lens.model, list(lens.coefficients), binning_x=2, binning_y=2))
    assert (binned.width, binned.height) == (384, 256)
    np.testing.assert_allclose(binned.project(X), (uv + 0.5) / 2 - 0.5, atol=1e-6)
    msg = _info(lens.model, list(lens.coefficients), binning_x=2, binning_y=2)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 60, 400, 300
    crop = camera_info_to_intrinsics(msg)
    assert (crop.width, crop.height) == (200, 150)
    np.testing.assert_allclose(crop.project(X), (uv - [100, 60] + 0.5) / 2 - 0.5, atol=1e-6)
    msg.roi.x_offset = 500
    with pytest.raises(DataError, match=r"roi 400x300 at \(500, 60\) does not lie inside the 768x512 camera"):
        camera_info_to_intrinsics(msg)


def test_a_resized_image_rescales_K_another_shape_is_refused() -> None:
    msg = _info("plumb_bob", list(LENSES[0].coefficients))
    cam = camera_info_to_intrinsics(msg)
    assert camera_info_to_intrinsics(msg, (768, 512)) == cam
    half = camera_info_to_intrinsics(msg, (384, 256))
    assert half == cam.scaled(0.5) and half.distortion == cam.distortion
    assert camera_info_to_intrinsics(msg, (320, 213)) == cam.scaled(320 / 768, 213 / 512)   # rounded resize
    with pytest.raises(DataError, match=r"camera_info is for 768x512 but the image is 640x480 \(not a resize"):
        camera_info_to_intrinsics(msg, (640, 480))
