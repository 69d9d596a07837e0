"""DINOv2 ViT with register tokens, used as VGGT's patch embedding (VGGT-1B: ViT-L/14-reg).

Only the final-normalised patch tokens leave this module; DINO's cls and register outputs are
discarded because the aggregator adds its own camera and register tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reloc_vggt_ros.model.layers.block import Block
from reloc_vggt_ros.model.layers.patch_embed import PatchEmbed

__all__ = ["DinoVisionTransformer", "resample_pos_embed"]


def resample_pos_embed(pos_embed: torch.Tensor, h: int, w: int, square_image: bool
                       ) -> torch.Tensor:
    """Fit a [1, 1 + M*M, C] table (cls row first) to an h x w patch grid -> [1, 1 + h*w, C].

    The grid part is resized with antialiased bicubic (PIL-like, a = -0.5) in float32; the cls
    row is kept. Nothing is resampled when the grid already matches and the image is square.
    """
    num_grid = pos_embed.shape[1] - 1
    M = int(round(num_grid ** 0.5))
    if M * M != num_grid:
        raise ValueError(f"positional table with {num_grid} grid rows is not square")
    if h * w == num_grid and square_image:
        return pos_embed
    dtype = pos_embed.dtype
    cls_row, grid = pos_embed[:, :1], pos_embed[:, 1:].float()
    C = grid.shape[-1]
    grid = grid.reshape(1, M, M, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, C)
    return torch.cat([cls_row, grid.to(dtype)], dim=1)


class DinoVisionTransformer(nn.Module):
    """images [N, 3, H, W] (already normalised) -> patch tokens [N, h*w, C] after final LN."""

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024,
                 depth: int = 24, num_heads: int = 16, mlp_ratio: float = 4.0,
                 num_register_tokens: int = 4, init_values: float = 1.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        grid = img_size // patch_size
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # in checkpoints, never used
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=norm_eps)
            for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def pos_embed_for(self, H: int, W: int) -> torch.Tensor:
        """Positional table for an H x W input: [1, 1 + h*w, C]."""
        return resample_pos_embed(self.pos_embed, H // self.patch_size, W // self.patch_size,
                                  square_image=H == W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(N, -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed_for(H, W)
        tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(N, -1, -1), tokens[:, 1:]],
                           dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_register_tokens:]
