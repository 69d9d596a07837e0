"""What the two VGGT-based localizers share: keyframe retrieval, image preparation, weight checks.

Retrieval is ``localizer.retrieval.ThumbnailRetriever``: the weights-free thumbnail descriptors
stored in the database (missing ones computed), with the shared pose-prior policy. Images are resized (no crop) to the network input
size: a plain resize keeps each camera's field of view, which is all VGGT's pose encoding keeps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch

from ...errors import ConfigError, ModelLoadError
from ...geometry import Intrinsics
from ...keyframes import KeyframeStore
from ..retrieval import ThumbnailRetriever
from ..base import PosePrior

__all__ = ["require_weights", "to_model_image", "KeyframeSet", "decode_cameras"]

logger = logging.getLogger(__name__)


def require_weights(path: str | Path | None, backend: str) -> Path:
    """The weights path, or ModelLoadError saying which backend needs which missing file."""
    if path is None or str(path) == "":
        raise ModelLoadError(f"{backend} needs weights: set model.weights / --weights to a "
                             ".safetensors or .pt file (see models/README.md)")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{backend} needs weights: file {path} not found")
    return path


def to_model_image(image_bgr: np.ndarray, image_hw: tuple[int, int]) -> torch.Tensor:
    """BGR uint8 [H,W,3] -> RGB float32 [3, h, w] in [0, 1] at the network size ``(h, w)``."""
    h, w = image_hw
    rgb = cv2.cvtColor(cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


class KeyframeSet:
    """Poses, intrinsics and a thumbnail index of every keyframe; images decoded on demand."""

    def __init__(self, store: KeyframeStore, image_hw: tuple[int, int], cache_images: int = 64) -> None:
        self.store = store
        self.image_hw = image_hw
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_size = cache_images
        self._descriptors: dict[int, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read poses; thumbnails are read or computed only for keyframes not seen before."""
        self.ids, self.T_world_cam = self.store.poses()
        self.intrinsics: dict[int, Intrinsics] = self.store.intrinsics()
        for gone in set(self._cache) - {int(i) for i in self.ids}:
            self._cache.pop(gone, None)
        self.retriever, self._descriptors = ThumbnailRetriever.from_store(self.store, self._descriptors)
        logger.info("keyframe set: %d keyframes from %s", len(self.ids), self.store.path)

    def __len__(self) -> int:
        return len(self.ids)

    def pose(self, kf_id: int) -> np.ndarray:
        return self.T_world_cam[int(np.flatnonzero(self.ids == kf_id)[0])]

    def retrieve(self, image_bgr: np.ndarray, k: int, prior: PosePrior | None = None) -> list[int]:
        """Up to ``k`` keyframe ids (:meth:`Retriever.retrieve`: with a prior, half nearest to it)."""
        return self.retriever.retrieve(image_bgr, k, None if prior is None else prior.T_world_cam)

    def image(self, kf_id: int) -> torch.Tensor:
        """Network-ready image of one keyframe ``[3, h, w]`` (LRU-cached)."""
        if kf_id in self._cache:
            self._cache.move_to_end(kf_id)
            return self._cache[kf_id]
        img = to_model_image(self.store.get_keyframe(kf_id).decode_image(), self.image_hw)
        self._cache[kf_id] = img
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return img


def decode_cameras(pose_enc: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """VGGT pose encodings ``[S, 9]`` -> camera-to-frame-0 poses ``[S, 4, 4]``.

    Only the extrinsics are used; FoVs are clipped into (0, π) first so a degenerate predicted
    FoV (0 after VGGT's ReLU, e.g. from untrained weights) cannot make the conversion fail.
    """
    from ...model.pose_encoding import pose_encoding_to_T_world_cam

    enc = np.array(pose_enc, dtype=np.float64).reshape(-1, 9)
    enc[:, 7:] = np.clip(enc[:, 7:], 1e-3, np.pi - 1e-3)
    T, _ = pose_encoding_to_T_world_cam(enc, image_hw)
    return T
