"""2D rotary position embedding of the aggregator (rows on the first half of a head, columns
on the second half), and the token positions it expects.

Positions are integer (y, x) pairs. Patch (r, c) sits at (r + 1, c + 1) and the special tokens
(camera, registers) at (0, 0), which leaves them unrotated.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RotaryPositionEmbedding2D", "grid_positions"]


def grid_positions(h: int, w: int, num_special: int, device: torch.device | None = None
                   ) -> torch.Tensor:
    """Positions of one frame's tokens: [num_special + h*w, 2] int64 (y, x), patches row-major."""
    rows = torch.arange(1, h + 1, device=device).repeat_interleave(w)
    cols = torch.arange(1, w + 1, device=device).repeat(h)
    patches = torch.stack([rows, cols], dim=-1)
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches], dim=0)


def _rotate_half(v: torch.Tensor) -> torch.Tensor:
    first, second = v.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class RotaryPositionEmbedding2D(nn.Module):
    """Apply 2D RoPE to per-head features.

    forward(x [batch, heads, N, d], pos [batch, N, 2] (y, x)) -> [batch, heads, N, d].
    d must be divisible by 4. Angles are computed in float32 (no learned parameters).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        if base <= 0:
            raise ValueError(f"RoPE base must be > 0, got {base}")
        self.base = float(base)

    def _rotate(self, v: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        """Rotate-half RoPE of v [batch, heads, N, m] by one coordinate [batch, N]."""
        m = v.shape[-1]
        inv_freq = 1.0 / (self.base ** (torch.arange(0, m, 2, device=v.device).float() / m))
        angles = coord.to(torch.float32)[..., None] * inv_freq  # [batch, N, m/2]
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # [batch, 1, N, m]
        cos, sin = angles.cos().to(v.dtype), angles.sin().to(v.dtype)
        return v * cos + _rotate_half(v) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 != 0:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {x.shape[-1]}")
        if pos.shape[-2] != x.shape[-2] or pos.shape[-1] != 2:
            raise ValueError(f"positions {tuple(pos.shape)} do not match tokens {tuple(x.shape)}")
        y_half, x_half = x.chunk(2, dim=-1)
        return torch.cat([self._rotate(y_half, pos[..., 0]), self._rotate(x_half, pos[..., 1])],
                         dim=-1)
