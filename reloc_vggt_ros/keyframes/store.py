"""The keyframe database: one SQLite file with images, poses, intrinsics and backend blobs.

Why SQLite: one file to copy to a robot, transactions, and crash safety for free. The file is
opened in WAL mode with ``synchronous=FULL``: every committed transaction is fsynced to the WAL
before ``commit`` returns, so a committed keyframe survives a killed process *and* a power cut
(``NORMAL`` would only survive the former). Keyframes are added rarely, so the fsync per commit
costs nothing that matters. One connection guarded by a re-entrant lock makes a store safe to
share between the node's inference thread (reads) and its keyframe thread (writes); other
processes may open the same file (WAL: many readers, one writer, ``busy_timeout`` waits).

Damage (bit rot, a truncated copy, hostile edits) is detected, not trusted: every blob carries a
CRC32 of its bytes and every keyframe a CRC32 of its small columns (pose, intrinsics, image
SHA-256), verified on read; a keyframe whose row is damaged is left out of :meth:`poses` /
:meth:`intrinsics` / :meth:`iter_keyframes` with a warning, a damaged blob or page is a
KeyframeDBError naming the file and saying what to do (``docs/database.md``, "Damaged databases").

Table layout and blob formats are documented in ``docs/database.md``; bump
:data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import KeyframeDBError
from ..geometry import Distortion, Intrinsics, is_valid_T, valid_T_mask
from .files import remove_db_files, replace_db_file, temp_beside
from .types import Keyframe

__all__ = ["KeyframeStore", "SCHEMA_VERSION", "image_format", "DAMAGED_HINT", "REPAIR_HINT"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3          # 2: CRC32 per blob and per keyframe row; 3: lens distortion per keyframe
                            # (1 and 2 are read, and migrated when opened writable)
_OLDEST_READABLE = 1
REPAIR_HINT = "restore a backup copy or rebuild it with `reloc-vggt db build`"
DAMAGED_HINT = "run `reloc-vggt db check {path}` to list the damage, then " + REPAIR_HINT
_RESERVED_METADATA = ("schema_version", "revision")
_POSE_TOL = 1e-6
_BUSY_TIMEOUT_MS = 10_000

# what schema 2 adds to a schema 1 file (the migration); new files get the same layout
_V2_ADDITIONS = (
    "ALTER TABLE blobs ADD COLUMN crc32 INTEGER",
    "ALTER TABLE map_blobs ADD COLUMN crc32 INTEGER",
    # a table of its own: a column added to keyframes would sit after the image (slow poses())
    "CREATE TABLE keyframe_crc (kf_id INTEGER PRIMARY KEY REFERENCES keyframes(id) ON DELETE CASCADE, "
    "meta_crc32 INTEGER NOT NULL, depth_crc32 INTEGER)",
)
# what schema 3 adds: the lens model of keyframes whose images are not undistorted (no row = pinhole);
# a table of its own for the same reason as keyframe_crc, covered by the row's meta CRC32
_V3_ADDITIONS = (
    "CREATE TABLE IF NOT EXISTS keyframe_distortion (kf_id INTEGER PRIMARY KEY REFERENCES keyframes(id) "
    "ON DELETE CASCADE, model TEXT NOT NULL, coefficients BLOB NOT NULL)",
)
_SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE keyframes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    stamp_ns INTEGER NOT NULL,
    image_format TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    fx REAL NOT NULL, fy REAL NOT NULL, cx REAL NOT NULL, cy REAL NOT NULL,
    T_world_cam BLOB NOT NULL,
    depth_height INTEGER, depth_width INTEGER,
    depth BLOB,
    image BLOB NOT NULL  -- large columns last: reading the small ones never walks their overflow pages
);
CREATE INDEX keyframes_name ON keyframes(name);
CREATE TABLE blobs (
    kf_id INTEGER NOT NULL REFERENCES keyframes(id) ON DELETE CASCADE,
    backend TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, data BLOB NOT NULL,
    crc32 INTEGER,
    PRIMARY KEY (kf_id, backend, key)
);
CREATE TABLE map_blobs (
    backend TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, data BLOB NOT NULL,
    crc32 INTEGER,
    PRIMARY KEY (backend, key)
);
""" + "".join(f"{stmt};" for stmt in _V2_ADDITIONS + _V3_ADDITIONS if not stmt.startswith("ALTER"))
# the small columns of a keyframe (all before depth and image in the row), in _meta_crc order
_META_COLUMNS = ("k.name, k.stamp_ns, k.image_format, k.image_sha256, k.width, k.height, k.fx, k.fy, k.cx, "
                 "k.cy, k.T_world_cam, k.depth_height, k.depth_width")
_META_SIZE = 13


def _crc(data: bytes | None) -> int | None:
    return None if data is None else zlib.crc32(data)


def _meta_crc(*meta: object, distortion: tuple[str, bytes] | None = None) -> int:
    """CRC32 of a keyframe's small columns (typed as stored, so a value read back gives the same)
    and of its ``(model, coefficients)`` distortion row if it has one (without, the CRC is schema 2's)."""
    name, stamp, fmt, sha, w, h, fx, fy, cx, cy, pose, dh, dw = meta
    head = json.dumps([str(name), int(stamp), str(fmt), str(sha), int(w), int(h), float(fx), float(fy),
                       float(cx), float(cy), None if dh is None else int(dh), None if dw is None else int(dw)])
    crc = zlib.crc32(bytes(pose), zlib.crc32(head.encode()))  # type: ignore[arg-type]
    if distortion is not None:
        crc = zlib.crc32(bytes(distortion[1]), zlib.crc32(str(distortion[0]).encode(), crc))
    return crc


def _distortion_row(d: Distortion | None) -> tuple[str, bytes] | None:
    return None if d is None else (d.model, np.asarray(d.coefficients, "<f8").tobytes())


def _distortion_of(model: object, coefficients: object) -> Distortion | None:
    """The Distortion of a keyframe_distortion row (None for no row); ValueError if it is invalid."""
    if model is None:
        return None
    if not isinstance(coefficients, bytes) or len(coefficients) % 8:
        raise ValueError(f"distortion coefficients are not float64 bytes ({type(coefficients).__name__})")
    return Distortion(str(model), tuple(float(c) for c in np.frombuffer(coefficients, "<f8")))


def _without_hint(err: Exception) -> str:
    """An error's message without the trailing what-to-do (``db check`` prints it once)."""
    return str(err).split("; run `reloc-vggt db check")[0]


def _is_corruption(err: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB (a damaged file), not a lock or a misuse."""
    return (getattr(err, "sqlite_errorcode", 0) & 0xFF) in (11, 26) or type(err) is sqlite3.DatabaseError


def _sqlite_header_problem(path: Path) -> str | None:
    """What the 100-byte SQLite header says is wrong with the file size (a truncated copy), or None.

    The header's page count is trusted only when SQLite marks it valid (bytes 92-95 equal the change
    counter, bytes 24-27) and no WAL file may hold pages not yet copied into the main file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(100)
        size = path.stat().st_size
    except OSError as err:
        return f"cannot read it: {err}"
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None  # not SQLite at all: the connection reports it
    page = struct.unpack(">H", head[16:18])[0]
    page = 65536 if page == 1 else page
    counter, pages, valid_for = (struct.unpack(">I", head[o:o + 4])[0] for o in (24, 28, 92))
    wal = Path(f"{path}-wal")
    if counter == valid_for and pages and size < pages * page and not (wal.is_file() and wal.stat().st_size):
        return (f"file is truncated: its header says {pages} pages of {page} bytes ({pages * page} bytes), "
                f"the file has {size} bytes")
    return None


def image_format(data: bytes) -> str:
    """'jpeg' or 'png' from the magic bytes; KeyframeDBError for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    raise KeyframeDBError(f"image bytes are neither JPEG nor PNG (starts {data[:8]!r})")


def _package_version() -> str:
    try:
        return importlib.metadata.version("reloc_vggt_ros")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pose_to_blob(T: np.ndarray) -> bytes:
    return np.asarray(T, dtype="<f8").reshape(4, 4).tobytes()


def _pose_from_blob(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f8").reshape(4, 4).astype(np.float64)


class KeyframeStore:
    """A keyframe database file. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        """Use :meth:`create` or :meth:`open`; this only wraps an already checked connection."""
        self.path = path
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.schema_version = SCHEMA_VERSION
        self._warned: set[int] = set()   # damaged keyframes already reported
        self._meta_checked: dict[tuple, str | None] = {}   # small-column row -> its problem (None: fine)
        self._meta_memo: tuple[tuple[int, int], list[tuple]] | None = None   # (file version, usable rows)

    # ----------------------------------------------------------------- open / create / close
    @classmethod
    def create(cls, path: Path | str, units: str = "m", creator: str = "") -> "KeyframeStore":
        """A new, empty database at ``path``; KeyframeDBError if the file exists."""
        path = Path(path)
        if path.exists():
            raise KeyframeDBError(f"cannot create {path}: file exists")
        if not path.parent.is_dir():
            raise KeyframeDBError(f"cannot create {path}: directory {path.parent} does not exist")
        if not units:
            raise KeyframeDBError("units must be a non-empty string such as 'm'")
        conn = cls._connect(path, readonly=False)
        store = cls(path, conn, readonly=False)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta = {"schema_version": str(SCHEMA_VERSION), "revision": "0", "units": units,
                "created_utc": now, "creator": creator, "pose_convention": "T_world_cam",
                "camera_frame": "opencv_optical", "software": f"reloc_vggt_ros {_package_version()}"}
        with store._tx() as cur:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            cur.executemany("INSERT INTO metadata(key, value) VALUES (?, ?)", meta.items())
        logger.info("created keyframe database %s (schema %d, units %s)", path, SCHEMA_VERSION, units)
        return store

    @classmethod
    def open(cls, path: Path | str, readonly: bool = False) -> "KeyframeStore":
        """Open an existing database; KeyframeDBError if missing, truncated, corrupt or of another schema.

        A schema 1 file (no checksums) is read as it is when ``readonly``, and migrated to the
        current schema (checksums computed from the stored bytes) when opened writable.
        """
        path = Path(path)
        if not path.is_file():
            raise KeyframeDBError(f"keyframe database not found: {path}")
        problem = _sqlite_header_problem(path)
        if problem:
            raise KeyframeDBError(f"{path} is damaged: {problem}; {DAMAGED_HINT.format(path=path)}")
        conn = cls._connect(path, readonly)
        try:
            rows = conn.execute("SELECT key, value FROM metadata WHERE key = 'schema_version'").fetchall()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise KeyframeDBError(f"{path} is not a keyframe database (not SQLite, corrupt, or no "
                                  f"metadata table): {err}; if it was one, {DAMAGED_HINT.format(path=path)}"
                                  ) from err
        found = rows[0][1] if rows else None
        version = int(found) if isinstance(found, str) and found.isdigit() else None
        if version is None or not _OLDEST_READABLE <= version <= SCHEMA_VERSION:
            conn.close()
            newer = version is not None and version > SCHEMA_VERSION
            why = ("it was written by a newer reloc_vggt_ros: upgrade this one, or " if newer else "")
            raise KeyframeDBError(f"{path}: keyframe database schema version {found}, this reloc_vggt_ros "
                                  f"reads version {SCHEMA_VERSION} (and {_OLDEST_READABLE}..{SCHEMA_VERSION}); "
                                  f"{why}rebuild it with `reloc-vggt db build`")
        store = cls(path, conn, readonly)
        store.schema_version = version
        if version < SCHEMA_VERSION:
            if readonly and version >= 2:
                pass  # read as it is: its keyframes are all pinhole
            elif readonly:
                logger.warning("%s: schema version %d has no checksums: damage cannot be detected until it is "
                               "opened writable once (`reloc-vggt db check --migrate %s`)", path, version, path)
            else:
                store._migrate()
        return store

    def _migrate(self) -> None:
        """Schema 1 -> 2: add the checksum column/table and fill them from the stored bytes;
        2 -> 3: add the (empty: every old keyframe is pinhole) distortion table."""
        assert self._conn is not None
        self._conn.create_function("crc32_of", 1, _crc, deterministic=True)
        self._conn.create_function("meta_crc32_of", _META_SIZE, _meta_crc, deterministic=True)
        with self._tx() as cur:
            if self.schema_version < 2:
                for stmt in _V2_ADDITIONS:
                    cur.execute(stmt)
                cur.execute("UPDATE blobs SET crc32 = crc32_of(data)")
                cur.execute("UPDATE map_blobs SET crc32 = crc32_of(data)")
                cur.execute(f"INSERT INTO keyframe_crc(kf_id, meta_crc32, depth_crc32) SELECT k.id, "
                            f"meta_crc32_of({_META_COLUMNS}), crc32_of(k.depth) FROM keyframes k")
            for stmt in _V3_ADDITIONS:
                cur.execute(stmt)
            cur.execute("UPDATE metadata SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        logger.warning("%s: migrated from schema version %d to %d (%s)", self.path, self.schema_version,
                       SCHEMA_VERSION, f"checksums of {len(self)} keyframes computed from the stored bytes"
                       if self.schema_version < 2 else "keyframes without distortion rows: pinhole")
        self.schema_version = SCHEMA_VERSION

    @property
    def _checksums(self) -> bool:
        return self.schema_version >= 2

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                       isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as err:
            raise KeyframeDBError(f"cannot open {path} as a keyframe database (not SQLite or corrupt?): "
                                  f"{err}") from err
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "KeyframeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("ro" if self.readonly else "rw")
        return f"KeyframeStore({str(self.path)!r}, {state})"

    # ----------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        """A cursor under the lock; sqlite errors become KeyframeDBError naming the file."""
        with self._lock:
            if self._conn is None:
                raise KeyframeDBError(f"{self.path}: store is closed")
            try:
                yield self._conn.cursor()
            except sqlite3.Error as err:
                if _is_corruption(err):
                    raise KeyframeDBError(f"{self.path} is damaged: {err}; "
                                          f"{DAMAGED_HINT.format(path=self.path)}") from err
                raise KeyframeDBError(f"{self.path}: {err}") from err

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction that also bumps ``revision``; rolled back on any error."""
        with self._read() as cur:
            if self.readonly:
                raise KeyframeDBError(f"{self.path}: opened read-only")
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("UPDATE metadata SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
                cur.execute("COMMIT")
            except BaseException:
                if self._conn is not None and self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    # ----------------------------------------------------------------- keyframes
    def add_keyframe(self, kf: Keyframe) -> int:
        """Insert one keyframe (its ``kf_id`` if set, else a new id) and return the id."""
        return self.add_keyframes([kf])[0]

    def add_keyframes(self, kfs: Iterable[Keyframe]) -> list[int]:
        """Insert keyframes in one transaction: all or none. Validates poses and intrinsics."""
        rows = [self._row(kf) for kf in kfs]
        ids: list[int] = []
        with self._tx() as cur:
            for kf_id, row in rows:
                try:
                    cur.execute("INSERT INTO keyframes(id, name, stamp_ns, image, image_format, image_sha256, "
                                "width, height, fx, fy, cx, cy, T_world_cam, depth, depth_height, depth_width) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (kf_id, *row[:-1]))
                except sqlite3.IntegrityError as err:
                    raise KeyframeDBError(f"{self.path}: cannot insert keyframe {row[0]!r} "
                                          f"(id {kf_id}): {err}") from err
                ids.append(int(cur.lastrowid or kf_id or 0))
                name, stamp, _image, fmt, sha, w, h, fx, fy, cx, cy, pose, depth, dh, dw, dist = row
                if dist is not None:
                    if self.schema_version < 3:
                        raise KeyframeDBError(f"{self.path}: schema version {self.schema_version} cannot store "
                                              f"keyframe {name!r}'s lens distortion; open it writable once to "
                                              "migrate it")
                    cur.execute("INSERT INTO keyframe_distortion(kf_id, model, coefficients) VALUES (?, ?, ?)",
                                (ids[-1], *dist))
                if self._checksums:
                    cur.execute("INSERT INTO keyframe_crc(kf_id, meta_crc32, depth_crc32) VALUES (?, ?, ?)",
                                (ids[-1], _meta_crc(name, stamp, fmt, sha, w, h, fx, fy, cx, cy, pose, dh, dw,
                                                    distortion=dist), _crc(depth)))
        return ids

    @staticmethod
    def _row(kf: Keyframe) -> tuple[int | None, tuple]:
        """Validated column values of a keyframe; KeyframeDBError says what is wrong."""
        where = f"keyframe {kf.name!r}"
        if not isinstance(kf.name, str) or not kf.name:
            raise KeyframeDBError(f"keyframe name must be a non-empty string, got {kf.name!r}")
        if not isinstance(kf.image_jpeg, (bytes, bytearray, memoryview)) or len(kf.image_jpeg) == 0:
            raise KeyframeDBError(f"{where}: image must be non-empty encoded bytes")
        image = bytes(kf.image_jpeg)
        fmt = image_format(image)
        intr = kf.intrinsics
        if not isinstance(intr, Intrinsics):
            raise KeyframeDBError(f"{where}: intrinsics must be an Intrinsics, got {type(intr).__name__}")
        T = np.asarray(kf.T_world_cam, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise KeyframeDBError(f"{where}: T_world_cam must be a finite 4x4 matrix, got shape {T.shape}")
        if not is_valid_T(T, tol=_POSE_TOL):
            raise KeyframeDBError(f"{where}: T_world_cam is not a rigid transform (rotation not "
                                  f"orthonormal with det +1 within {_POSE_TOL}, or last row not 0 0 0 1)")
        if int(kf.stamp_ns) < 0:
            raise KeyframeDBError(f"{where}: stamp_ns must be >= 0, got {kf.stamp_ns}")
        depth = dh = dw = None
        if kf.depth_m is not None:
            d = np.asarray(kf.depth_m, dtype=np.float32)
            if d.ndim != 2 or d.size == 0:
                raise KeyframeDBError(f"{where}: depth must be a non-empty [H,W] array, got shape {d.shape}")
            if not np.all(np.isfinite(d)) or np.any(d < 0):
                raise KeyframeDBError(f"{where}: depth must be finite and >= 0 metres (0 = unknown)")
            depth, (dh, dw) = d.astype("<f4").tobytes(), d.shape
        kf_id = None if kf.kf_id is None else int(kf.kf_id)
        return kf_id, (kf.name, int(kf.stamp_ns), image, fmt, hashlib.sha256(image).hexdigest(),
                       intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy,
                       _pose_to_blob(T), depth, dh, dw, _distortion_row(intr.distortion))

    def _meta_sql(self, where: str = "") -> str:
        """Rows ``(id, *_META_COLUMNS, meta_crc32, depth_crc32, distortion model, coefficients)``."""
        crc = "c.meta_crc32, c.depth_crc32" if self._checksums else "NULL, NULL"
        join = " LEFT JOIN keyframe_crc c ON c.kf_id = k.id" if self._checksums else ""
        dist = "d.model, d.coefficients" if self.schema_version >= 3 else "NULL, NULL"
        join += " LEFT JOIN keyframe_distortion d ON d.kf_id = k.id" if self.schema_version >= 3 else ""
        return f"SELECT k.id, {_META_COLUMNS}, {crc}, {dist} FROM keyframes k{join} {where} ORDER BY k.id"

    @staticmethod
    def _intrinsics(row: tuple) -> Intrinsics:
        """The Intrinsics of a :meth:`_meta_sql` row (ValueError if a value is invalid)."""
        return Intrinsics(float(row[7]), float(row[8]), float(row[9]), float(row[10]), int(row[5]), int(row[6]),
                          _distortion_of(row[-2], row[-1]))

    def _meta_problem(self, row: tuple) -> str | None:
        """What is wrong with a keyframe's small columns (checksum, pose, intrinsics), or None;
        remembered per row value (poses() of 1000 keyframes must not re-validate 1000 poses)."""
        if row not in self._meta_checked:
            self._judge_rows([row])
        return self._meta_checked[row]

    def _judge_rows(self, rows: list[tuple]) -> None:
        """Judge the rows not judged yet, their poses in one vectorised pass (a 10k-keyframe map
        opens in ~0.1 s instead of ~1.3 s of per-row checks)."""
        new = [r for r in rows if r not in self._meta_checked]
        sized = [isinstance(r[11], bytes) and len(r[11]) == 128 for r in new]
        poses = b"".join(r[11] for r, ok in zip(new, sized) if ok)
        rigid = iter(valid_T_mask(np.frombuffer(poses, "<f8").reshape(-1, 4, 4), tol=_POSE_TOL).tolist())
        for r, ok in zip(new, sized):
            self._meta_checked[r] = self._judge_meta(r, next(rigid) if ok else False)

    def _judge_meta(self, row: tuple, rigid: bool) -> str | None:
        meta, crc = row[1:1 + _META_SIZE], row[1 + _META_SIZE]
        dist = None if row[-2] is None else (row[-2], row[-1])
        try:
            if self._checksums and crc != _meta_crc(*meta, distortion=dist):
                return "pose/intrinsics/name columns fail their CRC32 check (bit rot or an edit)"
            pose = meta[10]
            if not isinstance(pose, bytes) or len(pose) != 128:
                return f"T_world_cam is {len(pose) if isinstance(pose, bytes) else type(pose).__name__} bytes, not 128"
            if not rigid:
                return "T_world_cam is not a finite rigid transform"
            self._intrinsics(row)
        except (TypeError, ValueError) as err:
            return f"invalid column value: {err}"
        return None

    def _damage(self, kf_id: int, name: object, problem: str) -> str:
        return f"keyframe {kf_id} ({name}) in {self.path} is damaged: {problem}"

    def _valid_meta(self) -> list[tuple]:
        """Small-column rows of the usable keyframes; each damaged one is a warning (once) and left out.
        Read again only when the file changed (another connection's commit moves ``data_version``,
        this one's writes ``total_changes``): opening a map asks for poses and intrinsics in turn."""
        with self._read() as cur:
            version = (int(cur.execute("PRAGMA data_version").fetchone()[0]), cur.connection.total_changes)
            if self._meta_memo is not None and self._meta_memo[0] == version:
                return self._meta_memo[1]
            rows = cur.execute(self._meta_sql()).fetchall()
        self._judge_rows(rows)
        good = []
        for row in rows:
            problem = self._meta_problem(row)
            if problem is None:
                good.append(row)
            elif row[0] not in self._warned:
                self._warned.add(row[0])
                logger.warning("%s; it is skipped (%s)", self._damage(row[0], row[1], problem),
                               DAMAGED_HINT.format(path=self.path))
        self._meta_memo = (version, good)
        return good

    def damaged_keyframes(self) -> dict[int, str]:
        """``{kf_id: what is wrong}`` for keyframes whose small columns are damaged (no image reads)."""
        with self._read() as cur:
            rows = cur.execute(self._meta_sql()).fetchall()
        return {r[0]: p for r in rows if (p := self._meta_problem(r)) is not None}

    def _find_keyframe(self, kf_id: int) -> Keyframe | None:
        """The keyframe with every stored byte verified; KeyframeDBError if it is damaged."""
        with self._read() as cur:
            row = cur.execute(self._meta_sql("WHERE k.id = ?"), (int(kf_id),)).fetchone()
            if row is None:
                return None
            depth, image = cur.execute("SELECT depth, image FROM keyframes WHERE id = ?", (int(kf_id),)).fetchone()
        name, stamp, _fmt, sha, _w, _h, _fx, _fy, _cx, _cy, pose, dh, dw = row[1:1 + _META_SIZE]
        problem = self._meta_problem(row)
        if problem is None and (not isinstance(image, bytes) or hashlib.sha256(image).hexdigest() != sha):
            problem = "image bytes do not match their SHA-256 (bit rot or an edit)"
        depth_m = None
        if problem is None and depth is not None:
            if self._checksums and row[2 + _META_SIZE] != _crc(depth):
                problem = "depth bytes fail their CRC32 check"
            elif not isinstance(dh, int) or not isinstance(dw, int) or dh * dw * 4 != len(depth):
                problem = f"depth is {len(depth)} bytes, not {dh}x{dw} float32"
            else:
                depth_m = np.frombuffer(depth, dtype="<f4").reshape(dh, dw).copy()
        if problem is not None:
            raise KeyframeDBError(f"{self._damage(kf_id, name, problem)}; {DAMAGED_HINT.format(path=self.path)}")
        return Keyframe(name=name, image_jpeg=image, intrinsics=self._intrinsics(row),
                        T_world_cam=_pose_from_blob(pose), stamp_ns=stamp, depth_m=depth_m, kf_id=kf_id)

    def get_keyframe(self, kf_id: int) -> Keyframe:
        """The keyframe; KeyframeDBError if there is none or its row is damaged (checksums, pose)."""
        kf = self._find_keyframe(kf_id)
        if kf is None:
            raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id}")
        return kf

    def keyframe_ids(self) -> list[int]:
        with self._read() as cur:
            return [r[0] for r in cur.execute("SELECT id FROM keyframes ORDER BY id")]

    def iter_keyframes(self) -> Iterator[Keyframe]:
        """Usable keyframes in id order, fetched one at a time (the lock is not held between them);
        a damaged one is a warning and skipped."""
        for kf_id in self.keyframe_ids():
            try:
                kf = self._find_keyframe(kf_id)
            except KeyframeDBError as err:
                logger.warning("%s; it is skipped", err)
                continue
            if kf is not None:  # else removed meanwhile by another thread
                yield kf

    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N] int64, T_world_cam [N,4,4] float64)`` of the usable keyframes in id order,
        without touching images (a keyframe with a damaged pose row is a warning and left out)."""
        rows = self._valid_meta()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        Ts = np.frombuffer(b"".join(r[11] for r in rows), dtype="<f8").reshape(-1, 4, 4).astype(np.float64)
        return ids, Ts

    def intrinsics(self) -> dict[int, Intrinsics]:
        """``{id: Intrinsics}`` of the usable keyframes (as :meth:`poses`), without touching images."""
        return {r[0]: self._intrinsics(r) for r in self._valid_meta()}

    def remove_keyframe(self, kf_id: int) -> None:
        """Delete a keyframe and (cascade) its blobs; KeyframeDBError if there is no such id."""
        with self._tx() as cur:
            if cur.execute("DELETE FROM keyframes WHERE id = ?", (int(kf_id),)).rowcount == 0:
                raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id}")

    def __len__(self) -> int:
        with self._read() as cur:
            return int(cur.execute("SELECT COUNT(*) FROM keyframes").fetchone()[0])

    # ----------------------------------------------------------------- backend blobs
    @staticmethod
    def _check_blob_args(backend: str, key: str, fingerprint: str) -> None:
        for label, value in (("backend", backend), ("key", key), ("fingerprint", fingerprint)):
            if not isinstance(value, str) or not value:
                raise KeyframeDBError(f"blob {label} must be a non-empty string, got {value!r}")

    def _crc_sql(self) -> str:
        return "crc32" if self._checksums else "NULL"

    def _verified(self, data: bytes, crc: int | None, what: str) -> bytes:
        """The blob's bytes if they match their CRC32; KeyframeDBError (damaged file) otherwise."""
        data = bytes(data)
        if self._checksums and crc != zlib.crc32(data):
            found = "no checksum" if crc is None else f"stored CRC32 {crc:08x}, bytes give {zlib.crc32(data):08x}"
            raise KeyframeDBError(f"{self.path} is damaged: {what} ({len(data)} bytes) fails its checksum "
                                  f"({found}); {DAMAGED_HINT.format(path=self.path)}")
        return data

    def put_blob(self, kf_id: int, backend: str, key: str, data: bytes, fingerprint: str) -> None:
        """Store (replace) one keyframe's blob; a new fingerprint supersedes the old blob."""
        self._check_blob_args(backend, key, fingerprint)
        data = bytes(data)
        with self._tx() as cur:
            try:
                if self._checksums:
                    cur.execute("INSERT OR REPLACE INTO blobs(kf_id, backend, key, fingerprint, data, crc32) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (int(kf_id), backend, key, fingerprint, data, _crc(data)))
                else:
                    cur.execute("INSERT OR REPLACE INTO blobs(kf_id, backend, key, fingerprint, data) "
                                "VALUES (?, ?, ?, ?, ?)", (int(kf_id), backend, key, fingerprint, data))
            except sqlite3.IntegrityError as err:
                raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id} for blob "
                                      f"{backend}/{key}") from err

    def get_blob(self, kf_id: int, backend: str, key: str, fingerprint: str) -> bytes | None:
        """The blob, or None if absent or written with another fingerprint (= stale);
        KeyframeDBError if its bytes fail their checksum."""
        with self._read() as cur:
            row = cur.execute(f"SELECT data, {self._crc_sql()} FROM blobs WHERE kf_id = ? AND backend = ? AND "
                              "key = ? AND fingerprint = ?", (int(kf_id), backend, key, fingerprint)).fetchone()
        return None if row is None else self._verified(row[0], row[1], f"blob {backend}/{key} of keyframe {kf_id}")

    def iter_blobs(self, backend: str, key: str, fingerprint: str) -> Iterator[tuple[int, bytes]]:
        """``(kf_id, data)`` of every keyframe holding this blob with this fingerprint, id order
        (KeyframeDBError at the first blob failing its checksum)."""
        with self._read() as cur:
            rows = cur.execute(f"SELECT kf_id, data, {self._crc_sql()} FROM blobs WHERE backend = ? AND key = ? "
                               "AND fingerprint = ? ORDER BY kf_id", (backend, key, fingerprint)).fetchall()
        for kf_id, data, crc in rows:
            yield int(kf_id), self._verified(data, crc, f"blob {backend}/{key} of keyframe {kf_id}")

    def blob_ids(self, backend: str, key: str, fingerprint: str) -> set[int]:
        """Ids of the keyframes holding this blob with this fingerprint, without reading (or
        verifying) the blobs: only the columns before ``data`` are touched, so it costs one pass
        over the table's leaf pages, not over the blobs' bytes (large maps check what is missing)."""
        with self._read() as cur:
            return {int(r[0]) for r in cur.execute("SELECT kf_id FROM blobs WHERE backend = ? AND key = ? AND "
                                                   "fingerprint = ?", (backend, key, fingerprint))}

    def put_map_blob(self, backend: str, key: str, data: bytes, fingerprint: str) -> None:
        """Store (replace) a database-wide blob such as a vocabulary or a retrieval index."""
        self._check_blob_args(backend, key, fingerprint)
        data = bytes(data)
        with self._tx() as cur:
            if self._checksums:
                cur.execute("INSERT OR REPLACE INTO map_blobs(backend, key, fingerprint, data, crc32) "
                            "VALUES (?, ?, ?, ?, ?)", (backend, key, fingerprint, data, _crc(data)))
            else:
                cur.execute("INSERT OR REPLACE INTO map_blobs(backend, key, fingerprint, data) VALUES (?, ?, ?, ?)",
                            (backend, key, fingerprint, data))

    def get_map_blob(self, backend: str, key: str, fingerprint: str) -> bytes | None:
        """As :meth:`get_blob`, for a database-wide blob."""
        with self._read() as cur:
            row = cur.execute(f"SELECT data, {self._crc_sql()} FROM map_blobs WHERE backend = ? AND key = ? AND "
                              "fingerprint = ?", (backend, key, fingerprint)).fetchone()
        return None if row is None else self._verified(row[0], row[1], f"map blob {backend}/{key}")

    def backends(self) -> dict[str, set[str]]:
        """``{backend: {fingerprints}}`` over keyframe and map blobs."""
        out: dict[str, set[str]] = {}
        with self._read() as cur:
            for backend, fp in cur.execute("SELECT DISTINCT backend, fingerprint FROM blobs UNION "
                                           "SELECT DISTINCT backend, fingerprint FROM map_blobs"):
                out.setdefault(backend, set()).add(fp)
        return out

    def blob_counts(self) -> dict[tuple[str, str], int]:
        """``{(backend, fingerprint): number of keyframes with at least one blob}``."""
        with self._read() as cur:
            rows = cur.execute("SELECT backend, fingerprint, COUNT(DISTINCT kf_id) FROM blobs "
                               "GROUP BY backend, fingerprint").fetchall()
        return {(b, f): int(n) for b, f, n in rows}

    def blob_keys(self) -> set[tuple[str, str, str]]:
        """``{(backend, key, fingerprint)}`` of the keyframe blobs present (what a copy carries)."""
        with self._read() as cur:
            return set(cur.execute("SELECT DISTINCT backend, key, fingerprint FROM blobs").fetchall())

    # ----------------------------------------------------------------- metadata
    @property
    def metadata(self) -> dict[str, str]:
        with self._read() as cur:
            return dict(cur.execute("SELECT key, value FROM metadata ORDER BY key").fetchall())

    def set_metadata(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not key or key in _RESERVED_METADATA:
            raise KeyframeDBError(f"metadata key {key!r} is empty or reserved {_RESERVED_METADATA}")
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO metadata(key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def revision(self) -> int:
        """Counter bumped by every committed change, also by other processes sharing the file."""
        with self._read() as cur:
            return int(cur.execute("SELECT value FROM metadata WHERE key = 'revision'").fetchone()[0])

    def backup(self, target: Path | str | None = None) -> None:
        """Make the database safe to copy while it stays open.

        With ``target``: a consistent copy through SQLite's online backup API (other writers may
        keep committing meanwhile) into a temporary file beside ``target``, made self-contained
        (``journal_mode=DELETE``) and moved onto ``target`` atomically (``files.replace_db_file``):
        a process killed meanwhile leaves an existing ``target`` as it was. Without: checkpoint the
        WAL into the main file (``PRAGMA wal_checkpoint(FULL)``) so ``path`` alone holds every
        committed keyframe. A read-only store checkpoints through a short-lived writable
        connection (a read-only one cannot). KeyframeDBError names the file on failure.
        """
        with self._read() as cur:
            try:
                if target is not None:
                    target = Path(target)
                    if target.resolve() == self.path.resolve():
                        raise KeyframeDBError(f"cannot back up {self.path} onto itself")
                    if not target.parent.is_dir():
                        raise KeyframeDBError(f"cannot back up to {target}: directory {target.parent} does not exist")
                    tmp = temp_beside(target, "saving")
                    try:
                        dst = sqlite3.connect(str(tmp))
                        try:
                            cur.connection.backup(dst)
                            dst.execute("PRAGMA journal_mode = DELETE")
                        finally:
                            dst.close()
                        replace_db_file(tmp, target)
                    finally:
                        remove_db_files(tmp)
                elif self.readonly:
                    conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_MS / 1000)
                    try:
                        conn.execute("PRAGMA wal_checkpoint(FULL)")
                    finally:
                        conn.close()
                else:
                    cur.execute("PRAGMA wal_checkpoint(FULL)")
            except (sqlite3.Error, OSError) as err:
                where = f"{self.path} -> {target}" if target is not None else str(self.path)
                raise KeyframeDBError(f"backup of {where} failed: {err}") from err

    def check(self, blob_problem: Callable[[str, str, bytes], str | None] | None = None) -> list[str]:
        """Every problem of the file, one line each (empty = healthy): SQLite's full
        ``integrity_check``, every keyframe row (checksums, pose, intrinsics, image SHA-256 and
        decoding, depth) and every blob's checksum; ``blob_problem(backend, key, data)`` judges
        the content of each blob that passed (the backends' checks, ``db check``). Reads the whole file."""
        import cv2

        problems: list[str] = []
        if self.schema_version < 2:
            problems.append(f"{self.path}: schema version {self.schema_version} has no checksums (bit rot in "
                            "blobs cannot be detected); open it writable once: `reloc-vggt db check --migrate`")
        try:
            result = self.integrity_check()
            if result != "ok":
                problems += [f"{self.path}: SQLite integrity_check: {line}" for line in result.splitlines()]
            for kf_id in self.keyframe_ids():
                try:
                    kf = self.get_keyframe(kf_id)
                except KeyframeDBError as err:
                    problems.append(_without_hint(err))
                    continue
                if cv2.imdecode(np.frombuffer(kf.image_jpeg, np.uint8), cv2.IMREAD_UNCHANGED) is None:
                    problems.append(self._damage(kf_id, kf.name, "image bytes do not decode"))
            with self._read() as cur:
                keys = cur.execute("SELECT kf_id, backend, key, fingerprint FROM blobs ORDER BY kf_id").fetchall()
                map_keys = cur.execute("SELECT backend, key, fingerprint FROM map_blobs").fetchall()
            blobs = [(f"blob {b}/{k} of keyframe {i}", b, k, lambda i=i, b=b, k=k, f=f: self.get_blob(i, b, k, f))
                     for i, b, k, f in keys]
            blobs += [(f"map blob {b}/{k}", b, k, lambda b=b, k=k, f=f: self.get_map_blob(b, k, f))
                      for b, k, f in map_keys]
            for what, backend, key, read in blobs:
                try:
                    data = read()
                except KeyframeDBError as err:
                    problems.append(_without_hint(err))
                    continue
                problem = blob_problem(backend, key, data) if blob_problem and data is not None else None
                if problem:
                    problems.append(f"{self.path}: {what}: {problem}")
        except KeyframeDBError as err:  # a page so damaged that a table cannot be read at all
            problems.append(_without_hint(err))
        return problems

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ('ok' for a healthy file); reads every page."""
        with self._read() as cur:
            return "\n".join(r[0] for r in cur.execute("PRAGMA integrity_check"))
