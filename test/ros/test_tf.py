"""TF buffer: interpolation, chains through static and dynamic edges, no extrapolation."""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from reloc_vggt_ros.geometry import invert_T, make_T, pose_error, so3_exp  # noqa: E402
from reloc_vggt_ros.ros.tf import TransformBuffer, interpolate_T  # noqa: E402

S = 1_000_000_000


def odom_base(t: float) -> np.ndarray:
    """A robot turning at 0.5 rad/s around z while driving 1 m/s along its heading (a circle)."""
    yaw = 0.5 * t
    return make_T(so3_exp(np.array([0.0, 0.0, yaw])), np.array([2 * np.sin(yaw), 2 - 2 * np.cos(yaw), 0.0]))


BASE_CAM = make_T(so3_exp(np.array([-np.pi / 2, 0, -np.pi / 2])), np.array([0.2, 0.0, 0.5]))  # optical frame


def test_interpolate_endpoints_and_midpoint():
    A, B = odom_base(0.0), odom_base(1.0)
    np.testing.assert_allclose(interpolate_T(A, B, 0.0), A, atol=1e-12)
    np.testing.assert_allclose(interpolate_T(A, B, 1.0), B, atol=1e-12)
    mid = interpolate_T(A, B, 0.5)
    t_err, r_err = pose_error(mid, odom_base(0.5))
    assert r_err < 1e-9                      # yaw is linear in time: geodesic midpoint is exact
    assert abs(t_err - 2 * (1 - np.cos(0.25))) < 1e-9  # linear translation: the chord's sagitta


def test_chain_lookup_interpolates_dynamic_and_uses_static():
    buf = TransformBuffer(cache_s=100)
    buf.set_transform(BASE_CAM, 0, "base_link", "camera_optical", static=True)
    for k in range(0, 21):
        buf.set_transform(odom_base(k * 0.1), int(k * 0.1 * S), "odom", "base_link")
    stamp = int(1.23 * S)
    T = buf.lookup("odom", "camera_optical", stamp)
    t_err, r_err = pose_error(T, odom_base(1.23) @ BASE_CAM)
    assert t_err < 1e-3 and r_err < 1e-6
    T_inv = buf.lookup("camera_optical", "odom", stamp)
    np.testing.assert_allclose(T_inv, invert_T(T), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("odom", "odom", stamp), np.eye(4))


def test_no_extrapolation_and_unknown_frames():
    buf = TransformBuffer(cache_s=100, tolerance_s=0.05)
    buf.set_transform(odom_base(0), 0, "odom", "base_link")
    buf.set_transform(odom_base(1), S, "odom", "base_link")
    np.testing.assert_allclose(buf.lookup("odom", "base_link", S + int(0.04 * S)), odom_base(1))
    with pytest.raises(LookupError, match="after the newest"):
        buf.lookup("odom", "base_link", 2 * S)
    with pytest.raises(LookupError, match="before the oldest"):
        buf.lookup("odom", "base_link", -S)
    with pytest.raises(LookupError, match="not connected"):
        buf.lookup("odom", "camera", S // 2)


def test_cache_drops_old_transforms():
    buf = TransformBuffer(cache_s=1.0)
    for k in range(50):
        buf.set_transform(odom_base(k * 0.1), int(k * 0.1 * S), "odom", "base_link")
    with pytest.raises(LookupError):
        buf.lookup("odom", "base_link", int(1.0 * S))
    buf.lookup("odom", "base_link", int(4.5 * S))


def test_tfmessage_feeds_buffer():
    from tf2_msgs.msg import TFMessage

    from reloc_vggt_ros.ros.convert import transform_stamped

    msg = TFMessage(transforms=[transform_stamped(odom_base(0.0), 0, "odom", "/base_link"),
                                transform_stamped(odom_base(1.0), S, "odom", "base_link")])
    buf = TransformBuffer()
    buf.add_message(msg)
    t_err, r_err = pose_error(buf.lookup("odom", "base_link", S // 2), interpolate_T(odom_base(0), odom_base(1), 0.5))
    assert t_err < 1e-9 and r_err < 1e-6
