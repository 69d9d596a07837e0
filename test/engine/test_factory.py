"""make_engine: kinds, clear errors naming what is missing, and fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reloc_vggt_ros.engine.base import InferenceEngine
from reloc_vggt_ros.engine.factory import make_engine
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange, export_onnx
from reloc_vggt_ros.engine.ort_backend import choose_providers
from reloc_vggt_ros.errors import ConfigError, EngineUnavailableError, ModelLoadError

from .toy_graph import ToyRelocGraph

try:
    import tensorrt  # noqa: F401
    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("fac") / "toy.onnx"
    return export_onnx(ToyRelocGraph(), path, ExportConfig(keyframes=KeyframeRange(2, 3, 4)))


def _feed(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    return {"images": rng.random((1, k + 1, 3, 32, 32), dtype=np.float32),
            "known_pose_enc": rng.random((1, k, 9), dtype=np.float32)}


def test_torch_and_onnxruntime_engines_agree(toy_onnx):
    torch_engine = make_engine("torch", ToyRelocGraph())
    ort_engine = make_engine("onnxruntime", toy_onnx)
    for engine in (torch_engine, ort_engine):
        assert isinstance(engine, InferenceEngine)
        assert [s.name for s in engine.inputs] == ["images", "known_pose_enc"]
    assert ort_engine.inputs[0].shape == (1, "num_frames", 3, 32, 32)
    assert ort_engine.name == "onnxruntime-cpu"
    a, b = torch_engine.run(_feed(3)), ort_engine.run(_feed(3))
    assert a["pose_enc"].shape == (1, 4, 9)
    np.testing.assert_allclose(a["pose_enc"], b["pose_enc"], atol=1e-4)
    with pytest.raises(ValueError, match=r"missing \['known_pose_enc'\]"):
        ort_engine.run({"images": _feed(3)["images"]})
    torch_engine.close()
    ort_engine.close()


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is importable here; this checks the message without it")
def test_tensorrt_unavailable_names_what_is_missing(toy_onnx, tmp_path):
    with pytest.raises(EngineUnavailableError, match="tensorrt Python package is not importable"):
        make_engine("tensorrt", tmp_path / "x.plan")


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is importable here")
def test_fallback_from_tensorrt_plan_to_its_onnx(toy_onnx, tmp_path):
    plan = tmp_path / "toy.plan"
    plan.write_bytes(b"not a plan")
    (tmp_path / "toy.plan.json").write_text(json.dumps({"onnx": str(toy_onnx)}))
    engine = make_engine("tensorrt", plan, fallback=("onnxruntime",))
    assert engine.name == "onnxruntime-cpu"
    assert engine.run(_feed(2))["pose_enc"].shape == (1, 3, 9)
    # without the fallback the same call is an error naming the missing piece
    with pytest.raises(EngineUnavailableError, match="tensorrt: the tensorrt Python package"):
        make_engine("tensorrt", plan)


def test_fallback_with_a_source_per_kind(toy_onnx):
    engine = make_engine("tensorrt", {"onnxruntime": toy_onnx, "torch": ToyRelocGraph()},
                         fallback=("onnxruntime", "torch"))
    assert engine.name == "onnxruntime-cpu"          # no tensorrt source given: skipped
    assert engine.run(_feed(4))["pose_enc"].shape == (1, 5, 9)
    with pytest.raises(EngineUnavailableError, match="tensorrt: no source given"):
        make_engine("tensorrt", {"onnxruntime": toy_onnx})


def test_bad_kind_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="engine kind must be one of"):
        make_engine("openvino", tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="not found"):
        make_engine("onnxruntime", tmp_path / "missing.onnx", fallback=("torch",))
    with pytest.raises(ConfigError, match="needs an ExportableGraph"):
        make_engine("torch", object())


def test_provider_choice():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider",
                             "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(EngineUnavailableError, match=r"\['CUDAExecutionProvider'\] not in this build"):
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"])
    with pytest.raises(EngineUnavailableError, match="CUDAExecutionProvider"):
        make_engine("onnxruntime", "x.onnx",
                    options={"onnxruntime": {"providers": ["CUDAExecutionProvider"]}})


def _engine_imports() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports (at any depth of its code, lazy ones too)."""
    import ast
    from pathlib import Path

    import reloc_vggt_ros.engine as pkg

    out = {}
    for path in Path(pkg.__file__).parent.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                names.add(node.module.split(".")[0])
        out[path.stem] = names
    return out


def test_interface_is_a_leaf_and_only_the_factory_builds_backends() -> None:
    imports = _engine_imports()
    assert imports["base"] == set()                                    # numpy, json, errors only
    backends = {"torch_backend", "ort_backend", "tensorrt_backend"}
    for module, names in imports.items():
        assert "factory" not in names or module in ("__init__", "reloc_graphs"), module
        # only the factory (and the exporter's parity check, which runs onnxruntime) build backends
        assert not names & backends or module in ("factory", "export"), (module, names)
    # no circle: nothing the factory builds imports it back
    assert all("factory" not in imports[b] and "factory" not in imports["trt_build"] for b in backends)
