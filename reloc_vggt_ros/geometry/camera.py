"""Pinhole intrinsics (OpenCV pixel convention: centre of the top-left pixel is (0, 0))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Intrinsics"]


@dataclass(frozen=True)
class Intrinsics:
    """Zero-skew pinhole camera of an image ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"intrinsics must be finite, got {vals}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "Intrinsics":
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, sx: float, sy: float | None = None) -> "Intrinsics":
        """Intrinsics after resizing the image by (sx, sy), keeping pixel-centre convention."""
        sy = sx if sy is None else sy
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          int(round(self.width * sx)), int(round(self.height * sy)))

    def fov_rad(self) -> tuple[float, float]:
        """(vertical, horizontal) field of view in radians, as VGGT's pose encoding orders them."""
        return 2 * math.atan(self.height / (2 * self.fy)), 2 * math.atan(self.width / (2 * self.fx))

    def project(self, X_cam: np.ndarray) -> np.ndarray:
        """Project camera-frame points [N,3] to pixels [N,2]."""
        X_cam = np.asarray(X_cam, float)
        return np.stack([self.fx * X_cam[:, 0] / X_cam[:, 2] + self.cx,
                         self.fy * X_cam[:, 1] / X_cam[:, 2] + self.cy], axis=1)
