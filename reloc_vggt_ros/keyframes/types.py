"""Keyframe record shared by the store, the localizers and the node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Intrinsics

__all__ = ["Keyframe"]


@dataclass
class Keyframe:
    """A posed database image.

    ``image_jpeg`` holds the encoded image (JPEG/PNG bytes) exactly as stored; decode with
    ``cv2.imdecode``. ``T_world_cam`` is camera-to-world (OpenCV optical camera frame).
    ``depth_m`` is an optional float32 [H,W] depth map in metres (0 = unknown).
    ``kf_id`` is assigned by the store (None before insertion).
    """

    name: str
    image_jpeg: bytes
    intrinsics: Intrinsics
    T_world_cam: np.ndarray
    stamp_ns: int = 0
    depth_m: np.ndarray | None = None
    kf_id: int | None = None

    def decode_image(self) -> np.ndarray:
        """BGR uint8 [H,W,3]."""
        import cv2

        img = cv2.imdecode(np.frombuffer(self.image_jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            from ..errors import KeyframeDBError

            raise KeyframeDBError(f"keyframe {self.kf_id} ({self.name}): image bytes do not decode")
        return img
