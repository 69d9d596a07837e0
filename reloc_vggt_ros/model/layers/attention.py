"""Multi-head self-attention with optional qk-norm and 2D RoPE, and a pluggable kernel.

The attention kernel is replaceable per call (``attn_fn(q, k, v) -> out``, all
[B, heads, N, head_dim]) so that masked / sparse / cached-KV variants reuse these weights.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reloc_vggt_ros.model.layers.rope import RotaryPositionEmbedding2D

__all__ = ["Attention", "AttnFn"]

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Attention(nn.Module):
    """qkv Linear(C -> 3C) laid out [q | k | v], head-major; proj Linear(C -> C).

    qk-norm is one LayerNorm over head_dim shared by all heads (keys ``q_norm``/``k_norm``),
    applied before RoPE. Without qk-norm these keys do not exist.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False, rope: RotaryPositionEmbedding2D | None = None,
                 qk_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm: nn.Module = (nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm
                                  else nn.Identity())
        self.k_norm: nn.Module = (nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm
                                  else nn.Identity())
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def qkv_heads(self, x: torch.Tensor, pos: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, C] -> q, k, v [B, heads, N, head_dim] after qk-norm and RoPE."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        return q, k, v

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                attn_fn: AttnFn | None = None) -> torch.Tensor:
        """x [B, N, C], pos [B, N, 2] or None -> [B, N, C]."""
        B, N, C = x.shape
        q, k, v = self.qkv_heads(x, pos)
        out = attn_fn(q, k, v) if attn_fn is not None else F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))
