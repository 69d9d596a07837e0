"""Absolute positions of conv patch tokens (``VGGTConfig.conv_pos_embed``).

Without them a conv patch token is a function of its pixels only: swap two patches of an image
and the set of token values is the same, so no value can say *where* its content sits in the
image. RoPE only shapes attention scores. That is why the tiny CPU model could not read a relative
pose from image shifts (docs/training.md). The DINOv2 patch embedding of real VGGT adds a learned
position table; ``conv_pos_embed="sincos"`` gives the conv embedding a fixed one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.model.aggregator import sincos_positions
from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def _tiny(pos: str) -> RelocVGGTConfig:
    cfg = RelocVGGTConfig.tiny(mask="cached")
    return dataclasses.replace(cfg, vggt=dataclasses.replace(cfg.vggt, conv_pos_embed=pos))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """One real image at the tiny size, [1, 1, 3, 56, 70] in [0, 1]."""
    rec = read_posed_folder(DATA / "fountain-P11", "db")[0]
    H, W = RelocVGGTConfig.tiny().image_hw
    img = cv2.cvtColor(cv2.resize(cv2.imread(str(rec.path)), (W, H), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_BGR2RGB)
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None, None]


def _swap_patches(images: torch.Tensor, p: int, a: tuple[int, int], b: tuple[int, int]) -> torch.Tensor:
    out = images.clone()
    (ra, ca), (rb, cb) = a, b
    pa = images[..., ra * p:(ra + 1) * p, ca * p:(ca + 1) * p]
    pb = images[..., rb * p:(rb + 1) * p, cb * p:(cb + 1) * p]
    out[..., ra * p:(ra + 1) * p, ca * p:(ca + 1) * p] = pb
    out[..., rb * p:(rb + 1) * p, cb * p:(cb + 1) * p] = pa
    return out


@pytest.mark.parametrize("pos", ["none", "sincos"])
def test_patch_token_values_know_their_position_only_with_sincos(image: torch.Tensor, pos: str) -> None:
    torch.manual_seed(0)
    model = RelocVGGT(_tiny(pos)).eval()
    agg = model.aggregator
    p, w = agg.patch_size, image.shape[-1] // agg.patch_size
    a, b = (0, 1), (3, 4)
    swapped = _swap_patches(image, p, a, b)
    with torch.no_grad():
        tok = agg.embed(image)[0][0, 0, agg.patch_start_idx:]
        tok_sw = agg.embed(swapped)[0][0, 0, agg.patch_start_idx:]
    ia, ib = a[0] * w + a[1], b[0] * w + b[1]
    moved = (tok_sw[ia] - tok[ib]).abs().max().item()     # same pixels, now at position a
    if pos == "none":
        assert moved < 1e-5          # the token of the moved patch does not change: no position
    else:
        H, W = image.shape[-2:]
        pe = sincos_positions(H // p, W // p, tok.shape[-1])
        assert moved > 0.1
        assert torch.allclose(tok_sw[ia] - tok[ib], pe[ia] - pe[ib], atol=1e-5)


def test_sincos_positions_are_distinct_and_bounded() -> None:
    pe = sincos_positions(8, 10, 64)
    assert pe.shape == (80, 64) and pe.abs().max() <= 1.0
    dist = torch.cdist(pe, pe) + torch.eye(80) * 1e3
    assert dist.min() > 0.1           # every patch position has its own code


def test_cached_query_equals_forward_with_positions(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = RelocVGGT(_tiny("sincos")).eval()
    images = torch.cat([image, image.flip(-1), image.flip(-2)], dim=1)
    known = torch.zeros(1, 2, 9)
    known[..., 6] = 1.0
    known[..., 7:] = 1.0
    known[0, 1, 0] = 0.5
    with torch.no_grad():
        full = model(images, known)["pose_enc"]
        cached = model.forward_query(model.encode_keyframes(images[:, :2], known), images[:, 2:])["pose_enc"]
    assert torch.allclose(full, cached, atol=1e-5)


def test_config_json_keeps_old_files_unchanged_and_round_trips(tmp_path: Path) -> None:
    assert "conv_pos_embed" not in VGGTConfig(patch_embed="conv").to_dict()
    cfg = _tiny("sincos")
    path = cfg.to_json(tmp_path / "m.json")
    assert RelocVGGTConfig.from_json(path) == cfg
    with pytest.raises(ConfigError, match="conv_pos_embed"):
        VGGTConfig(patch_embed="conv", conv_pos_embed="learned")
