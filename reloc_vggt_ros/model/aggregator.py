"""VGGT aggregator: patch embedding, camera/register tokens, alternating frame/global attention.

Token layout of one frame: [camera (1), registers (R), patches (h*w)], P = 1 + R + h*w.
Slot 0 of the camera/register parameters is used by frame 0 of each sequence, slot 1 by all
other frames. Layer i runs frame block i (attention within each frame) then global block i
(attention over all S*P tokens, frame-major) and outputs concat(frame_i, global_i): [B,S,P,2C].

Hooks for Reloc-VGGT: ``camera_tokens`` replaces the per-frame camera token (pose tokens),
``global_attn_fn(layer_idx, q, k, v, S, P)`` replaces dense global attention (sparse / cached
masks), ``frames`` says which sequence index each given frame has (so a single query frame can
be run through the layers with the right token slot), and ``embed`` / ``run_frame_block`` /
``run_global_block`` let a caller loop over the layers itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.layers import (AttnFn, Block, DinoVisionTransformer, PatchEmbed,
                                         RotaryPositionEmbedding2D, grid_positions)

__all__ = ["Aggregator", "GlobalAttnFn", "sincos_positions"]

GlobalAttnFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def sincos_positions(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed absolute 2D position embedding ``[h*w, dim]`` (row-major patches), no parameters.

    The DINOv2 patch embedding adds a learned absolute position table; a bare conv patch
    embedding has none, and RoPE alone only enters attention *scores*, so a token's value cannot
    say where in the image its content is (which relative pose from image shifts needs). First
    half of the channels encode the row, second half the column: sin/cos at ``100^(-i/(dim/4))``.
    """
    if dim % 4:
        raise ValueError(f"sincos positions need dim divisible by 4, got {dim}")
    n = dim // 4
    omega = 100.0 ** (-torch.arange(n, dtype=torch.float32, device=device) / n)
    rows = torch.arange(h, dtype=torch.float32, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32, device=device).repeat(h)
    parts = []
    for coord in (rows, cols):
        angle = coord[:, None] * omega[None]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=-1)


class Aggregator(nn.Module):
    """images [B, S, 3, H, W] in [0, 1] -> (list of depth x [B, S, P, 2C], patch_start_idx)."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        cfg = config
        C = cfg.embed_dim
        self.config = cfg
        self.patch_size = cfg.patch_size
        self.depth = cfg.depth
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_start_idx = 1 + cfg.num_register_tokens
        # Own parameters first so the state-dict order matches the official checkpoint.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, C))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, C))
        self.patch_embed: nn.Module
        if cfg.patch_embed == "conv":
            self.patch_embed = PatchEmbed(cfg.patch_size, 3, C)
        else:
            self.patch_embed = DinoVisionTransformer(
                img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=C,
                depth=cfg.dino_depth, num_heads=cfg.dino_num_heads, mlp_ratio=cfg.mlp_ratio,
                num_register_tokens=cfg.num_register_tokens)
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq)

        def make_block() -> Block:
            return Block(C, cfg.num_heads, cfg.mlp_ratio, init_values=cfg.init_values,
                         qk_norm=cfg.qk_norm, rope=self.rope, norm_eps=1e-5)

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(cfg.depth))
        # Tiny random tokens (not zeros) so the first-frame and other-frame slots differ when
        # training from scratch; loaded checkpoints overwrite them.
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        self.register_buffer("_resnet_mean", torch.tensor(_MEAN).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("_resnet_std", torch.tensor(_STD).view(1, 1, 3, 1, 1),
                             persistent=False)

    # -- token construction -------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 5:
            raise ValueError(f"images must be [B, S, 3, H, W], got {tuple(images.shape)}")
        if images.shape[2] != 3:
            raise ValueError(f"images must have 3 (RGB) channels, got {images.shape[2]}")
        H, W = images.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size "
                             f"{self.patch_size}")

    def _slot_tokens(self, param: torch.Tensor, B: int, frames: Sequence[int]) -> torch.Tensor:
        """param [1, 2, n, C] -> [B, S, n, C]: slot 0 where frames[s] == 0, else slot 1."""
        slots = torch.tensor([0 if f == 0 else 1 for f in frames], device=param.device)
        return param[0, slots].unsqueeze(0).expand(B, -1, -1, -1)

    @staticmethod
    def _first_frame_slots(param: torch.Tensor, B: int, S: int) -> torch.Tensor:
        """Same as ``_slot_tokens`` for the default order 0..S-1, built without a Python list of
        S entries: S stays a traced size, so ONNX exports keep the frame count dynamic."""
        rest = param[:, 1:2].expand(1, S - 1, -1, -1)
        return torch.cat([param[:, :1], rest], dim=1).expand(B, -1, -1, -1)

    def embed(self, images: torch.Tensor, camera_tokens: torch.Tensor | None = None,
              frames: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial tokens [B, S, P, C] and per-frame positions [P, 2] (y, x; int64).

        camera_tokens: optional [B, S, 1, C] replacing the learned camera token of each frame.
        frames: sequence index of each of the S frames (default 0..S-1); index 0 gets slot 0.
        """
        self._check_images(images)
        B, S, _, H, W = images.shape
        default_order = frames is None
        frames = list(range(S)) if frames is None else [int(f) for f in frames]
        if len(frames) != S:
            raise ValueError(f"frames has {len(frames)} entries for {S} frames")
        x = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(x.reshape(B * S, 3, H, W))
        C = patches.shape[-1]
        if self.config.patch_embed == "conv" and self.config.conv_pos_embed == "sincos":
            patches = patches + sincos_positions(H // self.patch_size, W // self.patch_size, C,
                                                 images.device).to(patches.dtype)
        patches = patches.reshape(B, S, -1, C)

        def slot_tokens(param: torch.Tensor) -> torch.Tensor:
            if default_order:
                return self._first_frame_slots(param, B, S)
            return self._slot_tokens(param, B, frames)

        if camera_tokens is None:
            camera = slot_tokens(self.camera_token)
        else:
            if camera_tokens.shape != (B, S, 1, C):
                raise ValueError(f"camera_tokens must be {(B, S, 1, C)}, got "
                                 f"{tuple(camera_tokens.shape)}")
            camera = camera_tokens
        registers = slot_tokens(self.register_token)
        tokens = torch.cat([camera.to(patches.dtype), registers.to(patches.dtype), patches], dim=2)
        h, w = H // self.patch_size, W // self.patch_size
        pos = grid_positions(h, w, self.patch_start_idx, device=images.device)
        return tokens, pos

    # -- one layer at a time ------------------------------------------------------------------

    def run_frame_block(self, i: int, tokens: torch.Tensor, pos: torch.Tensor,
                        attn_fn: AttnFn | None = None) -> torch.Tensor:
        """Frame block i: tokens [B, S, P, C], pos [P, 2] -> [B, S, P, C] (attention per frame)."""
        B, S, P, C = tokens.shape
        out = self.frame_blocks[i](tokens.reshape(B * S, P, C), pos=pos.expand(B * S, P, 2),
                                   attn_fn=attn_fn)
        return out.reshape(B, S, P, C)

    def run_global_block(self, i: int, tokens: torch.Tensor, pos: torch.Tensor,
                         global_attn_fn: GlobalAttnFn | None = None) -> torch.Tensor:
        """Global block i over all S*P tokens (frame-major): [B, S, P, C] -> [B, S, P, C].

        global_attn_fn(i, q, k, v, S, P) gets q/k/v [B, heads, S*P, head_dim]; None = dense.
        """
        B, S, P, C = tokens.shape
        attn_fn: AttnFn | None = None
        if global_attn_fn is not None:
            def attn_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return global_attn_fn(i, q, k, v, S, P)
        out = self.global_blocks[i](tokens.reshape(B, S * P, C),
                                    pos=pos.repeat(S, 1).expand(B, S * P, 2), attn_fn=attn_fn)
        return out.reshape(B, S, P, C)

    def run_layer(self, i: int, tokens: torch.Tensor, pos: torch.Tensor,
                  global_attn_fn: GlobalAttnFn | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame block i then global block i -> (frame_out, global_out), each [B, S, P, C]."""
        frame_out = self.run_frame_block(i, tokens, pos)
        return frame_out, self.run_global_block(i, frame_out, pos, global_attn_fn)

    def forward(self, images: torch.Tensor, camera_tokens: torch.Tensor | None = None,
                global_attn_fn: GlobalAttnFn | None = None, frames: Sequence[int] | None = None
                ) -> tuple[list[torch.Tensor], int]:
        """images [B, S, 3, H, W] in [0, 1] -> ([depth x [B, S, P, 2C]], patch_start_idx)."""
        tokens, pos = self.embed(images, camera_tokens, frames)
        outputs = []
        for i in range(self.depth):
            frame_out, tokens = self.run_layer(i, tokens, pos, global_attn_fn)
            outputs.append(torch.cat([frame_out, tokens], dim=-1))
        return outputs, self.patch_start_idx
