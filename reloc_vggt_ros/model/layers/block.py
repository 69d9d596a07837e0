"""Pre-norm transformer block with LayerScale (aggregator, camera trunk and DINOv2 blocks)."""

from __future__ import annotations

import torch
from torch import nn

from reloc_vggt_ros.model.layers.attention import Attention, AttnFn
from reloc_vggt_ros.model.layers.layer_scale import LayerScale
from reloc_vggt_ros.model.layers.mlp import Mlp
from reloc_vggt_ros.model.layers.rope import RotaryPositionEmbedding2D

__all__ = ["Block"]


class Block(nn.Module):
    """y = x + ls1(attn(norm1(x))); out = y + ls2(mlp(norm2(y))). x: [B, N, C].

    ``norm_eps`` is 1e-5 in the aggregator and camera head, 1e-6 in DINOv2.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, init_values: float = 0.01,
                 qk_norm: bool = False, rope: RotaryPositionEmbedding2D | None = None,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias,
                              qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                attn_fn: AttnFn | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, attn_fn=attn_fn))
        return x + self.ls2(self.mlp(self.norm2(x)))
