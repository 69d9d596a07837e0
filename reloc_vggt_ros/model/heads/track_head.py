"""Track head: DPT feature maps + a CoTracker-style iterative point tracker.

Query points (pixels, frame 0) are followed through all S frames. Each iteration samples a
local correlation pyramid around the current estimates, embeds the motion so far and lets an
update transformer (attention over time, and over points via 64 learned virtual tracks) refine
coordinates and per-frame track features. Coordinates live in feature-map pixels (stride 2,
align_corners=True sampling); frame 0 is pinned to the query after every iteration.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.heads.dpt_head import DPTHead
from reloc_vggt_ros.model.layers import Mlp

__all__ = ["TrackHead", "Tracker"]

_DEPTH, _HEADS, _VIRTUAL, _MAX_SCALE = 6, 8, 64, 518.0  # fixed in the reference


def _sample(maps: torch.Tensor, xy: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear sample (align_corners) maps [N, C, H, W] at pixel xy [N, ..., 2] -> [N, C, ...]."""
    H, W = maps.shape[-2:]
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=xy.device,
                         dtype=xy.dtype)
    grid = xy * scale - 1
    flat = grid.reshape(grid.shape[0], -1, 1, 2)
    out = F.grid_sample(maps, flat, mode="bilinear", padding_mode=padding, align_corners=True)
    return out.reshape(out.shape[:2] + xy.shape[1:-1])


def _flow_embedding(flow: torch.Tensor, dim: int) -> torch.Tensor:
    """flow [..., 2] -> [..., 2*dim]: interleaved sin/cos per component (x block, then y)."""
    freqs = torch.arange(0, dim, 2, device=flow.device).float() * (1000.0 / dim)
    parts = []
    for c in range(2):
        angles = flow[..., c:c + 1] * freqs
        emb = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        parts.append(emb)
    return torch.cat(parts, dim=-1)


def _grid_sincos(dim: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """2D sin/cos table [1, dim, H, W] (base 10000): first dim/2 channels x, last dim/2 y."""
    def one_axis(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64, device=device) / (d / 2))
        angles = pos.to(torch.float64)[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # [n, d]

    half = dim // 2
    ex = one_axis(torch.arange(width, dtype=torch.float32, device=device), half)
    ey = one_axis(torch.arange(height, dtype=torch.float32, device=device), half)
    table = torch.cat([ex[None].expand(height, -1, -1), ey[:, None].expand(-1, width, -1)], -1)
    return table.permute(2, 0, 1)[None].to(torch.float32)


class AttnBlock(nn.Module):
    """x <- LN1(x); x <- x + MHA(x, x, x); x <- x + MLP(LN2(x)). x: [B, L, C]."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """x <- LN1(x); x <- x + MHA(x, LNc(ctx), LNc(ctx)); x <- x + MLP(LN2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        ctx = self.norm_context(context)
        x = x + self.cross_attn(x, ctx, ctx, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """x [B, N, S, D] -> update [B, N, S, out_dim]: attention over time, and over points via
    learned virtual tracks (cost linear in N)."""

    def __init__(self, input_dim: int, hidden: int, output_dim: int) -> None:
        super().__init__()
        self.virual_tracks = nn.Parameter(torch.zeros(1, _VIRTUAL, 1, hidden))  # sic (checkpoint)
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, output_dim)
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, _HEADS) for _ in range(_DEPTH))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, _HEADS) for _ in range(_DEPTH))
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden, _HEADS) for _ in range(_DEPTH))
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden, _HEADS) for _ in range(_DEPTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, S, _ = x.shape
        projected = self.input_transform(self.input_norm(x))
        tokens = torch.cat([projected, self.virual_tracks.expand(B, -1, S, -1)], dim=1)
        T, C = tokens.shape[1], tokens.shape[-1]
        for i in range(_DEPTH):
            tokens = self.time_blocks[i](tokens.reshape(B * T, S, C)).reshape(B, T, S, C)
            space = tokens.permute(0, 2, 1, 3).reshape(B * S, T, C)
            point, virtual = space[:, :N], space[:, N:]
            virtual = self.space_virtual2point_blocks[i](virtual, point)
            virtual = self.space_virtual_blocks[i](virtual)
            point = self.space_point2virtual_blocks[i](point, virtual)
            tokens = torch.cat([point, virtual], dim=1).reshape(B, S, T, C).permute(0, 2, 1, 3)
        out = tokens[:, :N] + projected
        return self.flow_head(self.output_norm(out))


class Tracker(nn.Module):
    """fmaps [B, S, F, H', W'], query_points [B, N, 2] (pixels) -> per-iteration tracks."""

    def __init__(self, latent_dim: int, hidden: int, corr_levels: int, corr_radius: int,
                 stride: int = 2, iterations: int = 4) -> None:
        super().__init__()
        self.latent_dim, self.stride, self.iterations = latent_dim, stride, iterations
        self.corr_levels, self.corr_radius = corr_levels, corr_radius
        self.transformer_dim = 3 * latent_dim + 4  # flow emb (F+4) | corr (F) | track feat (F)
        corr_dim = corr_levels * (2 * corr_radius + 1) ** 2
        self.query_ref_token = nn.Parameter(torch.zeros(1, 2, self.transformer_dim))
        self.corr_mlp = Mlp(corr_dim, hidden, latent_dim)
        self.updateformer = UpdateFormer(self.transformer_dim, hidden, latent_dim + 2)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def _correlation(self, pyramid: list[torch.Tensor], feats: torch.Tensor,
                     coords: torch.Tensor) -> torch.Tensor:
        """feats [B, S, N, F], coords [B, S, N, 2] -> [B, S, N, L*(2r+1)^2]."""
        B, S, N, Fd = feats.shape
        r = self.corr_radius
        d = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        dx, dy = torch.meshgrid(d, d, indexing="ij")  # first (slow) index = x offset
        offsets = torch.stack([dx, dy], dim=-1).reshape(1, -1, 2)
        out = []
        for level, fmap in enumerate(pyramid):
            Hl, Wl = fmap.shape[-2:]
            volume = torch.einsum("bsnc,bschw->bsnhw", feats, fmap) / math.sqrt(Fd)
            xy = coords.reshape(B * S * N, 1, 2) / 2 ** level + offsets
            sampled = _sample(volume.reshape(B * S * N, 1, Hl, Wl), xy, padding="zeros")
            out.append(sampled.reshape(B, S, N, -1))
        return torch.cat(out, dim=-1)

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor,
                iterations: int | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """-> (tracks per iteration [B, S, N, 2] pixels, vis [B, S, N], conf [B, S, N])."""
        B, S, Fd, Hf, Wf = fmaps.shape
        N = query_points.shape[1]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        query = query_points / self.stride  # [B, N, 2] feature pixels
        coords = query[:, None].expand(B, S, N, 2).clone()
        query_feat = _sample(fmaps[:, 0], query, padding="border").permute(0, 2, 1)  # [B, N, F]
        feats = query_feat[:, None].expand(B, S, N, Fd).clone()
        pyramid = [fmaps.reshape(B * S, Fd, Hf, Wf)]
        for _ in range(1, self.corr_levels):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        pyramid = [p.reshape(B, S, Fd, *p.shape[-2:]) for p in pyramid]
        grid_pe = _grid_sincos(self.transformer_dim, Hf, Wf, fmaps.device).expand(B, -1, -1, -1)
        pos = _sample(grid_pe, query, padding="border").permute(0, 2, 1)  # [B, N, D]
        ref = torch.cat([self.query_ref_token[:, :1],
                         self.query_ref_token[:, 1:].expand(-1, S - 1, -1)], dim=1)  # [1, S, D]
        tracks = []
        for _ in range(iterations or self.iterations):
            coords = coords.detach()
            corr = self.corr_mlp(self._correlation(pyramid, feats, coords))  # [B, S, N, F]
            flow = coords - coords[:, :1]
            flow_emb = torch.cat([_flow_embedding(flow, Fd // 2), flow / _MAX_SCALE,
                                  flow / _MAX_SCALE], dim=-1)
            x = torch.cat([flow_emb, corr, feats], dim=-1)  # [B, S, N, D]
            x = x + pos[:, None] + ref[:, :, None]
            delta = self.updateformer(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # [B, S, N, 2+F]
            d_feat = self.ffeat_norm(delta[..., 2:].reshape(-1, Fd))
            feats = feats + self.ffeat_updater(d_feat).reshape(B, S, N, Fd)
            coords = coords + delta[..., :2]
            coords = torch.cat([query[:, None], coords[:, 1:]], dim=1)
            tracks.append(coords * self.stride)
        vis = torch.sigmoid(self.vis_predictor(feats).squeeze(-1))
        conf = torch.sigmoid(self.conf_predictor(feats).squeeze(-1))
        return tracks, vis, conf


class TrackHead(nn.Module):
    """aggregated tokens + query points [B, N, 2] (pixels in frame 0) -> tracks, vis, conf."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        cfg = config
        self.feature_extractor = DPTHead(
            2 * cfg.embed_dim, patch_size=cfg.patch_size, features=cfg.track_features,
            out_channels=cfg.dpt_out_channels, intermediate_layer_idx=cfg.dpt_layers,
            pos_embed=False, feature_only=True, down_ratio=2)
        self.tracker = Tracker(cfg.track_features, cfg.track_hidden, cfg.track_corr_levels,
                               cfg.track_corr_radius, stride=2, iterations=cfg.track_iterations)

    def forward(self, aggregated_tokens_list: list[torch.Tensor], images: torch.Tensor,
                patch_start_idx: int, query_points: torch.Tensor, iterations: int | None = None,
                return_feats: bool = False):
        """-> (tracks per iteration [B, S, N, 2], vis [B, S, N], conf [B, S, N][, fmaps])."""
        if query_points.ndim != 3 or query_points.shape[-1] != 2:
            raise ValueError(f"query_points must be [B, N, 2], got {tuple(query_points.shape)}")
        fmaps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)
        tracks, vis, conf = self.tracker(query_points, fmaps, iterations)
        return (tracks, vis, conf, fmaps) if return_feats else (tracks, vis, conf)
