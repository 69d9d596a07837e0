"""Camera models (OpenCV pixel convention: centre of the top-left pixel is (0, 0)).

:class:`Intrinsics` is a zero-skew pinhole ``K`` plus an optional lens :class:`Distortion` in
ROS CameraInfo terms (``plumb_bob``, ``rational_polynomial``, ``equidistant``; OpenCV's
formulas). The distortion rides on the intrinsics rather than in a separate camera type
because every path that carries a camera (CameraInfo, posed folders, the keyframe store, the
localizer interface) already carries an ``Intrinsics``: the model travels with it unchanged,
and the pinhole case (``distortion is None``) is exactly the old type.

Geometry never sees distorted pixels: a backend undistorts keypoints once
(:meth:`Intrinsics.undistort_px`, to ideal pixels of the same ``K``) and solves with
:attr:`Intrinsics.pinhole`; :meth:`Intrinsics.project` and :meth:`Intrinsics.distort_px`
go back to raw image pixels where an image is read (sub-pixel tracking).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Intrinsics", "Distortion", "DISTORTION_MODELS"]

# ROS distortion_model -> number of coefficients in CameraInfo.d (OpenCV order)
DISTORTION_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
_NO_MODEL = ("", "none")           # names some drivers use with an empty / zero D
# fixed-point undistortion: OpenCV's default (5 iterations) leaves ~0.1 px at strong distortion
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)


@dataclass(frozen=True)
class Distortion:
    """A lens model and its coefficients, as in a CameraInfo (``model``, ``d``).

    ``plumb_bob``: k1 k2 p1 p2 k3; ``rational_polynomial``: k1 k2 p1 p2 k3 k4 k5 k6 (OpenCV
    ``undistortPoints``); ``equidistant``: k1 k2 k3 k4 (OpenCV ``fisheye``).
    """

    model: str
    coefficients: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in DISTORTION_MODELS:
            raise ValueError(f"unknown distortion model {self.model!r} (supported: "
                             f"{', '.join(DISTORTION_MODELS)}, or none with zero coefficients)")
        n = DISTORTION_MODELS[self.model]
        if len(self.coefficients) != n:
            raise ValueError(f"distortion model {self.model!r} takes {n} coefficients, got "
                             f"{len(self.coefficients)}: {list(self.coefficients)}")
        if not all(math.isfinite(c) for c in self.coefficients):
            raise ValueError(f"distortion coefficients must be finite, got {list(self.coefficients)}")

    @classmethod
    def from_ros(cls, model: str, d: Sequence[float]) -> "Distortion | None":
        """The distortion of a CameraInfo's ``distortion_model`` and ``d``; None when there is none
        to apply (a polynomial model or none with an empty or all-zero ``d``: rectified images; an
        ``equidistant`` camera with zero ``d`` is still a fisheye); ValueError with the reason otherwise."""
        coeffs = tuple(float(c) for c in d)
        name = model.strip()
        if name != "equidistant" and (name in _NO_MODEL or name in DISTORTION_MODELS):
            if all(c == 0.0 for c in coeffs):
                return None
        if name in _NO_MODEL:
            raise ValueError(f"distortion model {model!r} with non-zero coefficients {list(coeffs)}: name the "
                             f"model ({', '.join(DISTORTION_MODELS)})")
        return cls(name, coeffs)

    @classmethod
    def parse(cls, text: str) -> "Distortion | None":
        """``'<model> <coefficients...>'`` (a posed folder's ``distortion.txt``); ValueError if malformed."""
        parts = text.split()
        if not parts:
            raise ValueError("empty distortion line; expected '<model> <coefficients...>'")
        try:
            coeffs = [float(v) for v in parts[1:]]
        except ValueError as err:
            raise ValueError(f"non-numeric distortion coefficient: {err}") from err
        return cls.from_ros(parts[0], coeffs)

    def __str__(self) -> str:
        return " ".join([self.model, *(repr(c) for c in self.coefficients)])

    @property
    def D(self) -> np.ndarray:
        return np.asarray(self.coefficients, np.float64)

    @property
    def fisheye(self) -> bool:
        return self.model == "equidistant"


@dataclass(frozen=True)
class Intrinsics:
    """Zero-skew pinhole camera of an image ``width`` x ``height`` pixels, optionally distorted."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: Distortion | None = None

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

    @property
    def pinhole(self) -> "Intrinsics":
        """The same ``K`` without distortion: the camera of undistorted (ideal) pixels."""
        return self if self.distortion is None else dataclasses.replace(self, distortion=None)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int, distortion: Distortion | None = None) -> "Intrinsics":
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height),
                   distortion)

    def scaled(self, sx: float, sy: float | None = None) -> "Intrinsics":
        """Intrinsics after resizing the image by (sx, sy), keeping pixel-centre convention (the
        distortion acts on normalized coordinates, so it is unchanged)."""
        sy = sx if sy is None else sy
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          int(round(self.width * sx)), int(round(self.height * sy)), self.distortion)

    def fov_rad(self) -> tuple[float, float]:
        """(vertical, horizontal) field of view in radians of the pinhole ``K``, as VGGT's pose
        encoding orders them."""
        return 2 * math.atan(self.height / (2 * self.fy)), 2 * math.atan(self.width / (2 * self.fx))

    def project(self, X_cam: np.ndarray) -> np.ndarray:
        """Project camera-frame points [N,3] to image pixels [N,2] (distorted when the camera is)."""
        X_cam = np.asarray(X_cam, float)
        uv = np.stack([self.fx * X_cam[:, 0] / X_cam[:, 2] + self.cx,
                       self.fy * X_cam[:, 1] / X_cam[:, 2] + self.cy], axis=1)
        return self.distort_px(uv)

    def undistort_px(self, xy: np.ndarray) -> np.ndarray:
        """Raw image pixels [N,2] -> ideal pixels [N,2] of :attr:`pinhole` (a copy; identity
        without distortion)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if self.distortion is None or len(xy) == 0:
            return xy.copy()
        src = np.ascontiguousarray(xy).reshape(-1, 1, 2)
        K, D = self.K, self.distortion.D
        if self.distortion.fisheye:
            out = cv2.fisheye.undistortPoints(src, K, D, R=np.eye(3), P=K, criteria=_CRITERIA)
        else:
            out = cv2.undistortPoints(src, K, D, R=np.eye(3), P=K, criteria=_CRITERIA)
        return out.reshape(-1, 2).astype(np.float64)

    def distort_px(self, xy: np.ndarray) -> np.ndarray:
        """Ideal pixels [N,2] of :attr:`pinhole` -> raw image pixels [N,2] (inverse of
        :meth:`undistort_px`)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if self.distortion is None or len(xy) == 0:
            return xy.copy()
        norm = np.stack([(xy[:, 0] - self.cx) / self.fx, (xy[:, 1] - self.cy) / self.fy], axis=1)
        K, D = self.K, self.distortion.D
        if self.distortion.fisheye:
            out = cv2.fisheye.distortPoints(np.ascontiguousarray(norm).reshape(-1, 1, 2), K, D)
        else:
            rays = np.concatenate([norm, np.ones((len(norm), 1))], axis=1)
            out, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, D)
        return out.reshape(-1, 2).astype(np.float64)

    def undistortion_scale(self, xy: np.ndarray, step_px: float = 0.5) -> np.ndarray:
        """[N] local scale from raw to ideal pixels around each raw pixel (sqrt of the Jacobian's
        determinant; 1 without distortion): how much a keypoint's pixel error grows when undistorted."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if self.distortion is None or len(xy) == 0:
            return np.ones(len(xy))
        u = self.undistort_px(np.concatenate([xy + [step_px, 0.0], xy - [step_px, 0.0],
                                              xy + [0.0, step_px], xy - [0.0, step_px]]))
        n = len(xy)
        dx = (u[:n] - u[n:2 * n]) / (2 * step_px)
        dy = (u[2 * n:3 * n] - u[3 * n:]) / (2 * step_px)
        return np.sqrt(np.abs(dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]))
