"""reloc_vggt picks its inference engine by ``engine_kind`` / ``engine_fallback`` (node parameters).

On a real keyframe database with a tiny exported model: TensorRT is not installed here, so asking
for it fails with an error naming it unless onnxruntime is listed as fallback; a checkpoint runs
torch; a kind that does not fit the file is a ConfigError. Node parameters reach the registry.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import ConfigError, EngineUnavailableError
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.localizer.registry import make_localizer
from reloc_vggt_ros.localizer.vggt.reloc_vggt import RelocVGGTLocalizer, RelocVGGTLocalizerConfig
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig

pytest.importorskip("onnxruntime")

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"
NO_TENSORRT = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                 reason="tensorrt is installed: its absence cannot be shown here")


@pytest.fixture(scope="module")
def query() -> tuple[np.ndarray, object]:
    rec = read_posed_folder(SCENE, "query")[1]
    return load_image(rec.path), rec.intrinsics


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny sparse model as a checkpoint, an ONNX export and a stand-in plan of that ONNX."""
    from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange
    from reloc_vggt_ros.engine.reloc_graphs import export_reloc_vggt

    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(3)
    model = RelocVGGT(RelocVGGTConfig.tiny(mask="sparse"))
    with torch.no_grad():
        model.pose_projector.fc2.weight.normal_(0, 0.2)
    ckpt = model.save(out / "tiny.safetensors")
    with warnings.catch_warnings():                   # tracer/exporter chatter, not ours
        warnings.simplefilter("ignore")
        (onnx,) = export_reloc_vggt(model, out, ExportConfig(keyframes=KeyframeRange(3, 3, 3)))
    # what `engine build` leaves beside a plan (the bytes are never read without TensorRT)
    plan = out / "tiny.plan"
    plan.write_bytes(b"stand-in: TensorRT is absent here")
    side = json.loads(onnx.with_name(onnx.name + ".json").read_text())
    (out / "tiny.plan.json").write_text(json.dumps({**side, "onnx": onnx.name}))
    return {"ckpt": ckpt, "onnx": onnx, "plan": plan}


def _loc(store: KeyframeStore, weights: Path, **kw) -> RelocVGGTLocalizer:  # noqa: ANN003
    return RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(weights=str(weights), num_keyframes=3, **kw))


@NO_TENSORRT
def test_tensorrt_without_fallback_names_what_is_missing(store, artifacts) -> None:  # noqa: ANN001
    for weights in (artifacts["onnx"], artifacts["plan"]):       # explicit kind, and auto on a plan
        kind = {"engine_kind": "tensorrt"} if weights.suffix == ".onnx" else {}
        with pytest.raises(EngineUnavailableError, match=r"tensorrt: the tensorrt Python package is not importable"):
            _loc(store, weights, **kind)


@NO_TENSORRT
def test_tensorrt_falls_back_to_onnxruntime_when_asked(store, query, artifacts) -> None:  # noqa: ANN001
    ref = _loc(store, artifacts["onnx"])                                   # auto: .onnx -> onnxruntime
    assert ref.engine_name == "onnxruntime-cpu"
    expected = ref.localize(*query)
    assert expected.T_world_cam is not None and np.all(np.isfinite(expected.T_world_cam))
    for weights in (artifacts["onnx"], artifacts["plan"]):    # the plan resolves to its ONNX via the sidecar
        loc = _loc(store, weights, engine_kind="tensorrt", engine_fallback=("onnxruntime",))
        assert loc.engine is not None and loc.engine_name == "onnxruntime-cpu"
        res = loc.localize(*query)
        assert res.diagnostics["keyframes"] == expected.diagnostics["keyframes"]
        np.testing.assert_allclose(res.T_world_cam, expected.T_world_cam, atol=1e-9)


def test_torch_kind_runs_the_checkpoint_and_agrees_with_the_export(store, query, artifacts) -> None:  # noqa: ANN001
    loc = _loc(store, artifacts["ckpt"], engine_kind="torch")
    assert loc.engine is None and loc.model is not None and loc.engine_name == "torch"
    res = loc.localize(*query)
    assert _loc(store, artifacts["ckpt"]).engine_name == "torch"           # auto: .safetensors -> torch
    onnx = _loc(store, artifacts["onnx"], engine_kind="onnxruntime").localize(*query)
    assert res.diagnostics["keyframes"] == onnx.diagnostics["keyframes"]
    np.testing.assert_allclose(res.T_world_cam, onnx.T_world_cam, atol=1e-4)


def test_kind_that_does_not_fit_the_file_is_a_config_error(store, artifacts) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="engine_kind 'torch' runs a .safetensors/.pt checkpoint"):
        _loc(store, artifacts["onnx"], engine_kind="torch")
    with pytest.raises(ConfigError, match="engine_kind 'onnxruntime' needs an exported graph"):
        _loc(store, artifacts["ckpt"], engine_kind="onnxruntime")
    with pytest.raises(ConfigError, match="drop 'torch' from engine_kind/engine_fallback"):
        _loc(store, artifacts["onnx"], engine_fallback=("torch",))
    with pytest.raises(ConfigError, match="engine_kind must be one of"):
        RelocVGGTLocalizerConfig(engine_kind="trt")
    with pytest.raises(ConfigError, match="engine_fallback entries must be in"):
        RelocVGGTLocalizerConfig(engine_fallback=("cuda",))
    with pytest.raises(ConfigError, match="must be a list of engine kinds"):
        RelocVGGTLocalizerConfig(engine_fallback="onnxruntime")   # type: ignore[arg-type]


def test_node_parameters_reach_the_localizer_through_the_registry(store, artifacts) -> None:  # noqa: ANN001
    from reloc_vggt_ros.ros.params import backend_config, config_from_parameters

    cfg = config_from_parameters({"database_path": "x.db", "backend": "reloc_vggt", "engine": str(artifacts["onnx"]),
                            "top_k": 3, "engine_kind": "onnxruntime", "engine_fallback": ["tensorrt"]})
    assert cfg.common_options() == {"top_k": 3, "engine": str(artifacts["onnx"]), "engine_kind": "onnxruntime",
                             "engine_fallback": ["tensorrt"]}
    loc = make_localizer(cfg.backend, store, config=backend_config(cfg, {}))
    assert loc.config.engine_kind == "onnxruntime" and loc.config.engine_fallback == ("tensorrt",)
    assert loc.engine_name == "onnxruntime-cpu"
    # a backend without engines rejects the options like any unknown one
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['engine_kind'\] in vggt_align"):
        make_localizer("vggt_align", store, engine=str(artifacts["ckpt"]), engine_kind="torch")
