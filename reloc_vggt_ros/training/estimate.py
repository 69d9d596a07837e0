"""Analytic memory and time per training step (for planning GPU runs; nothing here is measured).

Parameters are counted exactly on a meta-device model (no memory allocated). FLOPs count the
matrix products of every transformer block: per token ``24 C^2`` (qkv, projection, 4x MLP) plus
``4 C n`` for attention over ``n`` keys, times 2 for multiply-add already included. Backward is
2x forward for weights+activations (stage 2) and 1x for activation gradients only (stage 1: the
pose tokens enter at the first layer, so gradients still flow through the frozen backbone);
gradient checkpointing adds one more forward. Memory: fp32 weights (4 B/param), plus gradients
and AdamW moments (12 B/param) for trainable parameters, plus checkpointed block inputs (fp32
residual stream) and one block's working set in bf16 (fused attention: no S·P x S·P matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.reloc_vggt import RelocVGGT, RelocVGGTConfig

__all__ = ["StepEstimate", "estimate_step", "GPU_PEAK_TFLOPS"]

GPU_PEAK_TFLOPS = {"A100 (bf16)": 312.0, "H100 SXM (bf16)": 989.0, "RTX 4090 (bf16)": 165.0}


@dataclass(frozen=True)
class StepEstimate:
    params_total: int
    params_trainable: int
    tokens_per_frame: int
    tflops_per_step: float
    memory_gb: float

    def seconds(self, peak_tflops: float, mfu: float = 0.35) -> float:
        """Time per step at ``mfu`` (model FLOPs utilisation; 0.3-0.45 is typical for ViTs)."""
        return self.tflops_per_step / (peak_tflops * mfu)


def _keys_per_query_frame(mask: str, S: int, P: int) -> float:
    """Mean number of keys a frame's tokens attend to in a global block."""
    if mask == "dense":
        return S * P
    if mask == "sparse":       # anchor and query see all frames, db frames see {self, anchor, query}
        return (2 * S * P + (S - 2) * 3 * P) / S
    # cached: db frames see {self, anchor}, anchor itself, query sees all
    return (P + (S - 2) * 2 * P + S * P) / S


def estimate_step(config: RelocVGGTConfig, batch: int, num_frames: int, stage: int,
                  grad_checkpointing: bool = True) -> StepEstimate:
    with torch.device("meta"):
        model = RelocVGGT(config)
    new = tuple(model.new_module_names())
    total = sum(p.numel() for p in model.parameters())
    trainable = total if stage == 2 else sum(p.numel() for n, p in model.named_parameters() if n.startswith(new))
    v = config.vggt
    C, S, B = v.embed_dim, num_frames, batch
    h, w = (d // v.patch_size for d in config.image_hw)
    P = h * w + 1 + v.num_register_tokens
    per_token_block = 24 * C * C
    dino = v.dino_depth * (per_token_block + 4 * C * (h * w + 1 + v.num_register_tokens)) if v.patch_embed == "dinov2" else 0
    frame = v.depth * (per_token_block + 4 * C * P)
    glob = v.depth * (per_token_block + 4 * C * _keys_per_query_frame(config.mask, S, P))
    C2 = 2 * C
    head = v.camera_iterations * v.camera_trunk_depth * (24 * C2 * C2 + 4 * C2 * S) / P   # S tokens only
    fwd = B * S * P * (dino + frame + glob + head)
    factor = (3.0 if stage == 2 else 2.0) + (1.0 if grad_checkpointing else 0.0)
    blocks = v.dino_depth + 2 * v.depth if v.patch_embed == "dinov2" else 2 * v.depth
    act_ckpt = blocks * B * S * P * C * 4                       # saved block inputs (fp32)
    act_block = B * S * P * C * (3 + 1 + 4 + 4 + 2) * 2         # one block recomputed (bf16)
    act = act_ckpt + act_block if grad_checkpointing else blocks * B * S * P * C * 34
    mem = total * 4 + trainable * 12 + act
    return StepEstimate(total, trainable, P, fwd * factor / 1e12, mem / 1e9)
