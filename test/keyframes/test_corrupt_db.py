"""Damaged keyframe databases on a real map (fountain-P11 db split at 640 px, geometric blobs).

Each test damages a copy with the case function of ``bench.corrupt_db`` (real byte edits of the
file or SQL updates) and runs it through the node's ``Session``: either one KeyframeDBError at
open naming the file, what is wrong and what to do, or a warning for the skipped keyframe /
ignored blob, and then every query still published within 5 cm / 1 deg of the ground truth (never
a published pose off it). ``reloc-vggt db check`` must report the same damage.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.corrupt_db import CASES, SCENE, VICTIM, Outcome, build, ignored_blob_warning, run_case
from reloc_vggt_ros.cli import main
from reloc_vggt_ros.errors import KeyframeDBError
from reloc_vggt_ros.keyframes import SCHEMA_VERSION, KeyframeStore
from reloc_vggt_ros.keyframes.summary import summarize
from reloc_vggt_ros.session import Session, SessionConfig

N_QUERIES = 4
N_KEYFRAMES = 7
HINT = ("reloc-vggt db check", "reloc-vggt db build")


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("corrupt") / "intact.db")


def _case(name: str, intact: Path, tmp_path: Path) -> Outcome:
    return run_case(name, intact, tmp_path)


def _open_error(name: str, intact: Path, tmp_path: Path) -> tuple[Path, str]:
    """The damaged copy and the one error the node's Session.open gives on it."""
    path = tmp_path / f"{name}.db"
    shutil.copy(intact, path)
    CASES[name](path)
    session = Session(SessionConfig(), lambda store: pytest.fail("no localizer on a damaged file"))
    with pytest.raises(KeyframeDBError) as err:
        session.open(path, readonly=True)
    session.close()
    return path, str(err.value)


def _check_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    rc = main(["db", "check", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == (0 if report["ok"] else 1)
    return report


def _all_queries_right(o: Outcome, keyframes: int) -> None:
    assert o.open_error is None
    assert o.keyframes == keyframes
    assert (o.published, o.wrong, o.rejected) == (N_QUERIES, 0, []), o.summary


def test_the_intact_map_localizes_every_query_and_checks_clean(intact: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline the skip cases are compared with (so they can fail)."""
    from bench.corrupt_db import localize_queries
    from reloc_vggt_ros.localizer.registry import make_localizer

    session = Session(SessionConfig(), lambda store: make_localizer("geometric", store))
    session.open(intact, readonly=True)
    ok, wrong, rejected, _ = localize_queries(session)
    session.close()
    assert (ok, wrong, rejected) == (N_QUERIES, 0, [])
    assert _check_cli(intact, capsys) == {"path": str(intact), "ok": True, "keyframes": N_KEYFRAMES,
                                          "schema_version": SCHEMA_VERSION, "problems": []}


# ----------------------------------------------------------------- one error at open
def test_truncated_file(intact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, msg = _open_error("truncated", intact, tmp_path)
    assert msg.startswith(f"{path} is damaged: file is truncated: its header says ")
    assert f"the file has {path.stat().st_size} bytes" in msg and all(h in msg for h in HINT)
    with pytest.raises(KeyframeDBError, match="file is truncated"):
        KeyframeStore.open(path, readonly=True)
    report = _check_cli(path, capsys)
    assert not report["ok"] and "file is truncated" in report["problems"][0]


def test_random_bytes_over_a_table_page(intact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, msg = _open_error("damaged_table_page", intact, tmp_path)
    assert msg.startswith(f"{path} is damaged: database disk image is malformed; run `reloc-vggt db check {path}`")
    assert "reloc-vggt db build" in msg
    report = _check_cli(path, capsys)
    assert not report["ok"] and "malformed" in report["problems"][0]


def test_schema_version_from_the_future(intact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, msg = _open_error("future_schema", intact, tmp_path)
    assert msg.startswith(f"{path}: keyframe database schema version {SCHEMA_VERSION + 1}, this reloc_vggt_ros "
                          f"reads version {SCHEMA_VERSION}")
    assert "written by a newer reloc_vggt_ros: upgrade this one, or rebuild it with `reloc-vggt db build`" in msg
    assert _check_cli(path, capsys)["problems"] == [msg]


# ----------------------------------------------------------------- warnings; the rest still localizes
def test_random_bytes_in_the_middle(intact: Path, tmp_path: Path) -> None:
    """Whatever the middle holds (here a blob's payload), it is found and never used."""
    o = _case("random_bytes_middle", intact, tmp_path)
    damaged = [w for w in o.warnings if "damaged" in w]
    assert damaged and all("ignored and recomputed" in w or "is skipped" in w for w in damaged), o.warnings
    assert any("fails its checksum" in p or "malformed" in p for p in o.check_problems), o.check_problems
    _all_queries_right(o, N_KEYFRAMES)


def test_flipped_bit_in_a_pose_skips_the_keyframe(intact: Path, tmp_path: Path) -> None:
    """Silent bit rot of 1e-4 relative in a camera position: still rigid, only the checksum sees it."""
    o = _case("flipped_bit_in_pose", intact, tmp_path)
    damage = f"keyframe {VICTIM} (0003.jpg) in {tmp_path / 'flipped_bit_in_pose.db'} is damaged: "
    assert o.warnings == [damage + "pose/intrinsics/name columns fail their CRC32 check (bit rot or an edit); "
                          f"it is skipped (run `reloc-vggt db check {tmp_path / 'flipped_bit_in_pose.db'}` "
                          "to list the damage, then restore a backup copy or rebuild it with `reloc-vggt db build`)"]
    assert o.check_problems == [damage + "pose/intrinsics/name columns fail their CRC32 check (bit rot or an edit)"]
    _all_queries_right(o, N_KEYFRAMES - 1)
    with KeyframeStore.open(tmp_path / "flipped_bit_in_pose.db", readonly=True) as store:
        assert VICTIM not in store.poses()[0] and VICTIM not in store.intrinsics()
        assert list(store.damaged_keyframes()) == [VICTIM] and summarize(store)["keyframes"] == N_KEYFRAMES - 1
        assert VICTIM not in [kf.kf_id for kf in store.iter_keyframes()]
        with pytest.raises(KeyframeDBError, match=f"keyframe {VICTIM} .* is damaged: pose/intrinsics"):
            store.get_keyframe(VICTIM)


def test_flipped_bit_in_a_blob_recomputes_it(intact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    o = _case("flipped_bit_in_blob", intact, tmp_path)
    assert len(o.warnings) == 1 and o.warnings[0].startswith(ignored_blob_warning(VICTIM, "features"))
    assert "fails its checksum (stored CRC32" in o.warnings[0]
    assert len(o.check_problems) == 1 and f"blob geometric/features of keyframe {VICTIM}" in o.check_problems[0]
    _all_queries_right(o, N_KEYFRAMES)
    # opened writable (the node with mapping), the recomputed blob replaces the damaged one
    from reloc_vggt_ros.localizer.registry import make_localizer

    with KeyframeStore.open(tmp_path / "flipped_bit_in_blob.db") as store:
        make_localizer("geometric", store)
    assert _check_cli(tmp_path / "flipped_bit_in_blob.db", capsys)["ok"]


def test_blob_whose_shape_field_lies(intact: Path, tmp_path: Path) -> None:
    """Zip CRCs and the store checksum re-signed: only the size check of unpack_arrays can see it."""
    o = _case("blob_shape_lies", intact, tmp_path)
    assert len(o.warnings) == 1 and o.warnings[0].startswith(ignored_blob_warning(VICTIM, "features"))
    assert "is inconsistent: array 'descriptors.npy': its header says shape (" in o.warnings[0]
    assert "but its entry holds" in o.warnings[0]
    assert len(o.check_problems) == 1 and "its header says shape" in o.check_problems[0]
    _all_queries_right(o, N_KEYFRAMES)


def test_descriptors_of_the_wrong_dimension(intact: Path, tmp_path: Path) -> None:
    o = _case("wrong_descriptor_dim", intact, tmp_path)
    assert len(o.warnings) == 1 and o.warnings[0].startswith(ignored_blob_warning(VICTIM, "features"))
    assert ", 64), expected ('n', 128)" in o.warnings[0] and "features blob: descriptors has shape (" in o.warnings[0]
    assert len(o.check_problems) == 1 and ", 64), expected ('n', 128)" in o.check_problems[0]
    _all_queries_right(o, N_KEYFRAMES)


def test_empty_vocabulary_blob_is_retrained(intact: Path, tmp_path: Path) -> None:
    o = _case("empty_vocabulary", intact, tmp_path)
    assert o.warnings == [ignored_blob_warning(None, "vocabulary") + ": blob of 0 bytes is not a packed array "
                          "archive: BadZipFile: File is not a zip file"]
    assert o.check_problems == [f"{tmp_path / 'empty_vocabulary.db'}: map blob geometric/vocabulary: blob of 0 "
                                "bytes is not a packed array archive: BadZipFile: File is not a zip file"]
    _all_queries_right(o, N_KEYFRAMES)


@pytest.mark.parametrize("name", ["nan_pose", "non_rigid_pose"])
def test_nan_or_non_rigid_pose_skips_the_keyframe(name: str, intact: Path, tmp_path: Path) -> None:
    """The row checksum is re-signed (a writer that meant it): the pose check itself must catch it."""
    o = _case(name, intact, tmp_path)
    damage = f"keyframe {VICTIM} (0003.jpg) in {tmp_path / f'{name}.db'} is damaged: T_world_cam is not a finite rigid transform"
    assert len(o.warnings) == 1 and o.warnings[0].startswith(damage + "; it is skipped")
    assert o.check_problems == [damage]
    _all_queries_right(o, N_KEYFRAMES - 1)


def test_empty_database_is_a_warning_not_an_error(intact: Path, tmp_path: Path) -> None:
    o = _case("empty_database", intact, tmp_path)
    assert o.open_error is None and o.keyframes == 0
    assert o.warnings == [f"keyframe database {tmp_path / 'empty_database.db'} is empty: nothing to localize "
                          "against until keyframes are added (mapping.enabled)"]
    assert o.check_problems == []


# ----------------------------------------------------------------- schema 1 files
def test_schema_1_file_is_read_then_migrated_and_then_protected(intact: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    o = _case("schema_1_file", intact, tmp_path)
    path = tmp_path / "schema_1_file.db"
    assert o.warnings == [f"{path}: schema version 1 has no checksums: damage cannot be detected until it is "
                          f"opened writable once (`reloc-vggt db check --migrate {path}`)"]
    _all_queries_right(o, N_KEYFRAMES)
    before = _check_cli(path, capsys)
    assert before["schema_version"] == 1 and before["problems"] == [
        f"{path}: schema version 1 has no checksums (bit rot in blobs cannot be detected); open it writable "
        "once: `reloc-vggt db check --migrate`"]
    with caplog.at_level(logging.WARNING):
        assert main(["db", "check", "--migrate", str(path)]) == 0
    assert f"{path}: migrated from schema version 1 to {SCHEMA_VERSION}" in caplog.text
    after = _check_cli(path, capsys)
    assert after["ok"] and after["schema_version"] == SCHEMA_VERSION
    CASES["flipped_bit_in_pose"](path)   # the migrated checksums now catch bit rot
    assert _check_cli(path, capsys)["problems"][0].endswith("pose/intrinsics/name columns fail their CRC32 check "
                                                            "(bit rot or an edit)")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM blobs WHERE crc32 IS NULL").fetchone()[0] == 0
    conn.close()


def test_db_check_text_output(intact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rot.db"
    shutil.copy(intact, path)
    CASES["nan_pose"](path)
    CASES["wrong_descriptor_dim"](path)
    capsys.readouterr()
    assert main(["db", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 problem(s):"
    assert "T_world_cam is not a finite rigid transform" in lines[1] and ", 64), expected" in lines[2]
    assert lines[3] == "What to do: restore a backup copy or rebuild it with `reloc-vggt db build`."
    assert main(["db", "check", str(intact)]) == 0
    assert capsys.readouterr().out.startswith(f"{intact}: ok ({N_KEYFRAMES} keyframes, schema {SCHEMA_VERSION};")

