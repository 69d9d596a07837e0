"""Training tuples over posed-image folders (the ``../shared/data`` format).

Item ``i`` is fully determined by ``(seed, i)``: the scene, the covisible frames and every
augmentation draw come from ``np.random.default_rng([seed, i])``. The training loop asks for item
``step * batch + b``, so a resumed run sees exactly the batches an uninterrupted run would.

Targets follow VGGT: frame 0 (the anchor) is the world, every frame is encoded camera-from-anchor
([t, q_xyzw, fov_h, fov_w]). They are built with the same function the localizer uses at inference
(:func:`model.pose_tokenizer.relative_pose_encoding`), and translations are divided by the scale it
computes from the *known* frames ``[anchor, db…]`` only (mean distance of the database centres from
the anchor), which inference can compute too. Multiply predicted translations by ``scale``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.posed_folder import PosedImage, load_image, read_posed_folder
from ..errors import ConfigError, DataError
from ..geometry import Intrinsics
from ..model.pose_tokenizer import relative_pose_encoding
from .augment import AugmentConfig, augment_frame
from .sampler import CovisibilityIndex, SamplerConfig

__all__ = ["TupleDatasetConfig", "TupleDataset", "tuple_targets", "collate_tuples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TupleDatasetConfig:
    image_hw: tuple[int, int] = (112, 112)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    split: str | None = None             # None = all frames of every folder, else "db" / "query"
    normalize_scale: bool = True
    cache_images: bool = True

    def __post_init__(self) -> None:
        h, w = self.image_hw
        if h < 8 or w < 8:
            raise ConfigError(f"image_hw must be >= 8x8, got {self.image_hw}")
        if self.split not in (None, "db", "query"):
            raise ConfigError(f"split must be null, 'db' or 'query', got {self.split!r}")


def tuple_targets(T_world_cam: list[np.ndarray], intrinsics: list[Intrinsics],
                  normalize_scale: bool = True) -> tuple[np.ndarray, float]:
    """(pose_enc [S, 9] of ``[anchor, db…, query]`` relative to the anchor, scale of the known frames)."""
    scale = relative_pose_encoding(T_world_cam[:-1], intrinsics[:-1], normalize=normalize_scale)[1]
    enc, _ = relative_pose_encoding(T_world_cam, intrinsics, normalize=False)
    enc[:, :3] /= scale
    return enc, scale


class _Scene:
    def __init__(self, folder: Path, frames: list[PosedImage], index: CovisibilityIndex) -> None:
        self.folder, self.frames, self.index = folder, frames, index


class TupleDataset(Dataset):
    """Covisible ``[anchor, db…, query]`` tuples from one or more posed folders."""

    def __init__(self, folders: list[Path], cfg: TupleDatasetConfig, seed: int = 0, length: int = 1_000_000) -> None:
        if not folders:
            raise DataError("no training folders given")
        self.cfg, self.seed, self.length = cfg, int(seed), int(length)
        self.scenes: list[_Scene] = []
        for folder in folders:
            frames = read_posed_folder(folder, cfg.split)
            if len(frames) < cfg.sampler.num_frames:
                logger.warning("skipping %s: %d frames < num_frames=%d", folder, len(frames), cfg.sampler.num_frames)
                continue
            index = CovisibilityIndex([f.T_world_cam for f in frames], [f.intrinsics for f in frames], cfg.sampler)
            self.scenes.append(_Scene(Path(folder), frames, index))
        if not self.scenes:
            raise DataError(f"none of {len(folders)} folders has >= {cfg.sampler.num_frames} frames")
        self._cache: dict[Path, np.ndarray] = {}
        logger.info("tuple dataset: %d scenes, %d frames, %d frames per tuple, %s px",
                    len(self.scenes), sum(len(s.frames) for s in self.scenes), cfg.sampler.num_frames,
                    "x".join(map(str, cfg.image_hw)))

    def __len__(self) -> int:
        return self.length

    def _image(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            img = load_image(path)
            if self.cfg.cache_images:
                self._cache[path] = img
        return img

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(i)])
        scene = self.scenes[int(rng.integers(len(self.scenes)))]
        ids = scene.index.sample(rng)
        frames = [scene.frames[j] for j in ids]
        images, Ks = [], []
        for f in frames:
            img, K = augment_frame(self._image(f.path), f.intrinsics, self.cfg.image_hw, rng, self.cfg.augment)
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            Ks.append(K)
        T_world_cam = [f.T_world_cam for f in frames]
        pose_enc, scale = tuple_targets(T_world_cam, Ks, self.cfg.normalize_scale)
        return {
            "images": np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0,   # [S,3,H,W]
            "pose_enc": pose_enc.astype(np.float32),                                        # [S,9]
            "intrinsics": np.stack([K.K for K in Ks]).astype(np.float32),                   # [S,3,3]
            "scale": np.float32(scale),
            "T_world_cam": np.stack(T_world_cam),                                           # [S,4,4]
        }


def collate_tuples(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch: images [B,S,3,H,W], pose_enc [B,S,9], intrinsics [B,S,3,3], scale [B]."""
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
