"""DPT head: dense per-pixel predictions from four aggregator layers (depth, points, features).

Frames are independent. Patch tokens of layers ``intermediate_layer_idx`` go through one shared
LayerNorm, are projected and resized to strides 4, 8, 14 and 28 (relative to the 14-px patch
grid), fused coarse-to-fine by RefineNet-style blocks and upsampled to the image size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reloc_vggt_ros.model.heads.head_act import activate_dense

__all__ = ["DPTHead", "dpt_pos_embed"]


def _sincos_1d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """coords [n] (float32) -> [n, dim] = [sin(p w_k)..., cos(p w_k)...], w_k = 100^(-k/(dim/2))."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=coords.device) / (dim / 2.0)
    omega = 1.0 / 100.0 ** omega
    angles = coords.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def dpt_pos_embed(height: int, width: int, channels: int, aspect_ratio: float,
                  device: torch.device | None = None) -> torch.Tensor:
    """Normalised-coordinate sin/cos embedding of a height x width map -> [channels, h, w] fp32.

    Coordinates span the image's aspect ratio (W/H of the *input image*) on the unit circle,
    shrunk by (n-1)/n; the first half of the channels encodes x (columns), the second y (rows).
    """
    if channels % 4:
        raise ValueError(f"DPT positional embedding needs channels divisible by 4, got {channels}")
    diag = (aspect_ratio ** 2 + 1) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width,
                        dtype=torch.float32, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height,
                        dtype=torch.float32, device=device)
    half = channels // 2
    emb_x = _sincos_1d(xs, half)  # [w, half]
    emb_y = _sincos_1d(ys, half)  # [h, half]
    pe = torch.cat([emb_x[None].expand(height, -1, -1), emb_y[:, None].expand(-1, width, -1)],
                   dim=-1)
    return pe.permute(2, 0, 1).to(torch.float32)


class ResidualConvUnit(nn.Module):
    """RCU(v) = ReLU(v) + conv2(ReLU(conv1(ReLU(v)))); the skip carries ReLU(v) (as VGGT)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        return x + self.conv2(torch.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """u = a + RCU1(b) (or a), u = RCU2(u), bilinear (align_corners) resize, 1x1 out_conv."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None,
                size: Sequence[int] | None = None) -> torch.Tensor:
        u = a
        if b is not None:
            if self.resConfUnit1 is None:
                raise ValueError("this fusion block has no residual input")
            u = u + self.resConfUnit1(b)
        u = self.resConfUnit2(u)
        if size is None:
            u = F.interpolate(u, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            u = F.interpolate(u, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(u)


class DPTHead(nn.Module):
    """aggregated tokens -> (values [B, S, H, W, output_dim-1], conf [B, S, H, W]), or with
    ``feature_only`` a feature map [B, S, features, H/down_ratio, W/down_ratio]."""

    def __init__(self, dim_in: int, patch_size: int = 14, output_dim: int = 4,
                 activation: str = "inv_log", conf_activation: str = "expp1",
                 features: int = 256, out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23), pos_embed: bool = True,
                 feature_only: bool = False, down_ratio: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.activation, self.conf_activation = activation, conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        oc = list(out_channels)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for j, c in enumerate(oc):
            setattr(self.scratch, f"layer{j + 1}_rn", nn.Conv2d(c, features, 3, padding=1,
                                                                bias=False))
        for j in range(1, 5):
            setattr(self.scratch, f"refinenet{j}", FeatureFusionBlock(features, has_residual=j < 4))
        head_mid = features if feature_only else features // 2
        self.scratch.output_conv1 = nn.Conv2d(features, head_mid, 3, padding=1)
        if not feature_only:
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(head_mid, 32, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(32, output_dim, 1))

    def _add_pos(self, x: torch.Tensor, aspect_ratio: float) -> torch.Tensor:
        pe = dpt_pos_embed(x.shape[-2], x.shape[-1], x.shape[1], aspect_ratio, x.device)
        return x + 0.1 * pe.to(x.dtype)

    def forward_frames(self, aggregated_tokens_list: list[torch.Tensor], image_hw: Sequence[int],
                       patch_start_idx: int) -> torch.Tensor:
        """-> raw output [B*S, D, H/down, W/down] (D = output_dim, or features if feature_only)."""
        H, W = int(image_hw[0]), int(image_hw[1])
        h, w = H // self.patch_size, W // self.patch_size
        aspect = W / H
        maps = []
        for j, layer in enumerate(self.intermediate_layer_idx):
            tokens = aggregated_tokens_list[layer][:, :, patch_start_idx:]
            B, S, _, D = tokens.shape
            x = self.norm(tokens.reshape(B * S, h * w, D))
            x = x.permute(0, 2, 1).reshape(B * S, D, h, w)
            x = self.projects[j](x)
            if self.pos_embed:
                x = self._add_pos(x, aspect)
            maps.append(self.resize_layers[j](x))
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{j + 1}_rn")(m) for j, m in enumerate(maps))
        r4 = sc.refinenet4(l4, size=l3.shape[2:])
        r3 = sc.refinenet3(r4, l3, size=l2.shape[2:])
        r2 = sc.refinenet2(r3, l2, size=l1.shape[2:])
        r1 = sc.refinenet1(r2, l1)
        out = sc.output_conv1(r1)
        out = F.interpolate(out, size=(h * self.patch_size // self.down_ratio,
                                       w * self.patch_size // self.down_ratio),
                            mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = self._add_pos(out, aspect)
        if self.feature_only:
            return out
        return sc.output_conv2(out)

    def forward(self, aggregated_tokens_list: list[torch.Tensor], images: torch.Tensor,
                patch_start_idx: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """images [B, S, 3, H, W] (only the size is used)."""
        B, S, _, H, W = images.shape
        out = self.forward_frames(aggregated_tokens_list, (H, W), patch_start_idx)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])
        values, conf = activate_dense(out, self.activation, self.conf_activation)
        return values.reshape(B, S, *values.shape[1:]), conf.reshape(B, S, *conf.shape[1:])
