"""`reloc-vggt mapfree localize` on converted fountain-P11 scenes: submissions written, scored,
unsolvable scenes left out with the reason logged; the triangulated reference depth."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.cli import main
from reloc_vggt_ros.localizer.geometric.config import FeatureConfig
from reloc_vggt_ros.mapfree import read_submission, read_dataset
from reloc_vggt_ros.mapfree.convert import convert_posed_folder
from reloc_vggt_ros.mapfree.dataset import INFO_FILE, load_depth
from reloc_vggt_ros.mapfree.depth import write_triangulated_depth
from reloc_vggt_ros.mapfree.registry import mapfree_backend_names

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FOUNTAIN = DATA / "fountain-P11"
pytestmark = [pytest.mark.skipif(not FOUNTAIN.is_dir(), reason="needs ../shared/data"), pytest.mark.slow]
FAST = json.dumps({"features": {"max_edge_px": 640, "max_keypoints": 2048}})


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Track 1 and 2 sets holding fountain-P11_b1 only, plus a Track 1 scene whose reference
    shows another place (the temple) and one whose reference does not fit its intrinsics."""
    work = tmp_path_factory.mktemp("conv")
    convert_posed_folder(FOUNTAIN, work)
    out = tmp_path_factory.mktemp("sets")
    for track in ("track1", "track2"):
        (out / track).mkdir()
        shutil.copytree(work / track / "fountain-P11_b1", out / track / "fountain-P11_b1")
        info = json.loads((work / track / INFO_FILE).read_text())
        info["scenes"] = {k: v for k, v in info["scenes"].items() if k == "fountain-P11_b1"}
        (out / track / INFO_FILE).write_text(json.dumps(info))
    temple = cv2.imread(str(next((DATA / "middlebury-temple-ring" / "images").glob("*.jpg"))))
    for name, image in (("elsewhere", cv2.resize(temple, (1536, 1024))), ("wrong_size", temple)):
        shutil.copytree(out / "track1" / "fountain-P11_b1", out / "track1" / name)
        cv2.imwrite(str(out / "track1" / name / "seq0" / "frame_00000.jpg"), image)
    return out


def test_localize_writes_a_submission_and_leaves_out_what_it_cannot_solve(
        sets: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    assert "geometric" in mapfree_backend_names()
    with caplog.at_level(logging.INFO):
        assert main(["mapfree", "localize", "--dataset", str(sets / "track1"), "--out", str(tmp_path / "sub"),
                     "--options", FAST]) == 0
    sub = read_submission(tmp_path / "sub")
    assert set(sub) == {"fountain-P11_b1"}                         # the other two scenes: no file
    assert len(sub["fountain-P11_b1"]) == 3
    assert all(e.confidence <= 0.01 for e in sub["fountain-P11_b1"].values())   # no scale: ranked low
    logs = caplog.text
    assert "wrong_size: skipped: reference intrinsics are for 1536x1024 but the reference image is 640x480" in logs
    assert "elsewhere seq1/frame_00000.jpg: no pose:" in logs and "elsewhere: no frame localized" in logs
    assert "no source of metric scale" in logs
    res = tmp_path / "eval.json"
    assert main(["mapfree", "evaluate", "--dataset", str(sets / "track1"), "--submission", str(tmp_path / "sub"),
                 "--json", str(res)]) == 0
    scores = json.loads(res.read_text())
    assert scores["scannet_pose_auc"]["auc@20deg"] > 0.3               # 3 of 9 frames: the other scenes fail
    assert scores["scenes"]["fountain-P11_b1"]["median_rot_err_deg"] < 0.5


def test_track2_and_depth_give_metric_poses(sets: Path, tmp_path: Path) -> None:
    assert main(["mapfree", "localize", "--dataset", str(sets / "track2"), "--out", str(tmp_path / "t2.zip"),
                 "--options", FAST]) == 0
    t2 = read_submission(tmp_path / "t2.zip")["fountain-P11_b1"]
    assert len(t2) == 2 and all(e.confidence > 0.5 for e in t2.values())   # OK: odometry scale
    scene = read_dataset(sets / "track2")[0]
    for name, e in t2.items():
        assert np.linalg.norm(e.T_world_cam[:3, 3] - scene.query(name).T_world_cam[:3, 3]) < 0.1
    # depth triangulated from the views the scene does not hold, read back like the challenge's depth
    written = write_triangulated_depth(sets / "track1", {"fountain-P11": FOUNTAIN},
                                       features=FeatureConfig(max_edge_px=768, max_keypoints=4096))
    assert written["fountain-P11_b1"] > 500
    scene1 = next(s for s in read_dataset(sets / "track1") if s.name == "fountain-P11_b1")
    depth = load_depth(scene1.reference, "tri")
    assert depth.shape == (1024, 1536) and 5.0 < np.median(depth[depth > 0]) < 15.0
    assert main(["mapfree", "localize", "--dataset", str(sets / "track1"), "--out", str(tmp_path / "d"),
                 "--depth-suffix", "tri", "--options", FAST]) == 0
    t1 = read_submission(tmp_path / "d")["fountain-P11_b1"]
    errs = [np.linalg.norm(e.T_world_cam[:3, 3] - scene1.query(n).T_world_cam[:3, 3]) for n, e in t1.items()]
    assert len(t1) == 3 and np.median(errs) < 0.25, errs
