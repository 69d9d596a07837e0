"""KeyframeStore.backup: an online copy, or a WAL checkpoint so the .db file alone is complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.errors import KeyframeDBError
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed

SAMPLE = Path(__file__).parents[2] / "sample" / "fountain-P11-small"


@pytest.fixture()
def kfs():
    return [keyframe_from_posed(r, 160) for r in read_posed_folder(SAMPLE)[:3]]


def _main_file_alone(db: Path, tmp_path: Path) -> KeyframeStore:
    alone = tmp_path / "alone" / db.name
    alone.parent.mkdir(exist_ok=True)
    shutil.copyfile(db, alone)                                    # no -wal beside it
    return KeyframeStore.open(alone, readonly=True)


def test_checkpoint_puts_every_committed_keyframe_in_the_main_file(tmp_path, kfs):
    db = tmp_path / "map.db"
    with KeyframeStore.create(db) as store:
        store.add_keyframes(kfs)
        with pytest.raises(KeyframeDBError, match="no such table: metadata"):
            _main_file_alone(db, tmp_path)                        # everything is still in the WAL
        store.backup()
        with _main_file_alone(db, tmp_path) as after:
            assert len(after) == 3
            np.testing.assert_allclose(after.poses()[1], np.stack([k.T_world_cam for k in kfs]))


def test_read_only_store_checkpoints_a_writers_wal(tmp_path, kfs):
    db = tmp_path / "map.db"
    writer = KeyframeStore.create(db)
    writer.add_keyframes(kfs)
    with KeyframeStore.open(db, readonly=True) as reader:
        reader.backup()
    with _main_file_alone(db, tmp_path) as after:
        assert len(after) == 3
    writer.close()


def test_online_copy_while_a_writer_keeps_the_file_open(tmp_path, kfs):
    db, copy = tmp_path / "map.db", tmp_path / "copy.db"
    with KeyframeStore.create(db) as store:
        store.add_keyframes(kfs[:2])
        store.backup(copy)
        store.add_keyframe(kfs[2])
        with KeyframeStore.open(copy, readonly=True) as c:
            assert len(c) == 2 and c.integrity_check() == "ok"    # the state at the backup
        store.backup(copy)                                        # an existing target is overwritten
        with KeyframeStore.open(copy, readonly=True) as c:
            assert len(c) == 3 and c.revision == store.revision
        with pytest.raises(KeyframeDBError, match="onto itself"):
            store.backup(db)
        with pytest.raises(KeyframeDBError, match="does not exist"):
            store.backup(tmp_path / "missing" / "x.db")
