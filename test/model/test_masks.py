"""Sparse / cached global attention: equal to the boolean-masked dense reference, never N×N."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.model.masks import (MaskType, frame_allow, masked_attention, num_blocks,
                                        reference_mask)


def _qkv(B: int, H: int, S: int, P: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, S * P, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("mask", ["dense", "sparse", "cached"])
@pytest.mark.parametrize("S", [1, 2, 3, 4, 7])
def test_equals_boolean_masked_reference(mask: str, S: int) -> None:
    B, H, P, d = 2, 3, 9, 16
    q, k, v = _qkv(B, H, S, P, d, seed=S)
    out = masked_attention(mask, q, k, v, S, P)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask(mask, S, P))
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("S", [2, 3, 6])
def test_cached_keyframe_pass_equals_reference(S: int) -> None:
    q, k, v = _qkv(1, 2, S, 5, 8)
    out = masked_attention("cached", q, k, v, S, 5, has_query=False)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask("cached", S, 5, has_query=False))
    assert (out - ref).abs().max().item() <= 1e-5


def test_masks_differ_where_they_should() -> None:
    """Guard against a 'sparse' path that silently runs dense attention."""
    S, P = 5, 6
    q, k, v = _qkv(1, 2, S, P, 8)
    dense = masked_attention("dense", q, k, v, S, P)
    sparse = masked_attention("sparse", q, k, v, S, P)
    cached = masked_attention("cached", q, k, v, S, P)
    # anchor and query rows see all frames under the sparse mask: identical to dense there
    torch.testing.assert_close(sparse[:, :, :P], dense[:, :, :P])
    torch.testing.assert_close(sparse[:, :, -P:], dense[:, :, -P:])
    assert (sparse[:, :, P:-P] - dense[:, :, P:-P]).abs().max() > 1e-2
    # cached: the anchor no longer sees the query, the query still sees everything
    assert (cached[:, :, :P] - sparse[:, :, :P]).abs().max() > 1e-2
    torch.testing.assert_close(cached[:, :, -P:], dense[:, :, -P:])


def test_frame_block_counts() -> None:
    for S in range(2, 12):
        assert num_blocks("dense", S) == S * S
        assert num_blocks("sparse", S) == 5 * S - 6
        assert num_blocks("cached", S) == 4 * S - 5
    allow = frame_allow("cached", 4).numpy()
    expected = np.array([[1, 1, 1, 0],   # anchor: keyframes only, never the query
                         [1, 1, 0, 0],   # db: anchor + self
                         [1, 0, 1, 0],
                         [1, 1, 1, 1]], bool)  # query: everything
    np.testing.assert_array_equal(allow, expected)


class _MaxNumel(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


@pytest.mark.parametrize("mask", ["sparse", "cached"])
def test_no_tokens_by_tokens_tensor_is_materialised(mask: str) -> None:
    B, H, S, P, d = 1, 1, 24, 16, 8
    q, k, v = _qkv(B, H, S, P, d)
    with _MaxNumel() as probe:
        masked_attention(mask, q, k, v, S, P)
    N = S * P
    assert probe.max_numel < N * N // 4, f"{mask}: a tensor of {probe.max_numel} elements (N² = {N * N})"
    with _MaxNumel() as probe_ref:   # the probe does see a dense mask
        F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask(mask, S, P))
    assert probe_ref.max_numel >= N * N


def test_unknown_mask_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mask must be one of"):
        MaskType.parse("diagonal")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("mask", ["sparse", "cached"])
def test_onnx_export_matches_torch(mask: str, tmp_path) -> None:  # noqa: ANN001
    ort = pytest.importorskip("onnxruntime")
    S, P = 4, 5

    class Wrap(torch.nn.Module):
        def forward(self, q, k, v):  # noqa: ANN001
            return masked_attention(mask, q, k, v, S, P)

    q, k, v = _qkv(1, 2, S, P, 8)
    path = tmp_path / f"{mask}.onnx"
    torch.onnx.export(Wrap(), (q, k, v), str(path), input_names=["q", "k", "v"],
                      output_names=["out"], opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0]
    np.testing.assert_allclose(got, masked_attention(mask, q, k, v, S, P).numpy(), atol=1e-5)
