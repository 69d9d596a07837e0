"""`reloc-vggt evaluate` (ros/evaluate.py) end to end: real images, the node in its own process, metrics and plot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from reloc_vggt_ros.dds import localhost_env  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
NAMES = ("0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg")   # db 0,2,3; query 1,4


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory) -> Path:
    """A 5-image posed folder cut from the shipped sample (same format, real images)."""
    folder = tmp_path_factory.mktemp("scene") / "fountain5"
    (folder / "images").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(SAMPLE / "images" / name, folder / "images" / name)
    lines = (SAMPLE / "poses.txt").read_text().splitlines()
    (folder / "poses.txt").write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split()[0] in NAMES]) + "\n")
    split = [l for l in (SAMPLE / "split.txt").read_text().splitlines() if l.split()[-1] in NAMES]
    (folder / "split.txt").write_text("\n".join(split) + "\n")
    return folder


def _cli(*args: str, domain: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = localhost_env()
    if domain is not None:
        env["ROS_DOMAIN_ID"] = str(domain)
    return subprocess.run([sys.executable, "-m", "reloc_vggt_ros.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_evaluate_command_on_real_images(tmp_path, small_scene):
    from reloc_vggt_ros.keyframes import build_keyframe_db

    db = build_keyframe_db(small_scene, tmp_path / "db.db", split="db", max_side=320, backend="geometric")
    bag = tmp_path / "q.mcap"
    res = _cli("bag", "from-images", str(small_scene), "--split", "query", "--max-side", "320", "--out", str(bag))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "eval"
    import os

    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    res = _cli("evaluate", "--db", str(db), "--bag", str(bag), "--out", str(out),
               "--params", str(ROOT / "config" / "reloc_vggt.yaml"), "--domain-id", str(95 + worker % 5))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "median translation error" in res.stdout and "recall (5 cm, 5 deg)" in res.stdout
    assert "recall (1% of median db baseline" in res.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_queries"] == 2
    assert m["n_localized"] >= 1, m["node_diagnostics"]
    assert m["median_translation_m"] < 0.10 and m["median_rotation_deg"] < 1.0
    assert set(m["recall"]) >= {"5cm_5deg", "25cm_2deg", "1pct_1deg"}
    assert all(0.0 <= v <= 1.0 for v in m["recall"].values())
    assert m["latency_ms_p50"] > 0 and m["latency_ms_p95"] >= m["latency_ms_p50"]
    import numpy as np

    from reloc_vggt_ros.data.posed_folder import read_posed_folder

    C = np.array([r.T_world_cam[:3, 3] for r in read_posed_folder(small_scene, "db")])
    nearest = [min(np.linalg.norm(C[i] - C[j]) for j in range(len(C)) if j != i) for i in range(len(C))]
    assert m["scene_scale_m"] == pytest.approx(float(np.median(nearest)), rel=1e-9)   # as bench localize
    assert m["scene_scale_kind"] == "median nearest-neighbour db baseline"
    assert m["node_exit_code"] == 0
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "poses.csv").read_text().splitlines()) == 3
