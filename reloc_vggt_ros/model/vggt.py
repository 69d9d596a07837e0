"""VGGT: aggregator + camera, depth, point and track heads. Attribute names = checkpoint keys."""

from __future__ import annotations

import torch
from torch import nn

from reloc_vggt_ros.model.aggregator import Aggregator
from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.heads import CameraHead, DPTHead, TrackHead

__all__ = ["VGGT"]


class VGGT(nn.Module):
    """Feed-forward multi-view geometry. ``VGGT()`` is VGGT-1B; disabled heads are None."""

    def __init__(self, config: VGGTConfig | None = None) -> None:
        super().__init__()
        cfg = config or VGGTConfig()
        self.config = cfg
        dim_2c = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(
            dim_2c, trunk_depth=cfg.camera_trunk_depth, num_heads=cfg.camera_num_heads,
            mlp_ratio=cfg.mlp_ratio, init_values=cfg.init_values,
            num_iterations=cfg.camera_iterations) if cfg.enable_camera else None
        # Registration order (point before depth) follows the official state dict.
        self.point_head = self._dpt(cfg, output_dim=4, activation="inv_log") \
            if cfg.enable_point else None
        self.depth_head = self._dpt(cfg, output_dim=2, activation="exp") \
            if cfg.enable_depth else None
        self.track_head = TrackHead(cfg) if cfg.enable_track else None

    @staticmethod
    def _dpt(cfg: VGGTConfig, output_dim: int, activation: str) -> DPTHead:
        return DPTHead(2 * cfg.embed_dim, patch_size=cfg.patch_size, output_dim=output_dim,
                       activation=activation, conf_activation="expp1",
                       features=cfg.dpt_features, out_channels=cfg.dpt_out_channels,
                       intermediate_layer_idx=cfg.dpt_layers)

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """images [B, S, 3, H, W] or [S, 3, H, W], RGB in [0, 1]; H, W multiples of 14.

        query_points: optional [B, N, 2] or [N, 2] pixel (x, y) in frame 0 (track head).
        Returns (present heads only):
          pose_enc [B, S, 9] (t, quat xyzw, fov_h, fov_w; camera-from-world) and
          pose_enc_list (one [B, S, 9] per refinement iteration);
          depth [B, S, H, W, 1], depth_conf [B, S, H, W];
          world_points [B, S, H, W, 3], world_points_conf [B, S, H, W];
          track [B, S, N, 2], vis [B, S, N], conf [B, S, N] (when query_points are given);
          images (the input, in eval mode).
        """
        if images.ndim == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.ndim == 2:
            query_points = query_points.unsqueeze(0)
        tokens, patch_start_idx = self.aggregator(images)
        preds: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            tokens = [t.float() for t in tokens]  # heads run in fp32 (no-op for fp32 tokens)
            if self.camera_head is not None:
                pose_enc_list = self.camera_head(tokens)
                preds["pose_enc"] = pose_enc_list[-1]
                preds["pose_enc_list"] = pose_enc_list
            if self.depth_head is not None:
                preds["depth"], preds["depth_conf"] = self.depth_head(tokens, images,
                                                                      patch_start_idx)
            if self.point_head is not None:
                preds["world_points"], preds["world_points_conf"] = self.point_head(
                    tokens, images, patch_start_idx)
        if self.track_head is not None and query_points is not None:
            track_list, vis, conf = self.track_head(tokens, images, patch_start_idx,
                                                    query_points=query_points)
            preds["track"], preds["vis"], preds["conf"] = track_list[-1], vis, conf
        if not self.training:
            preds["images"] = images
        return preds
