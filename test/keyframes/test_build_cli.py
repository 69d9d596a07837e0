"""`reloc-vggt db build` / `db info` and build_keyframe_db on a real scene."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.cli import main
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError, KeyframeDBError
from reloc_vggt_ros.keyframes import SCHEMA_VERSION, KeyframeStore, build_keyframe_db
from reloc_vggt_ros.keyframes.summary import median_nn_baseline
from reloc_vggt_ros.localizer.geometric import PRESETS
from reloc_vggt_ros.localizer.geometric.indexing import fingerprints

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"


def test_db_build_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fountain.db"
    assert main(["db", "build", "--images", str(SCENE), "--out", str(out), "--backend", "none"]) == 0
    db_recs = read_posed_folder(SCENE, "db")
    with KeyframeStore.open(out, readonly=True) as store:
        kfs = list(store.iter_keyframes())
        assert [k.name for k in kfs] == [r.name for r in db_recs]
        for kf, rec in zip(kfs, db_recs):   # original bytes kept when not resizing
            assert kf.image_jpeg == rec.path.read_bytes() and np.array_equal(kf.T_world_cam, rec.T_world_cam)
            assert kf.intrinsics == rec.intrinsics
        assert store.metadata["split"] == "db" and store.metadata["units"] == "m"
    assert not list(tmp_path.glob(".*building*")), "temporary build file left behind"
    capsys.readouterr()

    assert main(["db", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "keyframes:      7" in text and "1536x1024 (7)" in text and "units:          m" in text
    assert f"schema version: {SCHEMA_VERSION}" in text
    assert "backend:        thumbnail  fingerprint thumb-16x12-grey-v1  (7 keyframes with blobs)" in text

    assert main(["db", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    centres = np.stack([r.T_world_cam[:3, 3] for r in db_recs])
    assert info["keyframes"] == 7 and info["units"] == "m"
    np.testing.assert_allclose(info["extent"]["min"], centres.min(axis=0))
    np.testing.assert_allclose(info["extent"]["max"], centres.max(axis=0))
    nn = [min(np.linalg.norm(c - o) for j, o in enumerate(centres) if j != i) for i, c in enumerate(centres)]
    assert info["extent"]["median_nn_baseline"] == pytest.approx(float(np.median(nn)))


def test_build_refuses_overwrite_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.db"
    args = ["db", "build", "--images", str(SCENE / "images"), "--out", str(out), "--backend", "none"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    assert "ERROR:" in capsys.readouterr().err and out.exists()
    assert main(args + ["--overwrite", "--split", "query", "--no-thumbnails"]) == 0
    with KeyframeStore.open(out) as store:
        assert len(store) == 4 and store.metadata["split"] == "query" and store.backends() == {}
    with pytest.raises(KeyframeDBError, match="exists"):
        build_keyframe_db(SCENE, out)


def test_build_with_max_side_scales_intrinsics(tmp_path: Path) -> None:
    out = build_keyframe_db(SCENE, tmp_path / "maps" / "small.db", split=None, max_side=640)  # dir created
    recs = read_posed_folder(SCENE)
    with KeyframeStore.open(out) as store:
        assert len(store) == 11
        for kf, rec in zip(store.iter_keyframes(), recs):
            img = kf.decode_image()
            assert img.shape == (427, 640, 3) and kf.image_jpeg[:3] == b"\xff\xd8\xff"
            i, s = kf.intrinsics, rec.intrinsics
            assert (i.width, i.height) == (640, 427)
            assert i.fx == pytest.approx(s.fx * 640 / 1536) and i.fy == pytest.approx(s.fy * 427 / 1024)
            assert i.cx == pytest.approx((s.cx + 0.5) * 640 / 1536 - 0.5)
            assert i.cy == pytest.approx((s.cy + 0.5) * 427 / 1024 - 0.5)
        # the downscaled image is the source image resized (JPEG loss only)
        src = cv2.resize(cv2.imread(str(recs[0].path)), (640, 427), interpolation=cv2.INTER_AREA)
        diff = np.abs(store.get_keyframe(store.keyframe_ids()[0]).decode_image().astype(int) - src)
        assert diff.mean() < 3.0


def test_backend_indexing_goes_through_the_registry(tmp_path: Path) -> None:
    out = build_keyframe_db(SCENE, tmp_path / "a.db", max_side=320, backend="geometric", thumbnails=False)
    features_fp = fingerprints(PRESETS["default"].map)["features"]
    with KeyframeStore.open(out) as store:
        assert set(store.backends()) == {"geometric"}
        assert sorted(i for i, _ in store.iter_blobs("geometric", "features", features_fp)) == store.keyframe_ids()
    with pytest.raises(ConfigError, match="unknown localizer backend 'nope'"):
        build_keyframe_db(SCENE, tmp_path / "b.db", max_side=64, backend="nope", thumbnails=False)


def test_build_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "build", "--images", str(tmp_path), "--out", str(tmp_path / "x.db")]) == 1
    assert "not a posed-image folder" in capsys.readouterr().err
    assert main(["db", "info", str(tmp_path / "missing.db")]) == 1
    assert "not found" in capsys.readouterr().err


def test_median_nn_baseline() -> None:
    assert np.isnan(median_nn_baseline(np.zeros((1, 3))))
    pts = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [3, 4, 0]], float)
    assert median_nn_baseline(pts) == pytest.approx(np.median([1, 1, 2, 4]))


def test_rig_build_takes_one_folder_per_camera_each_with_its_lens(tmp_path: Path) -> None:
    """Two cameras of a rig (a pinhole one and a plumb_bob one, fountain-P11 at 640x427) built into
    one map: names prefixed by the camera's folder, each keyframe with its own folder's lens, and a
    raw query of the distorted camera localizes against the map."""
    from reloc_vggt_ros.data.distort import write_distorted_folder
    from reloc_vggt_ros.geometry import Distortion, pose_error
    from reloc_vggt_ros.localizer.registry import make_localizer

    lens = Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012))
    front = write_distorted_folder(SCENE, tmp_path / "front", None, size=(640, 427))
    side = write_distorted_folder(SCENE, tmp_path / "side", lens, size=(640, 427))
    out = tmp_path / "rig.db"
    assert main(["db", "build", "--images", str(front), "--images", str(side), "--out", str(out)]) == 0
    with KeyframeStore.open(out, readonly=True) as store:
        kfs = list(store.iter_keyframes())
        assert sorted(k.name for k in kfs) == sorted(f"{cam}/{r.name}" for cam in ("front", "side")
                                                     for r in read_posed_folder(front, "db"))
        assert {k.intrinsics.distortion for k in kfs} == {None, lens}
        assert all((k.intrinsics.distortion == lens) == k.name.startswith("side/") for k in kfs)
        q = read_posed_folder(side, "query")[0]
        loc = make_localizer("geometric", store, preset="realtime")
        res = loc.localize(cv2.imread(str(q.path)), q.intrinsics)
        assert res.ok, res.reason
        t, r = pose_error(res.T_world_cam, q.T_world_cam)
        assert t < 0.01 and r < 0.1, (t, r)
    with pytest.raises(Exception, match="distinct names"):
        build_keyframe_db([front, front], tmp_path / "twice.db")


def _content(path: Path) -> tuple[list, list, list]:
    """Every keyframe row, keyframe blob and map blob of a database, in a fixed order."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT * FROM keyframes ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM blobs ORDER BY kf_id, backend, key").fetchall(),
                conn.execute("SELECT * FROM map_blobs ORDER BY backend, key").fetchall())
    finally:
        conn.close()


def test_parallel_build_writes_the_same_database_as_a_serial_one(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Images resized and features extracted in 2 worker processes, written in order by one:
    the same keyframes, features, points, VLADs, vocabulary, graph and index, byte for byte."""
    sample = Path(__file__).resolve().parents[2] / "sample" / "fountain-P11-small"
    serial = build_keyframe_db(sample, tmp_path / "serial.db", split=None, max_side=320, backend="geometric")
    parallel = tmp_path / "parallel.db"
    assert main(["db", "build", "--images", str(sample), "--out", str(parallel), "--split", "all",
                 "--max-side", "320", "--jobs", "2"]) == 0
    capsys.readouterr()
    rows, blobs, map_blobs = _content(serial)
    assert len(rows) == 11 and {b[2] for b in blobs} >= {"features", "points", "vlad"}
    assert (rows, blobs, map_blobs) == _content(parallel)
