"""Photometric and crop/scale augmentation that keeps intrinsics exact.

VGGT's pose encoding carries only the fields of view and assumes the principal point in the image
centre, so the geometric step crops a window *centred on the principal point* and resamples it to
the network size with one affine warp: the returned intrinsics have ``cx = (W - 1) / 2``,
``cy = (H - 1) / 2`` (OpenCV pixel convention) and focal lengths scaled by the same factors the
pixels were. Zooming in (``zoom < 1``) narrows the field of view, which is the scale augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError
from ..geometry import Intrinsics

__all__ = ["AugmentConfig", "crop_resize", "photometric", "augment_frame"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; ``enabled=False`` gives the deterministic centre crop only."""

    enabled: bool = True
    zoom: tuple[float, float] = (0.75, 1.0)     # crop side / largest centred crop side
    brightness: float = 0.25                     # additive, fraction of full range
    contrast: float = 0.3                        # multiplicative around the mean
    saturation: float = 0.3
    gamma: float = 0.25
    noise_std: float = 0.02
    blur_prob: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.zoom
        if not 0.1 <= lo <= hi <= 1.0:
            raise ConfigError(f"augment zoom must satisfy 0.1 <= lo <= hi <= 1, got {self.zoom}")
        for name in ("brightness", "contrast", "saturation", "gamma", "noise_std"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"augment {name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.blur_prob <= 1:
            raise ConfigError(f"augment blur_prob must be in [0, 1], got {self.blur_prob}")


def crop_resize(image: np.ndarray, intrinsics: Intrinsics, out_hw: tuple[int, int],
                zoom: float = 1.0) -> tuple[np.ndarray, Intrinsics]:
    """Crop the largest window of aspect ``out_hw`` centred on the principal point, times ``zoom``.

    Returns the ``out_hw`` image and its intrinsics. Pixel p_out maps to
    ``p_in = (p_out + 0.5) / s - 0.5 + origin``; large downscales are area-averaged first.
    """
    out_h, out_w = out_hw
    h, w = image.shape[:2]
    cx, cy = intrinsics.cx, intrinsics.cy
    # Half extents (in pixel-edge units) of the largest window centred on (cx, cy) inside the image.
    half_w = min(cx + 0.5, w - 0.5 - cx)
    half_h = min(cy + 0.5, h - 0.5 - cy)
    if half_w <= 1 or half_h <= 1:
        raise ValueError(f"principal point ({cx:.1f}, {cy:.1f}) is outside the {w}x{h} image")
    aspect = out_w / out_h
    half_w, half_h = min(half_w, half_h * aspect), min(half_h, half_w / aspect)
    half_w, half_h = half_w * zoom, half_h * zoom
    s = out_w / (2 * half_w)                                    # same in y by construction
    pre = int(1 / s) if s < 0.5 else 1
    if pre > 1:                                                 # anti-alias: exact integer area downscale
        nw, nh = w // pre, h // pre
        image = cv2.resize(image[: nh * pre, : nw * pre], (nw, nh), interpolation=cv2.INTER_AREA)
        intrinsics = Intrinsics(intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, nw * pre,
                                nh * pre).scaled(1 / pre)
        cx, cy, half_w, half_h, s = intrinsics.cx, intrinsics.cy, half_w / pre, half_h / pre, s * pre
    x0, y0 = cx + 0.5 - half_w, cy + 0.5 - half_h             # window origin, pixel-edge units
    # out = s * (in + 0.5 - origin) - 0.5
    M = np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])
    out = cv2.warpAffine(image, M, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    new = Intrinsics(intrinsics.fx * s, intrinsics.fy * s, s * (cx + 0.5 - x0) - 0.5,
                     s * (cy + 0.5 - y0) - 0.5, out_w, out_h)
    return out, new


def photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour jitter, gamma, blur and noise on a BGR uint8 image; geometry untouched."""
    img = image.astype(np.float32) / 255.0
    img = img + rng.uniform(-cfg.brightness, cfg.brightness)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    img = np.clip(img, 0, 1) ** rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    img = img + rng.normal(0, cfg.noise_std, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment_frame(image: np.ndarray, intrinsics: Intrinsics, out_hw: tuple[int, int],
                  rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, Intrinsics]:
    """Crop/scale then photometric jitter (when enabled); intrinsics follow the pixels exactly."""
    zoom = rng.uniform(*cfg.zoom) if cfg.enabled else 1.0
    image, intrinsics = crop_resize(image, intrinsics, out_hw, zoom)
    if cfg.enabled:
        image = photometric(image, rng, cfg)
    return image, intrinsics
