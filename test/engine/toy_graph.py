"""A small self-made graph with what the real model exports: patch-embed conv, pose tokens,
layer norm, masked multi-head attention whose mask is built from the frame count, and a gather
of the query frame. Used to prove export/parity/op-coverage independently of the model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reloc_vggt_ros.engine.graphs import KEYFRAME_AXIS, ExportableGraph


class ToyRelocGraph(ExportableGraph):
    graph_name = "toy_reloc"
    input_names = ("images", "known_pose_enc")
    output_names = ("pose_enc", "query_pose_enc")

    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.size, self.heads = size, heads
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pose_proj = nn.Linear(9, dim)
        self.query_token = nn.Parameter(torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 9)

    def input_shapes(self, num_keyframes: int) -> dict[str, tuple[int, ...]]:
        return {"images": (1, num_keyframes + 1, 3, self.size, self.size),
                "known_pose_enc": (1, num_keyframes, 9)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"images": {1: "num_frames"}, "known_pose_enc": {1: KEYFRAME_AXIS},
                "pose_enc": {1: "num_frames"}}

    def model_config(self) -> dict:
        return {"name": "toy", "size": self.size, "heads": self.heads}

    def forward(self, images: torch.Tensor, known_pose_enc: torch.Tensor):
        b, s = images.shape[:2]
        x = self.patch_embed(images.flatten(0, 1))                # [B*S, C, h, w]
        x = x.flatten(2).transpose(1, 2).reshape(b, s, -1, x.shape[1])   # [B, S, P, C]
        cam = torch.cat([self.pose_proj(known_pose_enc), self.query_token.expand(b, 1, -1)], 1)
        x = torch.cat([cam.unsqueeze(2), x], dim=2)               # camera token first
        p = x.shape[2]
        # sparse mask: frame i sees frame j iff i == j or either is the anchor (0) or query (S-1)
        frame = torch.arange(s, device=x.device)
        special = (frame == 0) | (frame == s - 1)
        allow = (frame[:, None] == frame[None, :]) | special[:, None] | special[None, :]
        allow = allow.repeat_interleave(p, 0).repeat_interleave(p, 1)
        tokens = self.norm(x.reshape(b, s * p, -1))
        q, k, v = self.qkv(tokens).reshape(b, s * p, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allow)
        tokens = tokens + self.proj(att.transpose(1, 2).reshape(b, s * p, -1))
        cam_tokens = tokens.reshape(b, s, p, -1)[:, :, 0]         # gather the camera tokens
        pose_enc = self.head(cam_tokens)
        return pose_enc, pose_enc[:, -1]
