"""SIFT / RootSIFT local features at a working resolution, keypoints in full-resolution pixels.

Keypoints are always returned in the OpenCV pixel convention of the *input* image (centre of the
top-left pixel is (0, 0)), whatever working resolution the detector ran at, so they can be used
directly with the image's :class:`~reloc_vggt_ros.geometry.Intrinsics`. A distorted camera's
keypoints go through :func:`undistorted` before any geometry (the detector runs on the raw image;
only the keypoints are moved, never the pixels).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ...geometry import Intrinsics
from .config import FeatureConfig

__all__ = ["Features", "extract_features", "undistorted", "fingerprint_fields"]

logger = logging.getLogger(__name__)


@dataclass
class Features:
    """Local features of one image.

    ``keypoints_px``: float64 [N,2] pixels of the input image; ``descriptors``: float32 [N,128]
    unit-norm (RootSIFT when configured); ``scales_px``: float32 [N] keypoint size in input pixels.
    """

    keypoints_px: np.ndarray
    descriptors: np.ndarray
    scales_px: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.keypoints_px.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for a blob (descriptors as float16: half the bytes, no matching loss)."""
        return {"keypoints_px": self.keypoints_px, "descriptors": self.descriptors.astype(np.float16),
                "scales_px": self.scales_px, "size": np.array([self.width, self.height], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Features":
        w, h = (int(v) for v in arrays["size"])
        return cls(arrays["keypoints_px"].astype(np.float64), arrays["descriptors"].astype(np.float32),
                   arrays["scales_px"].astype(np.float32), w, h)


# Fields added after maps were stored, with the value that reproduces the old features: left out
# of the fingerprint at that value, so existing databases are not re-indexed.
_ADDED_FIELDS = {"max_upsample": 2.0, "octave_layers": 3}


def fingerprint_fields(config: FeatureConfig) -> dict[str, object]:
    """The settings that determine the features (for blob fingerprints)."""
    return {k: v for k, v in asdict(config).items() if _ADDED_FIELDS.get(k, object()) != v}


def _working_scale(width: int, height: int, max_edge_px: int) -> float:
    if max_edge_px == 0 or max(width, height) <= max_edge_px:
        return 1.0
    return max_edge_px / float(max(width, height))


def extract_features(image_bgr: np.ndarray, config: FeatureConfig) -> Features:
    """Detect and describe up to ``config.max_keypoints`` SIFT features of a BGR or gray image."""
    if image_bgr.ndim == 3:
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    else:
        gray = image_bgr
    height, width = gray.shape[:2]
    scale = min(_working_scale(width, height, config.max_edge_px), config.max_upsample / 2.0)
    work_w, work_h = round(width * scale), round(height * scale)
    if (work_w, work_h) != (width, height):
        gray = cv2.resize(gray, (work_w, work_h), interpolation=cv2.INTER_AREA)
    # per-axis factors of the rounded size: one shared factor would shift keypoints ~0.2 px
    sxy = np.array([work_w / width, work_h / height])
    sift = cv2.SIFT_create(config.max_keypoints, config.octave_layers, config.contrast_threshold,
                           config.edge_threshold, 1.6, config.precise_upscale)
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or len(kps) == 0:
        return Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32), np.zeros(0, np.float32),
                        width, height)
    xy = np.array([kp.pt for kp in kps], np.float64)
    sizes = np.array([kp.size for kp in kps], np.float32)
    # nfeatures keeps the strongest, but OpenCV may return a few more on ties: cap exactly.
    if len(kps) > config.max_keypoints:
        order = np.argsort([-kp.response for kp in kps], kind="stable")[: config.max_keypoints]
        xy, sizes, desc = xy[order], sizes[order], desc[order]
    # Pixel centres map as (x + 0.5) / s - 0.5 between resolutions.
    xy = (xy + 0.5) / sxy - 0.5
    return Features(xy, _normalise(desc, config.root_sift), sizes / float(sxy.mean()), width, height)


def undistorted(features: Features, camera: Intrinsics) -> Features:
    """``features`` with keypoints in ideal pixels of ``camera.pinhole`` and sizes scaled by the
    local undistortion scale (a keypoint's pixel error grows with it); the same object for a
    pinhole camera."""
    if camera.distortion is None:
        return features
    kp = features.keypoints_px
    scales = features.scales_px * camera.undistortion_scale(kp).astype(np.float32)
    return Features(camera.undistort_px(kp), features.descriptors, scales, features.width, features.height)


def _normalise(desc: np.ndarray, root_sift: bool) -> np.ndarray:
    """L2-normalised SIFT, or RootSIFT (L1 normalise, sqrt; unit L2 by construction)."""
    desc = desc.astype(np.float32)
    if root_sift:
        desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
        return np.sqrt(desc)
    return desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
