"""Intrinsics: validation, scaling in the pixel-centre convention, projection, field of view."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reloc_vggt_ros.geometry import Intrinsics


def test_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        Intrinsics(0.0, 100.0, 50.0, 50.0, 100, 100)
    with pytest.raises(ValueError, match="finite"):
        Intrinsics(100.0, 100.0, math.nan, 50.0, 100, 100)
    with pytest.raises(ValueError, match="image size"):
        Intrinsics(100.0, 100.0, 50.0, 50.0, 0, 100)


def test_scaled_maps_pixel_centres_consistently() -> None:
    """A 3D point projects to (u, v) at full size and to ((u+0.5)s-0.5, (v+0.5)s-0.5) after resizing."""
    intr = Intrinsics(1379.74, 1382.08, 760.095, 503.155, 1536, 1024)
    X = np.random.default_rng(0).uniform([-3, -2, 5], [3, 2, 20], size=(50, 3))
    uv = intr.project(X)
    sx, sy = 640 / 1536, 427 / 1024
    small = intr.scaled(sx, sy)
    assert (small.width, small.height) == (640, 427)
    np.testing.assert_allclose(small.project(X), np.stack([(uv[:, 0] + 0.5) * sx - 0.5,
                                                           (uv[:, 1] + 0.5) * sy - 0.5], axis=1), atol=1e-9)
    # halving: the centre of full-res pixel block (0..1) is half-res pixel 0
    half = intr.scaled(0.5)
    assert half.cx == pytest.approx((760.095 + 0.5) / 2 - 0.5) and (half.width, half.height) == (768, 512)


def test_K_from_K_fov() -> None:
    intr = Intrinsics(500.0, 400.0, 319.5, 239.5, 640, 480)
    K = intr.K
    assert K[0, 0] == 500.0 and K[1, 1] == 400.0 and K[0, 2] == 319.5 and K[2, 2] == 1.0
    assert Intrinsics.from_K(K, 640, 480) == intr
    fov_v, fov_h = intr.fov_rad()
    assert fov_v == pytest.approx(2 * math.atan(240 / 400)) and fov_h == pytest.approx(2 * math.atan(320 / 500))
    # a point on the optical axis projects to the principal point
    np.testing.assert_allclose(intr.project(np.array([[0.0, 0.0, 3.0]])), [[319.5, 239.5]])
