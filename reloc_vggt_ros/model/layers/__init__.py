"""Building blocks of VGGT: attention, transformer block, RoPE, MLP, patch embeddings."""

from reloc_vggt_ros.model.layers.attention import Attention, AttnFn
from reloc_vggt_ros.model.layers.block import Block
from reloc_vggt_ros.model.layers.layer_scale import LayerScale
from reloc_vggt_ros.model.layers.mlp import Mlp
from reloc_vggt_ros.model.layers.patch_embed import PatchEmbed
from reloc_vggt_ros.model.layers.rope import RotaryPositionEmbedding2D, grid_positions
from reloc_vggt_ros.model.layers.vision_transformer import (DinoVisionTransformer,
                                                            resample_pos_embed)

__all__ = ["Attention", "AttnFn", "Block", "LayerScale", "Mlp", "PatchEmbed",
           "RotaryPositionEmbedding2D", "grid_positions", "DinoVisionTransformer",
           "resample_pos_embed"]
