"""The CLI as a user runs it: `reloc-vggt export onnx`, `engine check|info|build` in real processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reloc_vggt_ros.dds import localhost_env


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reloc_vggt_ros.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=localhost_env())


@pytest.mark.slow
def test_export_check_info_and_build(tmp_path):
    out = tmp_path / "onnx"
    proc = _cli("export", "onnx", "--preset", "tiny", "--mask", "sparse", "--keyframes", "2",
                "--out", str(out), "--parity", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    onnx_path = out / "reloc_vggt_sparse.onnx"
    assert f"{onnx_path}: TensorRT 10.15 op coverage" in proc.stdout and "all supported" in proc.stdout
    diff = float(proc.stdout.split("max abs diff ")[1].split()[0])
    assert diff <= 1e-4

    proc = _cli("engine", "check", str(onnx_path), "--verbose-ops")
    assert proc.returncode == 0 and "LayerNormalization x" in proc.stdout

    proc = _cli("engine", "info", str(onnx_path))
    side = json.loads(proc.stdout)
    assert side["graph"] == "reloc_vggt_sparse" and side["model"]["architecture"] == "reloc_vggt"

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = _cli("engine", "build", str(onnx_path))
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith(
            "ERROR: the tensorrt Python package is not importable")


def test_weights_with_another_mask_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig

    torch.manual_seed(0)
    weights = RelocVGGT(RelocVGGTConfig.tiny(mask="cached")).save(tmp_path / "m.safetensors")
    proc = _cli("export", "onnx", "--weights", str(weights), "--mask", "sparse", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "trained with mask 'cached', not 'sparse'" in proc.stderr


def test_unsupported_graph_fails_check(tmp_path):
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [])
    model = helper.make_model(helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "det.onnx")
    proc = _cli("engine", "check", str(tmp_path / "det.onnx"))
    assert proc.returncode == 1 and "unsupported ops ['Det']" in proc.stdout
