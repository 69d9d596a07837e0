"""Global-attention masks of Reloc-VGGT, computed by grouping frames — never as an N×N mask.

Frame order is ``[anchor, db_2 … db_K, query]`` (S = K + 1 frames of P tokens each, frame-major).
"Frame i attends to frame j" means every token of frame i sees every token of frame j.

* ``dense``  — every frame attends to every frame (official VGGT): S² frame blocks.
* ``sparse`` — the paper's mask: i attends to j iff i == j or i ∈ {anchor, query} or
  j ∈ {anchor, query}: 5S − 6 blocks for S ≥ 2. Anchor and query rows run one SDPA over all
  keys; the db rows run one batched SDPA over gathered keys [anchor, self, query].
* ``cached`` — keyframes never look at the query, so their keys/values are a function of the
  keyframe set alone and can be cached across queries: the anchor attends to all keyframes
  (anchor + db, *not* the query), each db frame attends to [anchor, self], the query attends
  to everything. 4S − 5 blocks for S ≥ 2 (S − 1 + 2(S − 2) + S).

All functions take q/k/v ``[B, heads, S·P, d]`` and return ``[B, heads, S·P, d]``; they use
only slicing, ``cat``, ``reshape`` and 4-D SDPA, which export to ONNX. ``reference_mask``
builds the dense boolean mask for tests only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["MaskType", "frame_allow", "reference_mask", "num_blocks", "masked_attention",
           "global_attn_fn", "GlobalAttnFn"]

GlobalAttnFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]


class MaskType(str, enum.Enum):
    DENSE = "dense"
    SPARSE = "sparse"
    CACHED = "cached"

    @classmethod
    def parse(cls, value: "str | MaskType") -> "MaskType":
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"mask must be one of {[m.value for m in cls]}, got {value!r}") from None


def frame_allow(mask: MaskType | str, S: int, has_query: bool = True) -> torch.Tensor:
    """Frame-level allow matrix ``[S, S]`` (bool, row attends to column).

    ``has_query=False`` describes a keyframes-only sequence (the cached mode's keyframe pass):
    the last frame is then a db frame, not the query.
    """
    mask = MaskType.parse(mask)
    allow = torch.eye(S, dtype=torch.bool)
    if mask is MaskType.DENSE or S == 1:
        return torch.ones(S, S, dtype=torch.bool)
    q = S - 1 if has_query else None
    if mask is MaskType.SPARSE:
        hubs = [0] if q is None else [0, q]
        allow[hubs, :] = True
        allow[:, hubs] = True
    else:  # cached
        kf_end = S - 1 if q is not None else S
        allow[0, :kf_end] = True
        allow[:kf_end, 0] = True
        if q is not None:
            allow[q, :] = True
    return allow


def reference_mask(mask: MaskType | str, S: int, P: int, has_query: bool = True) -> torch.Tensor:
    """Dense token-level boolean mask ``[S·P, S·P]``: the slow reference the tests compare to."""
    allow = frame_allow(mask, S, has_query)
    return allow.repeat_interleave(P, dim=0).repeat_interleave(P, dim=1)


def num_blocks(mask: MaskType | str, S: int) -> int:
    """Number of (query frame, key frame) blocks computed for S frames (query included)."""
    return int(frame_allow(mask, S).sum())


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, P: int, lo: int, hi: int,
             key_frames: Callable[[torch.Tensor], list[torch.Tensor]], n_keys: int) -> torch.Tensor:
    """Frames ``lo..hi-1`` (``hi`` may be negative) each attend to their own ``n_keys`` gathered
    key frames, as one batched SDPA.

    ``key_frames(x5)`` maps a ``[B, h, S, P, d]`` view to ``n_keys`` pieces ``[B, h, M, P, d]``
    concatenated along the token axis (M = number of grouped frames). The frame count only appears as ``-1`` in
    reshapes, so an ONNX export stays valid for any S (also M = 0, where ONNX would read an
    explicit 0 in a Reshape as "copy this dimension").
    """
    B, H, _, d = q.shape
    q_g = q[:, :, lo * P:hi * P].reshape(B, -1, P, d)
    k_g = torch.cat(key_frames(k.reshape(B, H, -1, P, d)), dim=3).reshape(B, -1, n_keys * P, d)
    v_g = torch.cat(key_frames(v.reshape(B, H, -1, P, d)), dim=3).reshape(B, -1, n_keys * P, d)
    return _sdpa(q_g, k_g, v_g).reshape(B, H, -1, d)


def _sparse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
    if S == 1:
        return _sdpa(q, k, v)
    hub_q = torch.cat([q[:, :, :P], q[:, :, -P:]], dim=2)
    hub_out = _sdpa(hub_q, k, v)

    def keys(x5: torch.Tensor) -> list[torch.Tensor]:
        db = x5[:, :, 1:-1]
        return [x5[:, :, :1].expand_as(db), db, x5[:, :, -1:].expand_as(db)]

    db_out = _grouped(q, k, v, P, 1, -1, keys, n_keys=3)
    return torch.cat([hub_out[:, :, :P], db_out, hub_out[:, :, P:]], dim=2)


def _cached(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int,
            has_query: bool) -> torch.Tensor:
    if S == 1:
        return _sdpa(q, k, v)
    if has_query:   # keyframes = all frames but the last
        parts = [_sdpa(q[:, :, :P], k[:, :, :-P], v[:, :, :-P])]

        def keys(x5: torch.Tensor) -> list[torch.Tensor]:
            db = x5[:, :, 1:-1]
            return [x5[:, :, :1].expand_as(db), db]

        parts.append(_grouped(q, k, v, P, 1, -1, keys, n_keys=2))
        parts.append(_sdpa(q[:, :, -P:], k, v))
    else:
        parts = [_sdpa(q[:, :, :P], k, v)]

        def keys(x5: torch.Tensor) -> list[torch.Tensor]:
            db = x5[:, :, 1:]
            return [x5[:, :, :1].expand_as(db), db]

        parts.append(_grouped(q, k, v, P, 1, S, keys, n_keys=2))
    return torch.cat(parts, dim=2)


def masked_attention(mask: MaskType | str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     S: int, P: int, has_query: bool = True) -> torch.Tensor:
    """Global attention under ``mask`` for frame-major q/k/v ``[B, heads, S·P, d]``."""
    mask = MaskType.parse(mask)
    if q.shape[2] != S * P:
        raise ValueError(f"expected S*P = {S}*{P} = {S * P} tokens, got {q.shape[2]}")
    if mask is MaskType.DENSE:
        return _sdpa(q, k, v)
    if mask is MaskType.SPARSE:
        if not has_query:
            raise ValueError("the sparse mask needs the query frame (it is a hub)")
        return _sparse(q, k, v, S, P)
    return _cached(q, k, v, S, P, has_query)


def global_attn_fn(mask: MaskType | str, has_query: bool = True) -> GlobalAttnFn:
    """Adapter for ``Aggregator.forward(global_attn_fn=...)``: ``fn(layer_idx, q, k, v, S, P)``."""
    mask = MaskType.parse(mask)

    def fn(layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int, P: int) -> torch.Tensor:
        return masked_attention(mask, q, k, v, S, P, has_query)

    return fn
