"""Damaged keyframe databases: what the node does with each (docs/database.md, "Damaged databases").

    .venv/bin/python -m bench.corrupt_db [--scene ../shared/data/fountain-P11] [--max-side 640]
                                         [--json bench/results/corrupt_db.json]

Builds one geometric database from the scene's db split, then for every case damages a copy —
real byte edits of the file (truncation, random bytes, a flipped bit) or the SQL updates a
buggy or hostile writer would make (lying blob fields, NaN pose, future schema) — and runs it
through the node's own path: ``Session.open`` (store + geometric localizer, read-only) and
``Session.localize`` of every query, each pose compared with the ground truth. The outcome of a
case is the one error at open, or the warnings (keyframe skipped / blob recomputed) plus the
query results; ``wrong`` counts published poses off the ground truth (must be 0), and ``db
check`` shows what the full check reports. The case functions are also the test fixtures
(``test/keyframes/test_corrupt_db.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import shutil
import sqlite3
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import RelocError
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.keyframes import SCHEMA_VERSION, build_keyframe_db, pack_arrays, unpack_arrays
from reloc_vggt_ros.keyframes.commands import check_database
from reloc_vggt_ros.localizer.geometric.indexing import BACKEND, fingerprints
from reloc_vggt_ros.localizer.registry import make_config, make_localizer
from reloc_vggt_ros.session import Published, Session, SessionConfig

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "fountain-P11"
VICTIM = 3            # the keyframe id the per-keyframe cases damage
MAX_T_ERR_M, MAX_R_ERR_DEG = 0.05, 1.0   # a published pose further off the ground truth is "wrong"

__all__ = ["CASES", "build", "run_case", "localize_queries", "set_blob", "ignored_blob_warning"]


# ----------------------------------------------------------------- helpers shared with the tests
def _sql(path: Path, statement: str, args: tuple = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(statement, args)
    finally:
        conn.close()


def _features_fp() -> str:
    return fingerprints(make_config("geometric").map)["features"]


def _blob(path: Path, kf_id: int, key: str) -> bytes:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT data FROM blobs WHERE kf_id = ? AND backend = ? AND key = ?",
                            (kf_id, BACKEND, key)).fetchone()[0]
    finally:
        conn.close()


def set_blob(path: Path, kf_id: int | None, key: str, data: bytes, fix_crc: bool = True) -> None:
    """Overwrite a geometric blob's bytes by SQL; with ``fix_crc`` also its checksum (a writer
    that meant it, so the content checks are what must catch it)."""
    table, where, args = (("map_blobs", "", ()) if kf_id is None else ("blobs", " AND kf_id = ?", (kf_id,)))
    crc = ", crc32 = ?" if fix_crc else ""
    _sql(path, f"UPDATE {table} SET data = ?{crc} WHERE backend = ? AND key = ?{where}",
         (data, *((zlib.crc32(data),) if fix_crc else ()), BACKEND, key, *args))


def _set_pose(path: Path, kf_id: int, T: np.ndarray) -> None:
    """Overwrite a pose and re-sign the row (as the store would have), so the pose check must catch it."""
    from reloc_vggt_ros.keyframes.store import _META_COLUMNS, _meta_crc

    _sql(path, "UPDATE keyframes SET T_world_cam = ? WHERE id = ?", (np.asarray(T, "<f8").tobytes(), kf_id))
    conn = sqlite3.connect(path)
    try:
        meta = conn.execute(f"SELECT {_META_COLUMNS} FROM keyframes k WHERE k.id = ?", (kf_id,)).fetchone()
        with conn:
            conn.execute("UPDATE keyframe_crc SET meta_crc32 = ? WHERE kf_id = ?", (_meta_crc(*meta), kf_id))
    finally:
        conn.close()


def _pose(path: Path, kf_id: int) -> np.ndarray:
    conn = sqlite3.connect(path)
    try:
        data = conn.execute("SELECT T_world_cam FROM keyframes WHERE id = ?", (kf_id,)).fetchone()[0]
    finally:
        conn.close()
    return np.frombuffer(data, "<f8").reshape(4, 4).copy()


def _edit_file(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _rezip(blob: bytes, edit: Callable[[str, bytes], bytes]) -> bytes:
    """The archive with each member's bytes passed through ``edit`` (valid zip CRCs: a lie that
    only the content checks can see)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info)))
    return out.getvalue()


# ----------------------------------------------------------------- the cases
def truncated(path: Path) -> None:
    """A copy cut short (an interrupted transfer to the robot): half the file."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def random_bytes_middle(path: Path) -> None:
    """512 random bytes (seeded) over the middle of the file, across a page boundary."""
    mid = path.stat().st_size // 2
    _edit_file(path, mid - 256, np.random.default_rng(15).bytes(512))


def damaged_table_page(path: Path) -> None:
    """Random bytes over the root page of the keyframes table (SQLite's own structure, not a payload)."""
    conn = sqlite3.connect(path)
    try:
        root, page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'keyframes'").fetchone()[0], \
            conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    _edit_file(path, (root - 1) * page, np.random.default_rng(15).bytes(page))


def flipped_bit_in_pose(path: Path) -> None:
    """Silent bit rot: one bit of the victim's camera x (mantissa bit 40: ~1e-4 of its value) in the file."""
    pose = _pose(path, VICTIM).astype("<f8").tobytes()
    data = path.read_bytes()
    at = data.find(pose)
    assert at > 0 and data.count(pose) == 1, "pose bytes not found once in the file"
    byte = at + 3 * 8 + 5                         # T[0,3] (row-major), byte 5 = mantissa bits 40..47
    _edit_file(path, byte, bytes([data[byte] ^ 0x01]))


def flipped_bit_in_blob(path: Path) -> None:
    """Silent bit rot inside the victim's features blob (a descriptor byte), in the file."""
    blob = _blob(path, VICTIM, "features")
    data = path.read_bytes()
    probe = blob[len(blob) // 2:len(blob) // 2 + 64]
    at = data.find(probe)
    assert at > 0 and data.count(probe) == 1, "blob bytes not found once in the file"
    _edit_file(path, at + 10, bytes([data[at + 10] ^ 0x10]))


def blob_shape_lies(path: Path) -> None:
    """The victim's features blob says its descriptors are twice as many as the bytes it holds."""
    blob = _blob(path, VICTIM, "features")

    def lie(name: str, member: bytes) -> bytes:
        if name != "descriptors.npy":
            return member
        f = io.BytesIO(member)
        np.lib.format.read_magic(f)
        (n, dim), fortran, dtype = np.lib.format.read_array_header_1_0(f)
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                   "fortran_order": fortran, "shape": (2 * n, dim)})
        return out.getvalue() + member[f.tell():]

    set_blob(path, VICTIM, "features", _rezip(blob, lie))


def wrong_descriptor_dim(path: Path) -> None:
    """The victim's features blob holds 64-d descriptors (another extractor's) under our fingerprint."""
    arrays = unpack_arrays(_blob(path, VICTIM, "features"))
    arrays["descriptors"] = arrays["descriptors"][:, :64]
    set_blob(path, VICTIM, "features", pack_arrays(arrays))


def empty_vocabulary(path: Path) -> None:
    """The map's vocabulary blob is zero bytes."""
    set_blob(path, None, "vocabulary", b"")


def nan_pose(path: Path) -> None:
    """The victim's pose has a NaN translation (row checksum re-signed)."""
    T = _pose(path, VICTIM)
    T[1, 3] = np.nan
    _set_pose(path, VICTIM, T)


def non_rigid_pose(path: Path) -> None:
    """The victim's rotation is scaled by 1.01 (not orthonormal; row checksum re-signed)."""
    T = _pose(path, VICTIM)
    T[:3, :3] *= 1.01
    _set_pose(path, VICTIM, T)


def future_schema(path: Path) -> None:
    """A file written by a newer reloc_vggt_ros."""
    _sql(path, "UPDATE metadata SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))


def schema_1_file(path: Path) -> None:
    """The layout of a database written before checksums (schema 1): read as it is."""
    for stmt in ("DROP TABLE keyframe_crc", "ALTER TABLE blobs DROP COLUMN crc32",
                 "ALTER TABLE map_blobs DROP COLUMN crc32", "UPDATE metadata SET value = '1' WHERE key = 'schema_version'"):
        _sql(path, stmt)


def empty_database(path: Path) -> None:
    """Every keyframe deleted: a valid database with nothing to localize against."""
    _sql(path, "DELETE FROM keyframes")


CASES: dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    truncated, random_bytes_middle, damaged_table_page, flipped_bit_in_pose, flipped_bit_in_blob, blob_shape_lies,
    wrong_descriptor_dim, empty_vocabulary, nan_pose, non_rigid_pose, future_schema, schema_1_file,
    empty_database)}


# ----------------------------------------------------------------- running a case
@dataclass
class Outcome:
    case: str
    open_error: str | None = None          # the one configure error
    warnings: list[str] = field(default_factory=list)
    keyframes: int = 0                     # in the localizer's map
    published: int = 0                     # queries published within MAX_T_ERR_M / MAX_R_ERR_DEG
    wrong: int = 0                         # queries published further off the ground truth (must be 0)
    rejected: list[str] = field(default_factory=list)
    max_t_err_m: float = 0.0               # largest camera-centre error of a published pose
    check_problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: the error, or the warnings and the query results (the what-to-do hint left out)."""
        if self.open_error:
            return f"error at open: {_brief(self.open_error)}"
        head = "; ".join(_brief(w) for w in self.warnings) if self.warnings else "no warning"
        return (f"{head} -> {self.keyframes} keyframes in the map; queries: {self.published} published OK "
                f"(max error {100 * self.max_t_err_m:.1f} cm), {self.wrong} wrong, {len(self.rejected)} rejected")


def _brief(text: str) -> str:
    return re.sub(r";? \(?run `reloc-vggt db check .*?`reloc-vggt db build`\)?", "", text)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def build(out: Path, scene: Path = SCENE, max_side: int = 640) -> Path:
    """The intact database every case starts from (geometric blobs with the default settings)."""
    return build_keyframe_db(scene, out, split="db", max_side=max_side, backend="geometric")


def localize_queries(session: Session, scene: Path = SCENE, max_side: int = 640
                     ) -> tuple[int, int, list[str], float]:
    """(published within tolerance, published off the ground truth, rejection reasons, largest
    camera-centre error of a published pose in m) over the scene's queries."""
    ok, wrong, rejected, worst = 0, 0, [], 0.0
    for rec in read_posed_folder(scene, "query"):
        img = load_image(rec.path)
        h, w = img.shape[:2]
        s = min(1.0, max_side / max(w, h))
        nw, nh = round(w * s), round(h * s)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        out = session.localize(img, rec.intrinsics.scaled(nw / w, nh / h), stamp_ns=1)
        if isinstance(out, Published):
            t_err, r_err_deg = pose_error(out.T_map_cam, rec.T_world_cam)
            good = t_err < MAX_T_ERR_M and r_err_deg < MAX_R_ERR_DEG
            ok, wrong, worst = ok + int(good), wrong + int(not good), max(worst, float(t_err))
        else:
            rejected.append(out.reason)
    return ok, wrong, rejected, worst


def ignored_blob_warning(kf_id: int | None, key: str) -> str:
    """The start of the warning the geometric map logs for a blob it ignores and recomputes."""
    return f"{'map' if kf_id is None else f'keyframe {kf_id}'}: damaged {key} blob ignored and recomputed"


def run_case(name: str, intact: Path, workdir: Path, scene: Path = SCENE, max_side: int = 640) -> Outcome:
    """Damage a copy of ``intact`` as case ``name`` and run it through the node's session."""
    path = workdir / f"{name}.db"
    shutil.copy(intact, path)
    CASES[name](path)
    out = Outcome(name)
    handler = _Warnings()
    log = logging.getLogger("reloc_vggt_ros")
    log.addHandler(handler)
    level, log.level = log.level, logging.WARNING
    session = Session(SessionConfig(), lambda store: make_localizer("geometric", store), log=log)
    try:
        session.open(path, readonly=True)
        out.keyframes = len(session._localizer._map.entries) if session._localizer else 0  # noqa: SLF001
        if session._localizer is not None:  # noqa: SLF001
            out.published, out.wrong, out.rejected, out.max_t_err_m = localize_queries(session, scene, max_side)
    except RelocError as err:
        out.open_error = str(err)
    finally:
        session.close()
        out.warnings = list(handler.messages)
        out.check_problems = check_database(str(path))["problems"]   # its warnings are not the node's
        log.removeHandler(handler)
        log.setLevel(level)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=SCENE, help="posed-image folder (db and query splits)")
    parser.add_argument("--max-side", type=int, default=640, help="image size of the database and queries")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        intact = build(Path(tmp) / "intact.db", args.scene, args.max_side)
        for name in args.case or CASES:
            o = run_case(name, intact, Path(tmp), args.scene, args.max_side)
            rows.append(o)
            print(f"{name:20s} -> {o.summary}\n{'':20s}    db check: {len(o.check_problems)} problem(s)"
                  + (f", first: {_brief(o.check_problems[0])}" if o.check_problems else ""), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"scene": str(args.scene), "max_side": args.max_side,
                                         "rows": [asdict(o) | {"summary": o.summary} for o in rows]}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(o.wrong == 0 for o in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
