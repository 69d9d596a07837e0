"""VGGT architecture config: a frozen dataclass whose defaults are the official VGGT-1B.

Saved as JSON beside the weights so a checkpoint always says which architecture it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from reloc_vggt_ros.errors import ConfigError

from .config_json import JsonConfig

__all__ = ["VGGTConfig", "PRESETS"]

_PATCH_EMBEDS = ("dinov2", "conv")
_CONV_POS_EMBEDS = ("none", "sincos")


@dataclass(frozen=True)
class VGGTConfig(JsonConfig):
    """Hyper-parameters of VGGT. ``VGGTConfig()`` is VGGT-1B (1,256,537,516 parameters)."""

    ARCHITECTURE: ClassVar[str] = "vggt"
    LABEL: ClassVar[str] = "VGGT"
    ARCHITECTURE_REQUIRED: ClassVar[bool] = False   # official configs predate the key

    img_size: int = 518                 # DINO positional table covers img_size/patch_size squared
    patch_size: int = 14
    embed_dim: int = 1024               # aggregator width C (outputs are 2C wide)
    depth: int = 24                     # frame/global block pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01           # LayerScale init (aggregator and camera trunk)
    patch_embed: str = "dinov2"         # "dinov2" (ViT with registers) or "conv"
    conv_pos_embed: str = "none"        # conv only: "sincos" adds fixed absolute 2D positions
    dino_depth: int = 24
    dino_num_heads: int = 16
    camera_num_heads: int = 16
    camera_trunk_depth: int = 4
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    track_features: int = 128
    track_hidden: int = 384
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_iterations: int = 4
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "dpt_out_channels", tuple(int(c) for c in self.dpt_out_channels))
        object.__setattr__(self, "dpt_layers", tuple(int(i) for i in self.dpt_layers))
        if self.conv_pos_embed not in _CONV_POS_EMBEDS:
            raise ConfigError(f"conv_pos_embed must be one of {_CONV_POS_EMBEDS}, got "
                              f"{self.conv_pos_embed!r}")
        if self.patch_embed not in _PATCH_EMBEDS:
            raise ConfigError(f"patch_embed must be one of {_PATCH_EMBEDS}, got "
                              f"{self.patch_embed!r}")
        for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads",
                     "camera_num_heads", "camera_trunk_depth", "camera_iterations",
                     "dpt_features", "track_features", "track_hidden", "track_corr_levels",
                     "track_iterations"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} must be a multiple of patch_size "
                              f"{self.patch_size}")
        head_dim, rem = divmod(self.embed_dim, self.num_heads)
        if rem or head_dim % 4:
            raise ConfigError(f"embed_dim {self.embed_dim} / num_heads {self.num_heads} must be "
                              f"an integer head_dim divisible by 4 (2D RoPE)")
        if self.patch_embed == "dinov2" and self.embed_dim % self.dino_num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} not divisible by dino_num_heads "
                              f"{self.dino_num_heads}")
        if (2 * self.embed_dim) % self.camera_num_heads:
            raise ConfigError(f"camera width {2 * self.embed_dim} not divisible by "
                              f"camera_num_heads {self.camera_num_heads}")
        if len(self.dpt_out_channels) != 4 or len(self.dpt_layers) != 4:
            raise ConfigError("dpt_out_channels and dpt_layers need exactly 4 entries")
        if any(c % 4 for c in self.dpt_out_channels) or self.dpt_features % 8:
            raise ConfigError("dpt_out_channels must be multiples of 4 and dpt_features of 8 "
                              "(DPT positional embedding)")
        if not all(0 <= i < self.depth for i in self.dpt_layers):
            raise ConfigError(f"dpt_layers {self.dpt_layers} must lie in [0, {self.depth})")
        if self.rope_freq <= 0:
            raise ConfigError(f"rope_freq must be > 0, got {self.rope_freq}")
        if self.track_features % 4 or self.track_corr_radius < 0:
            raise ConfigError("track_features must be a multiple of 4 and track_corr_radius >= 0")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dpt_out_channels"], d["dpt_layers"] = list(self.dpt_out_channels), list(self.dpt_layers)
        if self.conv_pos_embed == "none":   # keep configs of models without it unchanged
            del d["conv_pos_embed"]
        return {"architecture": "vggt", **d}


_TINY = dict(img_size=70, embed_dim=32, num_heads=2, camera_num_heads=4, dpt_features=16,
             dpt_out_channels=(8, 16, 32, 32), track_features=16, track_hidden=32,
             track_corr_levels=4)

PRESETS: dict[str, VGGTConfig] = {
    "vggt_1b": VGGTConfig(),
    # The golden conformance models (shared/golden/vggt): 24 layers, width 32.
    "tiny_conv": VGGTConfig(patch_embed="conv", **_TINY),
    "tiny_dino": VGGTConfig(patch_embed="dinov2", dino_depth=2, dino_num_heads=2, **_TINY),
}
