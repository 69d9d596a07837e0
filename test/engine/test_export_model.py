"""Reloc-VGGT export in every mask mode, tiny and small (DINOv2 patch embed) configs: ONNX
checker, onnxruntime vs torch parity <= 1e-4 (fp32), TensorRT op coverage, cached-mode graph pair."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from reloc_vggt_ros.engine.base import read_sidecar
from reloc_vggt_ros.engine.factory import make_engine
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange, check_parity, export_onnx
from reloc_vggt_ros.engine.graphs import ExportableGraph
from reloc_vggt_ros.engine.op_coverage import check_tensorrt_coverage
from reloc_vggt_ros.engine.reloc_graphs import export_reloc_vggt, graphs_for, preset_config
from reloc_vggt_ros.engine.trt_build import profile_shapes
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT

K = 3


def _model(preset: str, mask: str) -> RelocVGGT:
    torch.manual_seed(0)
    model = RelocVGGT(preset_config(preset, mask)).eval()
    with torch.no_grad():   # the new parts start at zero; make them matter for parity
        model.query_token.normal_()
        for p in model.pose_projector.parameters():
            p.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("mask", ["dense", "sparse", "cached"])
def test_export_parity_and_tensorrt_coverage(preset, mask, tmp_path):
    """tiny: dynamic K (2:3:5, checked at 2, 3, 5); small: fixed K = 3."""
    torch.set_num_threads(1)
    model = _model(preset, mask)
    kf = KeyframeRange(2, 3, 5) if preset == "tiny" else KeyframeRange(K, K, K)
    paths = export_reloc_vggt(model, tmp_path, ExportConfig(opset=17, keyframes=kf))
    graphs = graphs_for(model)
    names = [p.name for p in paths]
    if mask == "cached":
        assert names == ["keyframe_encoder.onnx", "query.onnx"]
    else:
        assert names == [f"reloc_vggt_{mask}.onnx"]
    for graph, path in zip(graphs, paths):
        onnx.checker.check_model(str(path))
        for k in sorted({kf.min, kf.opt, kf.max}):
            err = check_parity(graph, path, k, seed=k)
            assert max(err.values()) <= 1e-4, (graph.graph_name, k, err)
        report = check_tensorrt_coverage(path)
        assert report.ok, report.summary()
        side = read_sidecar(path)
        assert side["mask"] == mask and side["model"]["mask"] == mask
        assert side["model"]["image_hw"] == list(model.config.image_hw)
        assert side["opset"] == 17 and side["keyframes"]["dynamic"] is kf.dynamic
        if graph.graph_name == "query" and kf.dynamic:   # K/V inputs grow by P per keyframe
            P = graph.kv_shape[3]
            lo, opt, hi = profile_shapes(side)["keys"]
            assert (lo[3], opt[3], hi[3]) == (kf.min * P, kf.opt * P, kf.max * P)


def test_cached_graphs_chain_to_the_full_forward(tmp_path):
    """keyframe_encoder.onnx -> query.onnx equals RelocVGGT.forward on [keyframes, query]."""
    torch.set_num_threads(1)
    model = _model("tiny", "cached")
    enc_path, query_path = export_reloc_vggt(model, tmp_path, ExportConfig(keyframes=KeyframeRange(K, K, K)))
    encoder, query = make_engine("onnxruntime", enc_path), make_engine("onnxruntime", query_path)
    rng = np.random.default_rng(0)
    h, w = model.config.image_hw
    images = rng.random((1, K + 1, 3, h, w), dtype=np.float32)
    poses = rng.random((1, K, 9), dtype=np.float32)
    cache = encoder.run({"keyframe_images": images[:, :K], "known_pose_enc": poses})
    got = query.run({"query_image": images[:, K:], **cache})["pose_enc"]
    with torch.no_grad():
        ref = model(torch.from_numpy(images), torch.from_numpy(poses))["pose_enc"].numpy()
    assert got.shape == (1, K + 1, 9)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_fp16_export_runs_close_to_fp32(tmp_path):
    model = _model("small", "sparse")
    (path,) = export_reloc_vggt(model, tmp_path, ExportConfig(precision="fp16",
                                                              keyframes=KeyframeRange(K, K, K)))
    assert path.name == "reloc_vggt_sparse_fp16.onnx"
    assert check_tensorrt_coverage(path).ok
    err = check_parity(graphs_for(model)[0], path, K)
    assert max(err.values()) < 5e-2, err


class _BakesFrameCount(ExportableGraph):
    """Uses the frame count as a Python int: the trace bakes it in."""

    graph_name = "baked"
    input_names = ("images",)
    output_names = ("out",)

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def input_shapes(self, num_keyframes):
        return {"images": (1, num_keyframes + 1, 4)}

    def dynamic_axes(self):
        return {"images": {1: "num_frames"}, "out": {1: "num_frames"}}

    def forward(self, images):
        s = int(images.shape[1])
        return images * self.w + torch.arange(s, dtype=images.dtype).view(1, s, 1)


def test_dynamic_export_that_bakes_k_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not work at 2 keyframes.*trace-time constant"):
        export_onnx(_BakesFrameCount(), tmp_path / "baked.onnx",
                    ExportConfig(keyframes=KeyframeRange(2, 3, 5)))
    assert list(tmp_path.glob("baked.onnx*")) == []          # nothing half-valid left behind
