"""`reloc-vggt mapfree convert / evaluate` end to end on a converted shared scene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.cli import main
from reloc_vggt_ros.eval.mapfree_metrics import virtual_points
from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.mapfree import Estimate, read_dataset, write_submission

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FOUNTAIN = DATA / "fountain-P11"
pytestmark = pytest.mark.skipif(not FOUNTAIN.is_dir(), reason="needs ../shared/data")

POSE = "Precision @ Pose Error < (25cm, 5deg)"
POSE_AUC = "AUC @ Pose Error < (25cm, 5deg)"
VCRE = "Precision @ VCRE < 90px"
VCRE_AUC = "AUC @ VCRE < 90px"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mf")
    proc = subprocess.run([sys.executable, "-m", "reloc_vggt_ros.cli", "mapfree", "convert",
                           "--scene", str(FOUNTAIN), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fountain-P11_b0" in proc.stdout
    return out


def _evaluate(dataset: Path, sub: Path, out_json: Path, *extra: str) -> dict:
    assert main(["mapfree", "evaluate", "--dataset", str(dataset), "--submission", str(sub),
                 "--json", str(out_json), *extra]) == 0
    return json.loads(out_json.read_text())


def test_ground_truth_submission_scores_perfectly(dataset: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    scenes = read_dataset(dataset / "track1")
    write_submission(tmp_path / "gt.zip", {s.name: [Estimate(q.name, q.T_world_cam, 1.0) for q in s.queries]
                                           for s in scenes})
    res = _evaluate(dataset / "track1", tmp_path / "gt.zip", tmp_path / "gt.json")
    out = capsys.readouterr().out
    assert "fountain-P11_b3" in out and "Precision @ VCRE" in out
    m = res["summary"]
    assert res["failures"] == 0
    assert (m[POSE], m[POSE_AUC], m[VCRE], m[VCRE_AUC]) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert m["Average Median Translation Error"] == pytest.approx(0.0, abs=1e-9)
    assert m["Average Median Rotation Error"] == pytest.approx(0.0, abs=1e-6)
    assert m["Average Median Reprojection Error"] == pytest.approx(0.0, abs=1e-6)
    assert res["scannet_pose_auc"]["auc@5deg"] == pytest.approx(1.0, abs=1e-6)
    assert sum(s["frames"] for s in res["scenes"].values()) == sum(len(s.queries) for s in scenes)


def test_rotated_submission_with_a_missing_scene(dataset: Path, tmp_path: Path) -> None:
    """Every estimate turned 7 deg about its own optical axis; scene b0 not submitted."""
    theta = 7.0
    Rz = so3_exp(np.array([0.0, 0.0, np.radians(theta)]))
    scenes = read_dataset(dataset / "track1")
    kept = [s for s in scenes if not s.name.endswith("_b0")]
    missing = sum(len(s.queries) for s in scenes) - sum(len(s.queries) for s in kept)
    n_est = sum(len(s.queries) for s in kept)
    write_submission(tmp_path / "rot", {s.name: [Estimate(q.name, q.T_world_cam @ make_T(Rz, np.zeros(3)), 1.0)
                                                 for q in s.queries] for s in kept})
    res = _evaluate(dataset / "track1", tmp_path / "rot", tmp_path / "rot.json")
    m = res["summary"]
    total = n_est + missing
    p = n_est / total                                     # 15 / 17 for fountain
    assert res["failures"] == missing > 0
    assert res["scenes"][scenes[0].name]["missing_scene"] is True
    # the centre does not move: 0 m; the rotation is 7 deg > 5 -> no pose is accepted
    assert m["Average Median Translation Error"] == pytest.approx(0.0, abs=1e-9)
    assert m["Average Median Rotation Error"] == pytest.approx(theta, abs=1e-9)
    assert (m[POSE], m[POSE_AUC]) == (0.0, 0.0)
    # VCRE: a point (x, y, z) of the virtual grid is seen by the estimate at Rz^T (x, y, z), so its
    # pixel moves by (fx dx / z, fy dy / z) with (dx, dy) = (Rz^T - I)(x, y); all fountain frames
    # share one K, so every frame (and every scene median) has the same error
    K = scenes[0].queries[0].intrinsics
    P = virtual_points()
    Q = P @ Rz                                            # rows: (Rz^T p)^T
    for pts in (P, Q):                                    # the closed form holds: nothing clips
        u, v = K.fx * pts[:, 0] / pts[:, 2] + K.cx, K.fy * pts[:, 1] / pts[:, 2] + K.cy
        assert (0 <= u).all() and (u <= K.width).all() and (0 <= v).all() and (v <= K.height).all()
    expected = np.mean(np.hypot(K.fx * (Q[:, 0] - P[:, 0]) / P[:, 2], K.fy * (Q[:, 1] - P[:, 1]) / P[:, 2]))
    assert 10 < expected < 90
    assert m["Average Median Reprojection Error"] == pytest.approx(expected, rel=1e-9)
    # all estimates pass VCRE < 90; the missing frames count against precision, and cap the
    # recall of the (all-precision-1) confidence curve at n_est / total
    assert (m[VCRE], m[VCRE_AUC]) == pytest.approx((p, p))
    assert m["Estimates for % of frames"] == pytest.approx(p)
    # ScanNet AUC: max(R, t-direction) = 7 deg for every estimate (a 7 deg rotation turns any
    # translation direction by <= 7 deg), inf for the missing ones. Sorted with the origin:
    # errors 0, 7 (x n_est), inf (x missing); recall 0, 1/N, ..., n_est/N (N = total). The
    # trapezoid runs from (0, 0) to (7, 1/N), rises vertically to (7, p), then stays at p:
    # @5 0 ; @10 (7 * (1/N) / 2 + 3 p) / 10 ; @20 (7 * (1/N) / 2 + 13 p) / 20
    # (fountain: N = 17, p = 15/17 -> @10 (3.5 + 45) / 170 = 0.28529, @20 (3.5 + 195) / 340 = 0.58382)
    auc = res["scannet_pose_auc"]
    assert auc["auc@5deg"] == 0.0
    assert auc["auc@10deg"] == pytest.approx((3.5 / total + 3 * p) / 10)
    assert auc["auc@20deg"] == pytest.approx((3.5 / total + 13 * p) / 20)


def test_track2_evaluates_only_the_window_queries(dataset: Path, tmp_path: Path) -> None:
    info = json.loads((dataset / "track2" / "mapfree.json").read_text())
    scenes = read_dataset(dataset / "track2")
    w = info["eval_step"]
    evaluated = {s.name: s.queries[w - 1::w] for s in scenes}
    write_submission(tmp_path / "t2", {s: [Estimate(q.name, q.T_world_cam, 2.0) for q in qs]
                                       for s, qs in evaluated.items()})
    res = _evaluate(dataset / "track2", tmp_path / "t2", tmp_path / "t2.json")
    assert res["failures"] == 0 and (res["eval_offset"], res["eval_step"]) == (w - 1, w)
    assert res["summary"][POSE] == pytest.approx(1.0)
    # context frames only (the first of each window): every evaluated frame is missing
    write_submission(tmp_path / "ctx", {s.name: [Estimate(q.name, q.T_world_cam, 2.0) for q in s.queries[0::w]]
                                        for s in scenes})
    assert main(["mapfree", "evaluate", "--dataset", str(dataset / "track2"),
                 "--submission", str(tmp_path / "ctx")]) == 1      # no valid estimate: ERROR, exit 1
