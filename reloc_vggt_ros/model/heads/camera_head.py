"""Camera head: iteratively refined pose encodings from the camera tokens of the last layer.

Each iteration embeds the current *raw* encoding (the learned empty token at first), modulates
the normalised camera tokens with it (adaLN: shift, scale, gate), runs a small transformer over
the S frames and adds a residual update to the raw encoding. FoVs go through ReLU only in the
returned (activated) encodings, never in what is fed back.
"""

from __future__ import annotations

import torch
from torch import nn

from reloc_vggt_ros.model.heads.head_act import activate_pose
from reloc_vggt_ros.model.layers import Block, Mlp

__all__ = ["CameraHead"]

POSE_DIM = 9  # absT_quaR_FoV: t (3), quaternion xyzw (4), fov_h, fov_w


class CameraHead(nn.Module):
    """aggregated tokens (list, last entry [B, S, P, 2C]) -> list of num_iterations [B, S, 9]."""

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, num_heads: int = 16,
                 mlp_ratio: float = 4.0, init_values: float = 0.01,
                 num_iterations: int = 4) -> None:
        super().__init__()
        self.num_iterations = num_iterations
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, mlp_ratio, init_values=init_values,
                                           norm_eps=1e-5) for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_DIM)

    def forward(self, aggregated_tokens_list: list[torch.Tensor],
                num_iterations: int | None = None) -> list[torch.Tensor]:
        """Returns the activated pose encoding [B, S, 9] after each refinement iteration."""
        return self.refine(aggregated_tokens_list[-1][:, :, 0], num_iterations)[0]

    def refine(self, camera_tokens: torch.Tensor, num_iterations: int | None = None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """camera_tokens [B, S, 2C] -> (activated, raw) encodings per iteration, each [B, S, 9]."""
        tokens = self.token_norm(camera_tokens)
        B, S, _ = tokens.shape
        activated: list[torch.Tensor] = []
        raw_list: list[torch.Tensor] = []
        raw: torch.Tensor | None = None
        for _ in range(num_iterations or self.num_iterations):
            pose_in = self.empty_pose_tokens.expand(B, S, -1) if raw is None else raw.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(pose_in)).chunk(3, dim=-1)
            z = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(z)))
            raw = delta if raw is None else raw + delta
            raw_list.append(raw)
            activated.append(activate_pose(raw))
        return activated, raw_list
