"""TensorRT builder and runtime. Plan build/run needs tensorrt + a CUDA GPU and skips otherwise;
the sidecar logic (profiles, plan/machine identity) is checked everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from reloc_vggt_ros.engine.base import read_sidecar
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange, export_onnx
from reloc_vggt_ros.engine.trt_build import BuildConfig, check_plan_compat, profile_shapes
from reloc_vggt_ros.errors import ConfigError, ModelLoadError

from .toy_graph import ToyRelocGraph


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("trt") / "toy.onnx"
    return export_onnx(ToyRelocGraph(), path, ExportConfig(keyframes=KeyframeRange(2, 4, 8)))


def test_profiles_come_from_the_export_sidecar(toy_onnx):
    side = read_sidecar(toy_onnx)
    full = profile_shapes(side)
    assert full["images"] == ([1, 3, 3, 32, 32], [1, 5, 3, 32, 32], [1, 9, 3, 32, 32])
    narrow = profile_shapes(side, (3, 4, 6))
    assert narrow["images"] == ([1, 4, 3, 32, 32], [1, 5, 3, 32, 32], [1, 7, 3, 32, 32])
    assert narrow["known_pose_enc"] == ([1, 3, 9], [1, 4, 9], [1, 6, 9])
    with pytest.raises(ConfigError, match="outside the exported range 2:4:8"):
        profile_shapes(side, (1, 4, 8))


def test_plan_identity_check_refuses_other_version_or_gpu(tmp_path):
    built = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    check_plan_compat(built, dict(built), tmp_path / "a.plan")      # same machine: fine
    other = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA GeForce RTX 4090",
             "compute_capability": "8.9"}
    with pytest.raises(ModelLoadError, match=r"tensorrt_version: plan '10.3.0', here '10.7.0'.*"
                                             r"gpu_name: plan 'Orin'.*rebuild"):
        check_plan_compat(built, other, tmp_path / "a.plan")
    with pytest.raises(ModelLoadError, match="lacks"):
        check_plan_compat({"tensorrt_version": "10.3.0"}, other, tmp_path / "a.plan")


def test_build_config_validation():
    with pytest.raises(ConfigError, match="precision must be"):
        BuildConfig(precision="int8")
    with pytest.raises(ConfigError, match="workspace_gib"):
        BuildConfig(workspace_gib=0)


def _need_trt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT Python bindings are not installed here "
                              "(no NVIDIA package index, no GPU); runs on the robot / GPU CI")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("tensorrt imports but no CUDA GPU is visible")
    return trt


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 3e-2)])
def test_build_and_run_plan_matches_onnxruntime(toy_onnx, tmp_path, precision, atol):
    _need_trt_gpu()
    from reloc_vggt_ros.engine.factory import make_engine
    from reloc_vggt_ros.engine.trt_build import build_engine

    plan = build_engine(toy_onnx, tmp_path / f"toy_{precision}.plan",
                        BuildConfig(precision=precision, workspace_gib=1,
                                    timing_cache=tmp_path / "timing.cache"))
    side = read_sidecar(plan)
    assert side["gpu_name"] and side["tensorrt_version"] and side["profiles"]["images"]
    assert side["model"] == {"name": "toy", "size": 32, "heads": 4} and side["graph"] == "toy_reloc"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    trt_engine = make_engine("tensorrt", plan)
    ort_engine = make_engine("onnxruntime", toy_onnx,
                             options={"onnxruntime": {"providers": ["CPUExecutionProvider"]}})
    for k in (2, 5, 8):
        rng = np.random.default_rng(k)
        feed = {"images": rng.random((1, k + 1, 3, 32, 32), dtype=np.float32),
                "known_pose_enc": rng.random((1, k, 9), dtype=np.float32)}
        got, ref = trt_engine.run(feed), ort_engine.run(feed)
        np.testing.assert_allclose(got["pose_enc"], ref["pose_enc"], atol=atol)
    with pytest.raises(ValueError, match="outside the plan's optimisation profile"):
        trt_engine.run({"images": np.zeros((1, 10, 3, 32, 32), np.float32),
                        "known_pose_enc": np.zeros((1, 9, 9), np.float32)})


@pytest.mark.tensorrt
def test_plan_from_other_gpu_is_refused(toy_onnx, tmp_path):
    _need_trt_gpu()
    import json

    from reloc_vggt_ros.engine.factory import make_engine
    from reloc_vggt_ros.engine.trt_build import build_engine

    plan = build_engine(toy_onnx, tmp_path / "toy.plan", BuildConfig(precision="fp32"))
    side_path = tmp_path / "toy.plan.json"
    side = json.loads(side_path.read_text())
    side["gpu_name"] = "Some Other GPU"
    side_path.write_text(json.dumps(side))
    with pytest.raises(ModelLoadError, match="built for another machine"):
        make_engine("tensorrt", plan, fallback=("onnxruntime",))
