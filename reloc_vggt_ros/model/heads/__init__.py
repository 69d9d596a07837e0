"""VGGT prediction heads: camera (pose encoding), DPT (depth / points / features), tracking."""

from reloc_vggt_ros.model.heads.camera_head import CameraHead
from reloc_vggt_ros.model.heads.dpt_head import DPTHead
from reloc_vggt_ros.model.heads.track_head import TrackHead

__all__ = ["CameraHead", "DPTHead", "TrackHead"]
