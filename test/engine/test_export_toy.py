"""Export machinery on a self-made graph (attention + layer norm + gather): ONNX checker,
onnxruntime vs torch parity, TensorRT op coverage, sidecar contents, and the negative cases."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from reloc_vggt_ros.engine.base import read_sidecar
from reloc_vggt_ros.engine.factory import make_engine
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange, check_parity, export_onnx
from reloc_vggt_ros.engine.graphs import ExportableGraph
from reloc_vggt_ros.engine.op_coverage import check_tensorrt_coverage, load_op_table
from reloc_vggt_ros.errors import ConfigError

from .toy_graph import ToyRelocGraph


@pytest.fixture(scope="module")
def toy() -> ToyRelocGraph:
    return ToyRelocGraph()


@pytest.fixture(scope="module")
def dynamic_onnx(toy, tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.onnx"
    return export_onnx(toy, path, ExportConfig(opset=17, keyframes=KeyframeRange(2, 4, 8)))


def test_dynamic_export_is_valid_and_matches_torch_at_every_k(toy, dynamic_onnx):
    onnx.checker.check_model(str(dynamic_onnx))
    model = onnx.load(str(dynamic_onnx))
    assert model.opset_import[0].version == 17
    images = model.graph.input[0].type.tensor_type.shape.dim
    assert images[1].dim_param == "num_frames" and images[3].dim_value == 32
    for k in (2, 4, 8, 5):          # profile min/opt/max and a value in between
        err = check_parity(toy, dynamic_onnx, k, seed=k)
        assert max(err.values()) <= 1e-4, (k, err)


def test_sidecar_records_config_profiles_and_versions(dynamic_onnx):
    side = read_sidecar(dynamic_onnx)
    assert side["opset"] == 17 and side["precision"] == "fp32" and side["onnx"] == "toy.onnx"
    assert side["model"] == {"name": "toy", "size": 32, "heads": 4}
    assert side["profiles"]["images"] == {"min": [1, 3, 3, 32, 32], "opt": [1, 5, 3, 32, 32],
                                          "max": [1, 9, 3, 32, 32]}
    assert side["profiles"]["known_pose_enc"]["max"] == [1, 8, 9]
    assert side["inputs"][0]["shape"] == [1, "num_frames", 3, 32, 32]
    assert side["exporter"]["torch"] == torch.__version__
    assert side["exporter"]["onnx"] == onnx.__version__


def test_every_op_is_in_the_tensorrt_table(dynamic_onnx):
    report = check_tensorrt_coverage(dynamic_onnx)
    assert report.ok, report.summary()
    assert {"LayerNormalization", "Softmax", "Gather", "Conv", "MatMul"} <= set(report.op_counts)
    table = load_op_table()
    assert table["tensorrt_version"] == "10.15" and "onnx-tensorrt" in table["source"]


def test_fixed_k_export_has_static_shapes_and_rejects_other_k(toy, tmp_path):
    path = export_onnx(toy, tmp_path / "fixed.onnx", ExportConfig(keyframes=KeyframeRange(3, 3, 3)))
    model = onnx.load(str(path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, 3, 32, 32]
    assert read_sidecar(path)["profiles"] == {}
    engine = make_engine("onnxruntime", path)
    ok = engine.run({"images": np.zeros((1, 4, 3, 32, 32)), "known_pose_enc": np.zeros((1, 3, 9))})
    assert ok["pose_enc"].shape == (1, 4, 9)
    with pytest.raises(ValueError, match="'images' axis 1 must be 4"):
        engine.run({"images": np.zeros((1, 5, 3, 32, 32)), "known_pose_enc": np.zeros((1, 4, 9))})


def test_fp16_export_is_half_and_close(toy, tmp_path):
    path = export_onnx(toy, tmp_path / "half.onnx",
                       ExportConfig(precision="fp16", keyframes=KeyframeRange(4, 4, 4)))
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    # the legacy exporter's attention decomposition upcasts softmax to fp32, and the layers
    # after it follow; the patch embed, pose projector and qkv weights stay half
    half = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert {"patch_embed.weight", "query_token", "norm.weight", "qkv.bias"} <= half, half
    err = check_parity(toy, path, 4)
    assert max(err.values()) < 5e-3, err            # half precision, not the 1e-4 fp32 bound
    assert check_tensorrt_coverage(path).ok


def test_external_data_file_is_written_and_loadable(toy, tmp_path):
    path = export_onnx(toy, tmp_path / "ext.onnx",
                       ExportConfig(keyframes=KeyframeRange(2, 2, 2), external_data=True))
    side = read_sidecar(path)
    assert side["external_data"] == "ext.onnx.data"
    assert (tmp_path / "ext.onnx.data").stat().st_size >= side["parameter_bytes"] * 0.9
    assert max(check_parity(toy, path, 2).values()) <= 1e-4
    size = (tmp_path / "ext.onnx.data").stat().st_size
    export_onnx(toy, path, ExportConfig(keyframes=KeyframeRange(2, 2, 2), external_data=True),
                overwrite=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size == size      # replaced, not appended to
    assert max(check_parity(toy, path, 2).values()) <= 1e-4


def test_export_skips_existing_unless_overwrite(toy, tmp_path):
    cfg = ExportConfig(keyframes=KeyframeRange(2, 2, 2))
    path = export_onnx(toy, tmp_path / "a.onnx", cfg)
    stamp = path.stat().st_mtime_ns
    export_onnx(toy, path, cfg)
    assert path.stat().st_mtime_ns == stamp
    export_onnx(toy, path, cfg, overwrite=True)
    assert path.stat().st_mtime_ns != stamp


class _Bad(ExportableGraph):
    """A graph using ops TensorRT cannot take: Det (unsupported) and NonZero (data-dependent)."""

    graph_name = "bad"
    input_names = ("x",)
    output_names = ("det", "nz")

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def input_shapes(self, num_keyframes):
        return {"x": (num_keyframes, 3, 3)}

    def forward(self, x):
        y = self.lin(x)
        return torch.linalg.det(y), torch.nonzero(y > 0.5)


def test_coverage_flags_unsupported_and_data_dependent_ops(tmp_path):
    path = export_onnx(_Bad(), tmp_path / "bad.onnx", ExportConfig(keyframes=KeyframeRange(2, 2, 2)))
    report = check_tensorrt_coverage(path)
    assert not report.ok
    assert report.unsupported == ["Det"]
    text = report.summary()
    assert "NonZero" in text and "data-dependent" in text


def test_coverage_flags_shapes_computed_from_input_values():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6])
    n = onnx.helper.make_tensor_value_info("n", onnx.TensorProto.INT64, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [onnx.helper.make_node("Abs", ["n"], ["n_abs"], name="abs"),
             onnx.helper.make_node("Reshape", ["x", "n_abs"], ["y"], name="reshape")]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x, n], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    text = check_tensorrt_coverage(model).summary()
    assert "Reshape node 'reshape': shape input 1 depends on the values of graph input 'n'" in text
    # the same Reshape with its shape taken from x's *shape* is fine
    nodes = [onnx.helper.make_node("Shape", ["x"], ["s"], name="shape"),
             onnx.helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert check_tensorrt_coverage(model).ok


def test_coverage_flags_opset_and_non_constant_axes():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    axes = onnx.helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    node = onnx.helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")
    graph = onnx.helper.make_graph([node], "g", [x, axes], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 25)])
    text = check_tensorrt_coverage(model).summary()
    assert "opset 25 outside" in text
    assert "input 1 ('axes') must be a build-time constant" in text


def test_config_validation():
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        KeyframeRange(4, 2, 8)
    with pytest.raises(ConfigError, match="opset must be in 17..20"):
        ExportConfig(opset=13)
    with pytest.raises(ConfigError, match="precision"):
        ExportConfig(precision="int8")
    assert KeyframeRange.parse("2:8:16") == KeyframeRange(2, 8, 16)
    assert KeyframeRange.parse("4") == KeyframeRange(4, 4, 4)
    with pytest.raises(ConfigError, match="min:opt:max"):
        KeyframeRange.parse("2:8")


def test_sidecar_json_is_plain_json(dynamic_onnx):
    text = (dynamic_onnx.parent / "toy.onnx.json").read_text()
    assert json.loads(text)["format"] == "reloc_vggt_ros.onnx/1"
