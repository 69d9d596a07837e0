"""Crop/scale augmentation keeps intrinsics exact; photometric jitter leaves geometry alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data.posed_folder import load_image, read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import Intrinsics
from reloc_vggt_ros.training.augment import AugmentConfig, augment_frame, crop_resize
from reloc_vggt_ros.training.synthetic import SyntheticConfig, generate_scene, render_view

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


@pytest.mark.parametrize("zoom", [1.0, 0.8, 0.55])
def test_crop_resize_matches_rendering_with_new_intrinsics(zoom: float) -> None:
    """Augmenting a 240x320 render must equal rendering directly with the returned intrinsics."""
    scene = generate_scene(2, SyntheticConfig())
    T, K = scene.views[0]
    K_big = Intrinsics(K.fx * 2.2, K.fy * 2.2, 161.3, 118.2, 320, 240)   # off-centre principal point
    big, _ = render_view(scene, T, K_big, supersample=2)
    out, K_new = crop_resize(big, K_big, (56, 70), zoom)
    assert out.shape == (56, 70, 3)
    assert (K_new.cx, K_new.cy) == pytest.approx(((70 - 1) / 2, (56 - 1) / 2), abs=1e-9)
    direct, _ = render_view(scene, T, K_new, supersample=4)
    err = np.abs(out.astype(float) - direct).mean()
    # Control: intrinsics off by one pixel of principal point would be visibly worse.
    shifted = Intrinsics(K_new.fx, K_new.fy, K_new.cx + 1.0, K_new.cy, 70, 56)
    err_shifted = np.abs(out.astype(float) - render_view(scene, T, shifted, supersample=4)[0]).mean()
    assert err < 6.0 and err_shifted > 2 * err


def test_real_image_point_follows_intrinsics() -> None:
    """A marker drawn on a real image lands at K_new K^-1 of its pixel after crop/scale."""
    rec = read_posed_folder(DATA / "fountain-P11")[0]
    plain = load_image(rec.path)
    img = plain.copy()
    u, v = 900.3, 400.7
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[(xx - u) ** 2 + (yy - v) ** 2 <= 40 ** 2] = (0, 0, 255)
    out, K_new = crop_resize(img, rec.intrinsics, (112, 140), zoom=0.7)   # 1536x1024 -> pre-downscale path
    ref, _ = crop_resize(plain, rec.intrinsics, (112, 140), zoom=0.7)
    K = rec.intrinsics
    expected = np.array([K_new.fx / K.fx * (u - K.cx) + K_new.cx, K_new.fy / K.fy * (v - K.cy) + K_new.cy])
    w = np.abs(out.astype(float) - ref).sum(axis=2)      # only the marker differs
    yy, xx = np.mgrid[: out.shape[0], : out.shape[1]]
    found = np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    assert np.linalg.norm(found - expected) < 0.3
    assert K_new.fx / K.fx == pytest.approx(K_new.fy / K.fy)


def test_photometric_changes_colour_not_geometry() -> None:
    rec = read_posed_folder(DATA / "Herz-Jesus-P8")[0]
    img = load_image(rec.path)
    cfg = AugmentConfig(zoom=(1.0, 1.0))
    a, K_a = augment_frame(img, rec.intrinsics, (112, 168), np.random.default_rng(0), cfg)
    b, K_b = augment_frame(img, rec.intrinsics, (112, 168), np.random.default_rng(0), AugmentConfig(enabled=False))
    assert K_a == K_b
    assert np.abs(a.astype(int) - b).mean() > 2          # colours changed
    corr = np.corrcoef(a.mean(2).ravel(), b.mean(2).ravel())[0, 1]
    assert corr > 0.8                                    # same picture
    again, _ = augment_frame(img, rec.intrinsics, (112, 168), np.random.default_rng(0), cfg)
    assert np.array_equal(a, again)                      # seeded


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="zoom"):
        AugmentConfig(zoom=(0.9, 0.5))
    with pytest.raises(ConfigError, match="blur_prob"):
        AugmentConfig(blur_prob=2.0)
