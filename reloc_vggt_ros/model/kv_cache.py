"""Cached-mask inference: keyframe keys/values computed once per keyframe set, reused per query.

Under the ``cached`` mask (see :mod:`.masks`) no keyframe token ever attends to the query, so
running the keyframes alone gives exactly the keyframe part of the full forward. We keep, for
every global block, the keyframes' keys and values (after qk-norm and RoPE) and their last-layer
camera tokens (the camera head's input). A query then runs *one frame* through the layers: its
frame blocks are its own, and in global block i its queries attend to
``[cached keys_i of all keyframes, its own keys_i]`` — the query row of the cached mask. Cost per
query: one frame of compute plus attention over K·P cached keys.

:class:`KeyframeKV` is the cache's content (its stacked form is what the exported keyframe
encoder outputs and the query graph takes, see ``engine/reloc_graphs.py``);
:class:`KeyframeCache` is the one place a localizer keeps it between queries, whatever runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F

from .aggregator import Aggregator, GlobalAttnFn
from .masks import masked_attention

__all__ = ["KeyframeKV", "KeyframeCache", "last_layer_tokens", "build_keyframe_kv", "query_forward"]

T = TypeVar("T")


def last_layer_tokens(aggregator: Aggregator, images: torch.Tensor, camera_tokens: torch.Tensor | None = None,
                      global_attn_fn: GlobalAttnFn | None = None, frames: Sequence[int] | None = None
                      ) -> torch.Tensor:
    """Like ``aggregator(...)[0][-1]`` (``[B, S, P, 2C]``) without keeping the other layers' outputs.

    The camera head reads only the last layer; at VGGT-1B size the full list costs ~0.2 GB per
    frame, so the localizers and the benchmark loop the layers themselves.
    """
    tokens, pos = aggregator.embed(images, camera_tokens, frames)
    frame_out = tokens
    for i in range(aggregator.depth):
        frame_out, tokens = aggregator.run_layer(i, tokens, pos, global_attn_fn)
    return torch.cat([frame_out, tokens], dim=-1)


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

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keys [L, B, heads, K·P, d], values [same], camera_tokens [B, K, 2C])``: one tensor
        per name, the layout of the exported graphs."""
        return torch.stack(self.keys), torch.stack(self.values), self.camera_tokens

    @classmethod
    def from_stacked(cls, keys: torch.Tensor, values: torch.Tensor, camera_tokens: torch.Tensor) -> KeyframeKV:
        """Inverse of :meth:`stacked`."""
        K = camera_tokens.shape[1]
        return cls(list(keys.unbind(0)), list(values.unbind(0)), camera_tokens, num_frames=K,
                   tokens_per_frame=keys.shape[3] // K)


class KeyframeCache(Generic[T]):
    """The encoded keyframes of the last keyframe set, under a key naming that set.

    Consecutive queries mostly retrieve the same keyframes; under the cached mask their encoding
    is then reused and only the query frame runs. One slot: a new key replaces the old value.
    The value is whatever the encoder returns (a :class:`KeyframeKV` on the torch path, the
    keyframe graph's named arrays on an engine).
    """

    def __init__(self) -> None:
        self.key: Hashable | None = None
        self.value: T | None = None

    def get(self, key: Hashable, encode: Callable[[], T]) -> T:
        """The cached value for ``key``, running ``encode()`` first when the key changed."""
        if self.value is None or key != self.key:
            self.value, self.key = encode(), key
        return self.value

    def clear(self) -> None:
        self.key = self.value = None


def build_keyframe_kv(aggregator: Aggregator, images: torch.Tensor,
                      camera_tokens: torch.Tensor | None = None) -> tuple[KeyframeKV, torch.Tensor]:
    """Run the keyframes ``[B, K, 3, H, W]`` (anchor first) under the cached mask; keep their K/V.

    Returns the cache and the keyframes' last-layer tokens ``[B, K, P, 2C]``.
    """
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def record(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
        keys.append(k)
        values.append(v)
        return masked_attention("cached", q, k, v, S, P, has_query=False)

    last = last_layer_tokens(aggregator, images, camera_tokens, record)
    cache = KeyframeKV(keys, values, last[:, :, 0], num_frames=last.shape[1], tokens_per_frame=last.shape[2])
    return cache, last


def query_forward(aggregator: Aggregator, cache: KeyframeKV, image: torch.Tensor,
                  camera_token: torch.Tensor | None = None) -> torch.Tensor:
    """Run one query frame ``[B, 1, 3, H, W]`` against cached keyframes -> last-layer tokens ``[B, 1, P, 2C]``.

    The query takes sequence index K (camera/register slot 1), as in the full forward.
    """
    if image.shape[1] != 1:
        raise ValueError(f"query_forward runs one frame per sequence, got S={image.shape[1]}")

    def attend_cached(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
        if k.shape[2] != cache.tokens_per_frame:
            raise ValueError(f"query has {k.shape[2]} tokens per frame, cache {cache.tokens_per_frame}: "
                             "keyframes and query must share one image size")
        k_all = torch.cat([cache.keys[i], k], dim=2)
        v_all = torch.cat([cache.values[i], v], dim=2)
        return F.scaled_dot_product_attention(q, k_all, v_all)

    return last_layer_tokens(aggregator, image, camera_token, attend_cached, frames=[cache.num_frames])
