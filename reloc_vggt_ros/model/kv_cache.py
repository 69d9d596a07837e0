"""Cached-mask inference: keyframe keys/values computed once per keyframe set, reused per query.

Under the ``cached`` mask (see :mod:`.masks`) no keyframe token ever attends to the query, so
running the keyframes alone gives exactly the keyframe part of the full forward. We keep, for
every global block, the keyframes' keys and values (after qk-norm and RoPE) and their last-layer
camera tokens (the camera head's input). A query then runs *one frame* through the layers: its
frame blocks are its own, and in global block i its queries attend to
``[cached keys_i of all keyframes, its own keys_i]`` — the query row of the cached mask. Cost per
query: one frame of compute plus attention over K·P cached keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .aggregator import Aggregator
from .masks import masked_attention

__all__ = ["KeyframeKV", "build_keyframe_kv", "query_forward"]


@dataclass
class KeyframeKV:
    """Per-global-layer keyframe keys/values ``[B, heads, K·P, d]`` and camera tokens ``[B, K, 2C]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    camera_tokens: torch.Tensor
    num_frames: int
    tokens_per_frame: int

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, self.camera_tokens))


def build_keyframe_kv(aggregator: Aggregator, images: torch.Tensor,
                      camera_tokens: torch.Tensor | None = None) -> tuple[KeyframeKV, list[torch.Tensor]]:
    """Run the keyframes ``[B, K, 3, H, W]`` (anchor first) under the cached mask; keep their K/V.

    Returns the cache and the aggregator outputs (list of ``[B, K, P, 2C]``).
    """
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def record(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
        keys.append(k)
        values.append(v)
        return masked_attention("cached", q, k, v, S, P, has_query=False)

    outputs, _ = aggregator(images, camera_tokens=camera_tokens, global_attn_fn=record)
    last = outputs[-1]
    cache = KeyframeKV(keys, values, last[:, :, 0], num_frames=last.shape[1],
                       tokens_per_frame=last.shape[2])
    return cache, outputs


def query_forward(aggregator: Aggregator, cache: KeyframeKV, image: torch.Tensor,
                  camera_token: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Run one query frame ``[B, 1, 3, H, W]`` against cached keyframes -> list of ``[B, 1, P, 2C]``.

    The query takes sequence index K (camera/register slot 1), as in the full forward.
    """
    if image.shape[1] != 1:
        raise ValueError(f"query_forward runs one frame per sequence, got S={image.shape[1]}")
    tokens, pos = aggregator.embed(image, camera_token, frames=[cache.num_frames])
    if tokens.shape[2] != cache.tokens_per_frame:
        raise ValueError(f"query has {tokens.shape[2]} tokens per frame, cache {cache.tokens_per_frame}: "
                         "keyframes and query must share one image size")

    def attend_cached(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
        k_all = torch.cat([cache.keys[i], k], dim=2)
        v_all = torch.cat([cache.values[i], v], dim=2)
        return torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all)

    outputs = []
    for i in range(aggregator.depth):
        frame_out, tokens = aggregator.run_layer(i, tokens, pos, attend_cached)
        outputs.append(torch.cat([frame_out, tokens], dim=-1))
    return outputs
