"""KeyframeStore on real images: round trips, validation, schema/corruption errors, blobs, threads."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import KeyframeDBError
from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.keyframes import SCHEMA_VERSION, Keyframe, KeyframeStore, pack_arrays, unpack_arrays

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"


def real_keyframes(n: int = 3) -> list[Keyframe]:
    recs = read_posed_folder(SCENE, "db")[:n]
    return [Keyframe(name=r.name, image_jpeg=r.path.read_bytes(), intrinsics=r.intrinsics,
                     T_world_cam=r.T_world_cam, stamp_ns=1_000_000_000 * i) for i, r in enumerate(recs)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kf.db"


def test_round_trip_real_images_survives_reopen(db: Path) -> None:
    kfs = real_keyframes(3)
    depth = np.random.default_rng(0).uniform(0.5, 20.0, (48, 64)).astype(np.float32)
    kfs[1].depth_m = depth
    with KeyframeStore.create(db, units="m", creator="test") as store:
        ids = store.add_keyframes(kfs[:2])
        ids.append(store.add_keyframe(kfs[2]))
    assert ids == sorted(ids) and len(set(ids)) == 3
    with KeyframeStore.open(db, readonly=True) as store:
        assert len(store) == 3 and store.keyframe_ids() == ids
        for kf_id, src in zip(ids, kfs):
            got = store.get_keyframe(kf_id)
            assert got.kf_id == kf_id and got.name == src.name and got.stamp_ns == src.stamp_ns
            assert hashlib.sha256(got.image_jpeg).digest() == hashlib.sha256(src.image_jpeg).digest()
            assert np.array_equal(got.T_world_cam, src.T_world_cam)  # bit-exact float64
            assert got.intrinsics == src.intrinsics
            assert got.decode_image().shape == (src.intrinsics.height, src.intrinsics.width, 3)
        assert store.get_keyframe(ids[0]).depth_m is None
        got_depth = store.get_keyframe(ids[1]).depth_m
        assert got_depth.dtype == np.float32 and np.array_equal(got_depth, depth)
        pose_ids, Ts = store.poses()
        assert pose_ids.tolist() == ids and Ts.shape == (3, 4, 4)
        assert np.array_equal(Ts, np.stack([k.T_world_cam for k in kfs]))
        assert [k.name for k in store.iter_keyframes()] == [k.name for k in kfs]
        assert store.intrinsics()[ids[2]] == kfs[2].intrinsics
        meta = store.metadata
        assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["units"] == "m"
        assert meta["creator"] == "test" and meta["created_utc"].endswith("+00:00")
        assert store.integrity_check() == "ok"


def test_explicit_ids_are_kept_and_duplicates_roll_back_the_batch(db: Path) -> None:
    a, b, c = real_keyframes(3)
    a.kf_id, b.kf_id, c.kf_id = 10, 11, 10
    with KeyframeStore.create(db) as store:
        assert store.add_keyframes([a]) == [10]
        with pytest.raises(KeyframeDBError, match="id 10"):
            store.add_keyframes([b, c])        # b alone is fine, c collides: nothing is inserted
        assert store.keyframe_ids() == [10]
        b.kf_id = None
        assert store.add_keyframe(b) == 11


def test_empty_database(db: Path) -> None:
    KeyframeStore.create(db).close()
    with KeyframeStore.open(db) as store:
        ids, Ts = store.poses()
        assert len(store) == 0 and store.keyframe_ids() == [] and list(store.iter_keyframes()) == []
        assert ids.shape == (0,) and Ts.shape == (0, 4, 4)
        assert store.backends() == {} and store.intrinsics() == {}
        with pytest.raises(KeyframeDBError, match="no keyframe with id 1"):
            store.get_keyframe(1)
        with pytest.raises(KeyframeDBError, match="no keyframe with id 1"):
            store.remove_keyframe(1)


def test_create_and_open_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kf.db"
    KeyframeStore.create(path).close()
    with pytest.raises(KeyframeDBError, match=f"cannot create {path}: file exists"):
        KeyframeStore.create(path)
    with pytest.raises(KeyframeDBError, match="does not exist"):
        KeyframeStore.create(tmp_path / "no_dir" / "kf.db")
    missing = tmp_path / "missing.db"
    with pytest.raises(KeyframeDBError, match=f"not found: {missing}"):
        KeyframeStore.open(missing)


def test_schema_version_mismatch_is_a_clear_error(db: Path) -> None:
    KeyframeStore.create(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE metadata SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(KeyframeDBError) as err:
        KeyframeStore.open(db)
    msg = str(err.value)
    assert str(db) in msg and "schema version 99" in msg and f"reads version {SCHEMA_VERSION}" in msg


@pytest.mark.parametrize("content", [b"this is not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_or_foreign_file_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    with pytest.raises(KeyframeDBError, match=str(path)):
        KeyframeStore.open(path)


def test_other_sqlite_database_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(KeyframeDBError, match="no metadata table|not a keyframe database"):
        KeyframeStore.open(path)


def test_truncated_database_is_rejected(db: Path) -> None:
    with KeyframeStore.create(db) as store:
        store.add_keyframes(real_keyframes(2))
    data = db.read_bytes()
    db.write_bytes(data[:50])  # header cut: not a database any more
    with pytest.raises(KeyframeDBError, match=str(db)):
        KeyframeStore.open(db)


def test_invalid_keyframes_are_rejected_and_nothing_is_written(db: Path) -> None:
    good = real_keyframes(1)[0]
    nan_pose = good.T_world_cam.copy()
    nan_pose[0, 3] = np.nan
    scaled = good.T_world_cam.copy()
    scaled[:3, :3] *= 1.01
    cases = {
        "finite 4x4": Keyframe(good.name, good.image_jpeg, good.intrinsics, nan_pose),
        "not a rigid transform": Keyframe(good.name, good.image_jpeg, good.intrinsics, scaled),
        "neither JPEG nor PNG": Keyframe(good.name, b"GIF89a....", good.intrinsics, good.T_world_cam),
        "non-empty encoded": Keyframe(good.name, b"", good.intrinsics, good.T_world_cam),
        "name must be": Keyframe("", good.image_jpeg, good.intrinsics, good.T_world_cam),
        "depth must be finite": Keyframe(good.name, good.image_jpeg, good.intrinsics, good.T_world_cam,
                                         depth_m=np.full((4, 4), np.nan)),
        "intrinsics must be": Keyframe(good.name, good.image_jpeg, np.eye(3),  # type: ignore[arg-type]
                                       good.T_world_cam),
    }
    with KeyframeStore.create(db) as store:
        rev = store.revision
        for match, kf in cases.items():
            with pytest.raises(KeyframeDBError, match=match):
                store.add_keyframes([good, kf])
        assert len(store) == 0 and store.revision == rev


def test_blobs_fingerprints_and_cascade(db: Path) -> None:
    arrays = {"kp": np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32),
              "desc": np.arange(50 * 8, dtype=np.uint8).reshape(50, 8)}
    with KeyframeStore.create(db) as store:
        a, b = store.add_keyframes(real_keyframes(2))
        store.put_blob(a, "geometric", "features", pack_arrays(arrays), fingerprint="sift-v1")
        store.put_blob(b, "geometric", "features", b"raw", fingerprint="sift-v1")
        store.put_map_blob("retrieval", "index", b"idx", fingerprint="thumb-16x12")
        got = unpack_arrays(store.get_blob(a, "geometric", "features", "sift-v1"))
        assert set(got) == {"kp", "desc"} and all(np.array_equal(got[k], arrays[k]) for k in arrays)
        assert store.get_blob(a, "geometric", "features", "sift-v2") is None   # stale fingerprint
        assert store.get_blob(a, "geometric", "points3d", "sift-v1") is None   # absent key
        assert store.get_map_blob("retrieval", "index", "thumb-16x12") == b"idx"
        assert store.get_map_blob("retrieval", "index", "other") is None
        assert store.backends() == {"geometric": {"sift-v1"}, "retrieval": {"thumb-16x12"}}
        assert [i for i, _ in store.iter_blobs("geometric", "features", "sift-v1")] == [a, b]
        store.put_blob(a, "geometric", "features", b"new", fingerprint="sift-v2")  # re-index replaces
        assert store.get_blob(a, "geometric", "features", "sift-v1") is None
        assert store.get_blob(a, "geometric", "features", "sift-v2") == b"new"
        assert store.blob_counts() == {("geometric", "sift-v1"): 1, ("geometric", "sift-v2"): 1}
        with pytest.raises(KeyframeDBError, match="no keyframe with id 999"):
            store.put_blob(999, "geometric", "features", b"x", fingerprint="sift-v1")
        with pytest.raises(KeyframeDBError, match="fingerprint must be"):
            store.put_blob(a, "geometric", "features", b"x", fingerprint="")
        store.remove_keyframe(a)
        assert store.backends() == {"geometric": {"sift-v1"}, "retrieval": {"thumb-16x12"}}
        assert store.blob_counts() == {("geometric", "sift-v1"): 1}


def test_pack_arrays_rejects_objects_and_garbage() -> None:
    with pytest.raises(ValueError, match="object dtype"):
        pack_arrays({"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(KeyframeDBError, match="not a packed array archive"):
        unpack_arrays(b"not an npz")
    assert unpack_arrays(pack_arrays({})) == {}


def test_revision_bumps_on_every_change_and_is_seen_by_other_handles(db: Path) -> None:
    kfs = real_keyframes(2)
    with KeyframeStore.create(db) as store, KeyframeStore.open(db, readonly=True) as reader:
        revs = [store.revision]
        kf_id = store.add_keyframe(kfs[0])
        revs.append(store.revision)
        store.add_keyframes([kfs[1]])
        revs.append(store.revision)
        store.put_blob(kf_id, "b", "k", b"x", "f")
        revs.append(store.revision)
        store.put_map_blob("b", "k", b"x", "f")
        revs.append(store.revision)
        store.set_metadata("site", "lab")
        revs.append(store.revision)
        store.remove_keyframe(kf_id)
        revs.append(store.revision)
        assert all(b > a for a, b in zip(revs, revs[1:])), revs
        _ = (len(store), store.poses(), store.metadata, store.backends())  # reads do not bump
        assert store.revision == revs[-1] == reader.revision
        assert reader.metadata["site"] == "lab"


def test_readonly_reserved_and_closed(db: Path) -> None:
    KeyframeStore.create(db).close()
    with KeyframeStore.open(db, readonly=True) as ro:
        with pytest.raises(KeyframeDBError, match="read-only"):
            ro.add_keyframe(real_keyframes(1)[0])
    store = KeyframeStore.open(db)
    for key in ("schema_version", "revision", ""):
        with pytest.raises(KeyframeDBError, match="reserved"):
            store.set_metadata(key, "2")
    store.close()
    with pytest.raises(KeyframeDBError, match="closed"):
        len(store)


def test_concurrent_reader_and_writer_threads(db: Path) -> None:
    """The node's pattern: one thread inserts keyframes while another keeps reading."""
    src = real_keyframes(3)
    n_writes = 30
    errors: list[BaseException] = []
    seen_counts: list[int] = []
    done = threading.Event()
    store = KeyframeStore.create(db)

    def writer() -> None:
        try:
            for i in range(n_writes):
                kf = src[i % 3]
                T = kf.T_world_cam @ make_T(so3_exp([0.0, 0.01 * i, 0.0]), [0.1 * i, 0.0, 0.0])
                store.add_keyframe(Keyframe(f"live_{i}", kf.image_jpeg, kf.intrinsics, T, stamp_ns=i))
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set() or not seen_counts or seen_counts[-1] < n_writes:
                ids, Ts = store.poses()
                seen_counts.append(len(ids))
                if len(ids):
                    kf = store.get_keyframe(int(ids[-1]))
                    assert kf.name == f"live_{kf.stamp_ns}" and np.array_equal(kf.T_world_cam, Ts[-1])
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    store.close()
    assert not errors, errors
    assert seen_counts == sorted(seen_counts) and seen_counts[-1] == n_writes
    with KeyframeStore.open(db) as check:
        assert len(check) == n_writes and check.integrity_check() == "ok"
