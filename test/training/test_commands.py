"""`reloc-vggt train` and `reloc-vggt dataset …` as real processes; the export feeds `bench localize`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reloc_vggt_ros.dds import localhost_env
from reloc_vggt_ros.training.config import load_train_config

REPO = Path(__file__).parents[2]


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**localhost_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reloc_vggt_ros.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["train_stage1.yaml", "train_stage2.yaml", "train_synthetic_cpu.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_train_config(REPO / "config" / name)
    assert cfg.stage in (1, 2)


def test_unknown_key_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 1\noptim: {learning_rate: 0.1}\n")
    res = _cli("train", "--config", str(bad))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("ERROR: unknown key(s) ['learning_rate'] in")


def test_train_then_bench_localize_with_the_export(tmp_path: Path) -> None:
    cfg = {
        "stage": 1,
        "model": {"preset": "tiny", "mask": "sparse", "overrides": {"vggt": {"depth": 1}}},
        "data": {"synthetic": {"train_scenes": 1, "val_scenes": 1,
                               "scene": {"image_hw": [56, 70], "num_views": 6, "texture_px": 64}},
                 "num_frames": 3, "nominal_depth": 2.5, "val_tuples": 2},
        "optim": {"max_steps": 2, "batch_size": 2, "warmup_steps": 1},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "threads": 1, "progress": False,
                "export_name": "tiny"},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _cli("train", "--config", str(path))
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "run"
    weights = out / "tiny.safetensors"
    assert weights.is_file() and (out / "tiny.json").is_file()
    assert json.loads((out / "tiny.json").read_text())["architecture"] == "reloc_vggt"
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    # The evaluation hook: the export plugs straight into the localization benchmark.
    scene = out / "synthetic" / "val" / "scene_0000"
    res = _cli("bench", "localize", "--scene", str(scene), "--backend", "reloc_vggt", "--weights", str(weights),
               "-o", "device=cpu", "-o", "num_keyframes=2", "--json", str(tmp_path / "bench.json"))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report and "recall" in json.dumps(report)


def test_dataset_synth_command(tmp_path: Path) -> None:
    res = _cli("dataset", "synth", str(tmp_path / "syn"), "--scenes", "1", "--views", "4", "--size", "32", "40")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((tmp_path / "syn" / "scene_0000" / "poses.txt").read_text().splitlines()) == 5
