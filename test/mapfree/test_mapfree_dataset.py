"""mapfree dataset / submission readers and writers, and the converter, on real shared scenes."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.geometry import invert_T, quat_to_R
from reloc_vggt_ros.mapfree import (Estimate, load_depth, read_dataset, read_scene,
                                    read_submission, write_submission)
from reloc_vggt_ros.mapfree.convert import convert_posed_folder

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FOUNTAIN = DATA / "fountain-P11"
pytestmark = pytest.mark.skipif(not FOUNTAIN.is_dir(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mapfree")
    convert_posed_folder(FOUNTAIN, out)
    return out


def test_converted_scene_matches_source_in_the_challenge_convention(converted: Path) -> None:
    src = {p.name: p for p in read_posed_folder(FOUNTAIN)}
    info = json.loads((converted / "track1" / "mapfree.json").read_text())
    assert (info["eval_offset"], info["eval_step"]) == (0, 1)
    scenes = read_dataset(converted / "track1")
    assert [s.name for s in scenes] == sorted(info["scenes"])
    X = np.array([0.3, -0.2, 9.0])                 # a world point in front of the fountain
    for scene in scenes:
        meta = info["scenes"][scene.name]
        ref = src[meta["reference"]]
        assert scene.reference.T_world_cam == pytest.approx(np.eye(4))
        assert (scene.root / "seq0/frame_00000.jpg").read_bytes() == ref.path.read_bytes()
        assert [q.name for q in scene.queries] == [m["name"] for m in meta["queries"]]
        lo, hi = meta["angle_range_deg"]
        for q, m in zip(scene.queries, meta["queries"]):
            s = src[m["source"]]
            assert lo <= m["angle_deg"] < hi
            assert q.path.read_bytes() == s.path.read_bytes()
            assert q.intrinsics == s.intrinsics
            # poses.txt line read raw: x_q = R(q) x_ref + t must equal the source's own
            # world-to-camera maps composed: x_ref = T_ref_cw X, x_q = T_q_cw X
            line = next(l for l in (scene.root / "poses.txt").read_text().splitlines() if l.startswith(q.name))
            vals = [float(v) for v in line.split()[1:]]
            x_ref = invert_T(ref.T_world_cam) @ np.r_[X, 1.0]
            x_q = invert_T(s.T_world_cam) @ np.r_[X, 1.0]
            assert quat_to_R(vals[:4]) @ x_ref[:3] + vals[4:7] == pytest.approx(x_q[:3], abs=1e-9)
            assert vals[0] >= 0                                            # w first, w >= 0
    # buckets increase in angle across the scenes of one source
    ranges = [info["scenes"][s]["angle_range_deg"] for s in sorted(info["scenes"])]
    assert ranges == sorted(ranges)


def test_track2_windows_and_device_poses(converted: Path) -> None:
    info = json.loads((converted / "track2" / "mapfree.json").read_text())
    w = info["scenes"][next(iter(info["scenes"]))]["window"]
    assert (info["eval_offset"], info["eval_step"]) == (w - 1, w)
    for scene in read_dataset(converted / "track2"):
        evaluated = scene.queries[w - 1::w]
        assert [q.name for q in evaluated] == [m["name"] for m in info["scenes"][scene.name]["queries"]]
        assert len(scene.device_poses) == len(scene.queries)
        for k, q in enumerate(evaluated):
            assert scene.device_poses[q.name] == pytest.approx(np.eye(4), abs=1e-9)   # query at identity
            for ctx in scene.queries[k * w:(k + 1) * w]:       # device pose = relative to the query
                assert scene.device_poses[ctx.name] == pytest.approx(
                    invert_T(q.T_world_cam) @ ctx.T_world_cam, abs=1e-9)


def test_submission_round_trip_folder_and_zip(converted: Path, tmp_path: Path) -> None:
    scene = read_dataset(converted / "track1")[0]
    est = {scene.name: [Estimate(q.name, q.T_world_cam, 10.0 + i) for i, q in enumerate(scene.queries)]}
    for out in (tmp_path / "sub", tmp_path / "sub.zip"):
        write_submission(out, est)
        back = read_submission(out)
        assert set(back) == {scene.name}
        for q, e in zip(scene.queries, est[scene.name]):
            got = back[scene.name][q.name]
            assert got.T_world_cam == pytest.approx(q.T_world_cam, abs=1e-9)
            assert got.confidence == pytest.approx(e.confidence)
    assert zipfile.ZipFile(tmp_path / "sub.zip").namelist() == [f"pose_{scene.name}.txt"]
    assert len((tmp_path / "sub" / f"pose_{scene.name}.txt").read_text().split("\n")[0].split()) == 9


def test_submission_lines_the_benchmark_ignores_or_rejects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pose_s1.txt").write_text(
        "seq1/frame_00000.jpg 1 0 0 0 0.1 0.2 0.3 5\n"       # valid
        "seq1/frame_00001.jpg 1 0 0 0 0.1 0.2 0.3\n"         # 8 fields
        "seq1/frame_00002.jpg 1 0 0 0 nan 0.2 0.3 5\n"       # non-finite
        "seq1/frame_00003.jpg 0 0 0 0 0.1 0.2 0.3 5\n"       # zero quaternion
        "seq1/frame.jpg 1 0 0 0 0.1 0.2 0.3 5\n"             # no frame number
        "# seq1/frame_00004.jpg 1 0 0 0 0.1 0.2 0.3\n")      # comment
    with caplog.at_level(logging.WARNING):
        got = read_submission(sub)["s1"]
    assert list(got) == ["seq1/frame_00000.jpg"]
    # world-to-camera t = (0.1, 0.2, 0.3), no rotation -> camera centre -t
    assert got["seq1/frame_00000.jpg"].T_world_cam[:3, 3] == pytest.approx([-0.1, -0.2, -0.3])
    assert sum("ignored" in r.message for r in caplog.records) == 4
    (sub / "pose_s1.txt").write_text("seq1/frame_00000.jpg 1 0 0 0 0 0 0 -1\n")
    with pytest.raises(DataError, match="negative"):
        read_submission(sub)
    with pytest.raises(DataError, match="not found"):
        read_submission(tmp_path / "nope")


def _tiny_scene(root: Path, ref_pose: str = "1 0 0 0 0 0 0") -> Path:
    (root / "seq0").mkdir(parents=True)
    (root / "seq1").mkdir()
    img = np.zeros((4, 6, 3), np.uint8)
    for n in ("seq0/frame_00000.jpg", "seq1/frame_00000.jpg"):
        cv2.imwrite(str(root / n), img)
    (root / "intrinsics.txt").write_text("seq0/frame_00000.jpg 5 5 3 2 6 4\nseq1/frame_00000.jpg 5 5 3 2 6 4\n")
    (root / "poses.txt").write_text(f"seq0/frame_00000.jpg {ref_pose}\nseq1/frame_00000.jpg 0 0 0 0 0 0 0\n")
    return root


def test_hidden_ground_truth_depth_and_bad_scenes(tmp_path: Path) -> None:
    scene = read_scene(_tiny_scene(tmp_path / "s0"))
    assert scene.queries[0].T_world_cam is None                # test split: all-zero line
    depth = np.full((4, 6), 1500, np.uint16)
    depth[0, 0] = 0
    cv2.imwrite(str(tmp_path / "s0/seq1/frame_00000.dptnyu.png"), depth)
    d = load_depth(scene.queries[0], "dptnyu")
    assert d[1, 1] == pytest.approx(1.5) and d[0, 0] == 0.0
    with pytest.raises(DataError, match="depth image not found"):
        load_depth(scene.queries[0], "dptkitti")
    with pytest.raises(DataError, match="identity"):
        read_scene(_tiny_scene(tmp_path / "s1", "1 0 0 0 0.5 0 0"))
    bad = _tiny_scene(tmp_path / "s2")
    (bad / "intrinsics.txt").write_text("seq0/frame_00000.jpg 5 5 3 2 6 4\n")
    with pytest.raises(DataError, match="no line in intrinsics.txt"):
        read_scene(bad)
    (bad / "poses.txt").write_text("seq0/frame_00000.jpg 1 0 0\n")
    with pytest.raises(DataError, match=r"poses.txt:1: expected 8 fields"):
        read_scene(bad)
    with pytest.raises(DataError, match="no map-free scene"):
        read_dataset(tmp_path / "s0" / "seq1")


def test_convert_rejects_bad_buckets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="edges must increase"):
        convert_posed_folder(FOUNTAIN, tmp_path, [0.0, 20.0, 10.0])
    with pytest.raises(DataError, match="window"):
        convert_posed_folder(FOUNTAIN, tmp_path, window=1)
    (tmp_path / "distorted").mkdir()
    (tmp_path / "distorted" / "distortion.txt").write_text("plumb_bob 0.1 0 0 0 0\n")
    with pytest.raises(DataError, match="undistort"):
        convert_posed_folder(tmp_path / "distorted", tmp_path / "out")
