"""Each keyframe's lens model in the database: round trip, checksum, cascade, schema 2 -> 3 migration,
and posed folders with distortion.txt built into databases."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.data.distort import write_distorted_folder
from reloc_vggt_ros.errors import DataError, KeyframeDBError
from reloc_vggt_ros.geometry import Distortion
from reloc_vggt_ros.keyframes import SCHEMA_VERSION, Keyframe, KeyframeStore, build_keyframe_db

SCENE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fountain-P11"
LENSES = [Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012)),
          Distortion("rational_polynomial", (0.6, -0.1, 0.0008, -0.0005, 0.01, 0.9, 0.0, 0.02)),
          Distortion("equidistant", (0.02, -0.01, 0.005, -0.001)), None]


def _keyframes() -> list[Keyframe]:
    """Four real keyframes, one per lens model and one pinhole."""
    recs = read_posed_folder(SCENE, "db")[:4]
    return [Keyframe(r.name, r.path.read_bytes(), dataclasses.replace(r.intrinsics, distortion=d), r.T_world_cam)
            for r, d in zip(recs, LENSES)]


def test_lens_models_round_trip_and_are_checksummed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "kf.db"
    with KeyframeStore.create(path) as store:
        ids = store.add_keyframes(_keyframes())
    with KeyframeStore.open(path, readonly=True) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert [store.intrinsics()[i].distortion for i in ids] == LENSES
        assert [store.get_keyframe(i).intrinsics.distortion for i in ids] == LENSES
    # a flipped coefficient is caught by the row's CRC32: that keyframe is skipped, the others stay
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE keyframe_distortion SET coefficients = ? WHERE kf_id = ?",
                     (Distortion("plumb_bob", (-0.27, 0.09, 0.0008, -0.0005, -0.012)).D.tobytes(), ids[0]))
    with KeyframeStore.open(path) as store, caplog.at_level(logging.WARNING):
        assert sorted(store.intrinsics()) == ids[1:]
        assert "fail their CRC32 check" in caplog.text
        with pytest.raises(KeyframeDBError, match="fail their CRC32 check"):
            store.get_keyframe(ids[0])
        store.remove_keyframe(ids[1])        # cascades to its lens row
        assert store._conn.execute("SELECT COUNT(*) FROM keyframe_distortion WHERE kf_id = ?",
                                   (ids[1],)).fetchone()[0] == 0


def test_schema_2_file_is_read_as_pinhole_and_migrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.db"
    pinhole = [dataclasses.replace(kf, intrinsics=kf.intrinsics.pinhole) for kf in _keyframes()]
    with KeyframeStore.create(path) as store:
        ids = store.add_keyframes(pinhole[:2])
    with sqlite3.connect(path) as conn:        # the layout schema 2 wrote
        conn.execute("DROP TABLE keyframe_distortion")
        conn.execute("UPDATE metadata SET value = '2' WHERE key = 'schema_version'")
    with KeyframeStore.open(path, readonly=True) as store:
        assert store.schema_version == 2
        assert [store.get_keyframe(i).intrinsics for i in ids] == [kf.intrinsics for kf in pinhole[:2]]
    with caplog.at_level(logging.WARNING), KeyframeStore.open(path) as store:
        assert store.schema_version == 3 and store.check() == []   # old checksums still hold
        new = store.add_keyframe(_keyframes()[2])
        assert store.intrinsics()[new].distortion == LENSES[2]
    assert f"migrated from schema version 2 to {SCHEMA_VERSION}" in caplog.text


def test_posed_folder_distortion_txt_is_read_and_built(tmp_path: Path) -> None:
    folder = write_distorted_folder(SCENE, tmp_path / "fisheye", LENSES[2], size=(192, 128))
    assert (folder / "distortion.txt").read_text() == "equidistant 0.02 -0.01 0.005 -0.001\n"
    recs = read_posed_folder(folder)
    assert len(recs) == 11 and {r.intrinsics.distortion for r in recs} == {LENSES[2]}
    db = build_keyframe_db(folder, tmp_path / "fisheye.db", max_side=96, thumbnails=False)
    with KeyframeStore.open(db, readonly=True) as store:   # resized keyframes keep the lens
        assert {(i.width, i.distortion) for i in store.intrinsics().values()} == {(96, LENSES[2])}
    for text, reason in (("plumb_bob 0.1 0.2", "'plumb_bob' takes 5 coefficients, got 2"),
                         ("fisheye 0.1 0.2 0.3 0.4", "unknown distortion model 'fisheye'"),
                         ("plumb_bob 0.1 x 0 0 0", "non-numeric distortion coefficient"),
                         ("plumb_bob 0 0 0 0 0\nequidistant 0 0 0 0", "expected one line")):
        (folder / "distortion.txt").write_text(text + "\n")
        with pytest.raises(DataError, match=f"{folder / 'distortion.txt'}: .*{reason}"):
            read_posed_folder(folder)
    (folder / "distortion.txt").write_text("plumb_bob 0 0 0 0 0\n")      # rectified: pinhole
    assert {r.intrinsics.distortion for r in read_posed_folder(folder)} == {None}
