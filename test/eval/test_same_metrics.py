"""One metric definition: `reloc-vggt evaluate` and `bench localize` score the same poses the same,
and eval/ is pure evaluation maths (nothing from ros/, no rclpy)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.localize import score_queries
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.eval.metrics import median_baseline
from reloc_vggt_ros.eval.report import EvalRun, format_table, map_poses, score
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.keyframes import build_keyframe_db

ROOT = Path(__file__).parents[2]
SCENE = ROOT / ".." / "shared" / "data" / "fountain-P11"
EVAL = ROOT / "reloc_vggt_ros" / "eval"


def _shifted(T: np.ndarray, dt: np.ndarray) -> np.ndarray:
    out = T.copy()
    out[:3, 3] += dt
    return out


def test_evaluate_and_bench_localize_give_the_same_recall_on_the_same_poses(tmp_path: Path) -> None:
    db = build_keyframe_db(SCENE, tmp_path / "map.db", split="db", max_side=64, thumbnails=False)
    db_T = np.stack([r.T_world_cam for r in read_posed_folder(SCENE, "db", check_images=False)])
    queries = read_posed_folder(SCENE, "query", check_images=False)
    assert len(queries) == 4
    base = median_baseline(db_T)
    C = db_T[:, :3, 3]
    extent = float(np.max(np.linalg.norm(C[:, None] - C[None], axis=-1)))
    assert extent > 3 * base                     # the old evaluate scale would pass the 2 % error below
    # translation errors as fractions of the median baseline; the last query is not localized
    fractions = [0.005, 0.02, 0.009, None]
    direction = np.array([0.6, 0.0, 0.8])
    estimates = [None if f is None else _shifted(q.T_world_cam, f * base * direction)
                 for q, f in zip(queries, fractions)]
    latencies = [12.0, 15.0, 11.0, 30.0]

    stamps = [1_000_000_000 * (i + 1) for i in range(len(queries))]
    run = EvalRun(gt={s: q.T_world_cam for s, q in zip(stamps, queries)},
                  estimates={s: T for s, T in zip(stamps, estimates) if T is not None},
                  latency_ms={s: lat for s, lat, T in zip(stamps, latencies, estimates) if T is not None})
    from_evaluate = score(run, map_poses(db))               # what ros/evaluate.py does after a replay

    rows = []
    for q, T, lat in zip(queries, estimates, latencies):
        t, r = pose_error(T, q.T_world_cam) if T is not None else (None, None)
        rows.append({"name": q.name, "status": "ok" if T is not None else "failed", "t_err_m": t,
                     "r_err_deg": r, "latency_ms": lat})
    from_bench = score_queries(rows, db_T)                   # what bench localize does

    assert from_evaluate["scene_scale_m"] == from_bench["scene_scale_m"] == pytest.approx(base)
    assert from_evaluate["scene_scale_kind"] == from_bench["scene_scale_kind"]
    assert from_evaluate["recall"] == from_bench["recall"]
    assert from_evaluate["recall_thresholds"] == from_bench["recall_thresholds"]
    assert from_evaluate["recall"]["1pct_1deg"] == pytest.approx(0.5)     # 0.5 % and 0.9 % pass, 2 % fails
    assert from_evaluate["recall"]["5pct_1deg"] == pytest.approx(0.75)
    for key in ("n_queries", "n_localized", "median_translation_m", "median_rotation_deg"):
        assert from_evaluate[key] == pytest.approx(from_bench[key]), key
    table = format_table(from_evaluate)
    assert f"recall (1% of median db baseline {base:.3g} m, 1 deg)  50%" in table


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = "reloc_vggt_ros.eval".split(".")
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = package[: len(package) - node.level + 1]
                module = ".".join(head + ([node.module] if node.module else []))
                names += [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


def test_eval_imports_nothing_from_ros() -> None:
    files = sorted(EVAL.glob("*.py"))
    assert {f.name for f in files} >= {"metrics.py", "report.py", "plots.py"}
    for f in files:
        bad = [m for m in _imported_modules(f)
               if m.startswith(("reloc_vggt_ros.ros", "rclpy", "bench")) or m == "reloc_vggt_ros.eval.replay"]
        assert not bad, f"{f.name} imports {bad}"
    # and at run time: importing (and using the lazily imported parts of) eval loads no ROS
    code = ("import sys, reloc_vggt_ros.eval.metrics, reloc_vggt_ros.eval.report, reloc_vggt_ros.eval.plots; "
            "print(sorted(m for m in sys.modules if m.startswith(('reloc_vggt_ros.ros', 'rclpy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
