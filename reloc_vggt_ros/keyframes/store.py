"""The keyframe database: one SQLite file with images, poses, intrinsics and backend blobs.

Why SQLite: one file to copy to a robot, transactions, and crash safety for free. The file is
opened in WAL mode with ``synchronous=FULL``: every committed transaction is fsynced to the WAL
before ``commit`` returns, so a committed keyframe survives a killed process *and* a power cut
(``NORMAL`` would only survive the former). Keyframes are added rarely, so the fsync per commit
costs nothing that matters. One connection guarded by a re-entrant lock makes a store safe to
share between the node's inference thread (reads) and its keyframe thread (writes); other
processes may open the same file (WAL: many readers, one writer, ``busy_timeout`` waits).

Table layout and blob formats are documented in ``docs/database.md``; bump
:data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import KeyframeDBError
from ..geometry import Intrinsics, is_valid_T
from .types import Keyframe

__all__ = ["KeyframeStore", "SCHEMA_VERSION", "image_format"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_RESERVED_METADATA = ("schema_version", "revision")
_POSE_TOL = 1e-6
_BUSY_TIMEOUT_MS = 10_000

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
    PRIMARY KEY (kf_id, backend, key)
);
CREATE TABLE map_blobs (
    backend TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (backend, key)
);
"""
_KF_COLUMNS = ("id, name, stamp_ns, image, width, height, fx, fy, cx, cy, T_world_cam, "
               "depth, depth_height, depth_width")


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
        """Open an existing database; KeyframeDBError if missing, corrupt or of another schema."""
        path = Path(path)
        if not path.is_file():
            raise KeyframeDBError(f"keyframe database not found: {path}")
        conn = cls._connect(path, readonly)
        try:
            rows = conn.execute("SELECT key, value FROM metadata WHERE key = 'schema_version'").fetchall()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise KeyframeDBError(f"{path} is not a keyframe database (not SQLite, corrupt, or no "
                                  f"metadata table): {err}") from err
        found = rows[0][1] if rows else None
        if found != str(SCHEMA_VERSION):
            conn.close()
            raise KeyframeDBError(f"{path}: keyframe database schema version {found}, this reloc_vggt_ros "
                                  f"reads version {SCHEMA_VERSION}; rebuild it with `reloc-vggt db build`")
        return cls(path, conn, readonly)

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
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (kf_id, *row))
                except sqlite3.IntegrityError as err:
                    raise KeyframeDBError(f"{self.path}: cannot insert keyframe {row[0]!r} "
                                          f"(id {kf_id}): {err}") from err
                ids.append(int(cur.lastrowid or kf_id or 0))
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
                       _pose_to_blob(T), depth, dh, dw)

    @staticmethod
    def _keyframe(row: tuple) -> Keyframe:
        kf_id, name, stamp, image, w, h, fx, fy, cx, cy, pose, depth, dh, dw = row
        depth_m = None if depth is None else np.frombuffer(depth, dtype="<f4").reshape(dh, dw).copy()
        return Keyframe(name=name, image_jpeg=bytes(image), intrinsics=Intrinsics(fx, fy, cx, cy, w, h),
                        T_world_cam=_pose_from_blob(pose), stamp_ns=stamp, depth_m=depth_m, kf_id=kf_id)

    def _find_keyframe(self, kf_id: int) -> Keyframe | None:
        with self._read() as cur:
            row = cur.execute(f"SELECT {_KF_COLUMNS} FROM keyframes WHERE id = ?", (int(kf_id),)).fetchone()
        return None if row is None else self._keyframe(row)

    def get_keyframe(self, kf_id: int) -> Keyframe:
        kf = self._find_keyframe(kf_id)
        if kf is None:
            raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id}")
        return kf

    def keyframe_ids(self) -> list[int]:
        with self._read() as cur:
            return [r[0] for r in cur.execute("SELECT id FROM keyframes ORDER BY id")]

    def iter_keyframes(self) -> Iterator[Keyframe]:
        """Keyframes in id order, fetched one at a time (the lock is not held between them)."""
        for kf_id in self.keyframe_ids():
            kf = self._find_keyframe(kf_id)
            if kf is not None:  # else removed meanwhile by another thread
                yield kf

    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N] int64, T_world_cam [N,4,4] float64)`` in id order, without touching images."""
        with self._read() as cur:
            rows = cur.execute("SELECT id, T_world_cam FROM keyframes ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        Ts = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f8").reshape(-1, 4, 4).astype(np.float64)
        return ids, Ts

    def intrinsics(self) -> dict[int, Intrinsics]:
        """``{id: Intrinsics}`` of every keyframe, without touching images."""
        with self._read() as cur:
            rows = cur.execute("SELECT id, fx, fy, cx, cy, width, height FROM keyframes ORDER BY id").fetchall()
        return {r[0]: Intrinsics(*r[1:]) for r in rows}

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

    def put_blob(self, kf_id: int, backend: str, key: str, data: bytes, fingerprint: str) -> None:
        """Store (replace) one keyframe's blob; a new fingerprint supersedes the old blob."""
        self._check_blob_args(backend, key, fingerprint)
        with self._tx() as cur:
            try:
                cur.execute("INSERT OR REPLACE INTO blobs(kf_id, backend, key, fingerprint, data) "
                            "VALUES (?, ?, ?, ?, ?)", (int(kf_id), backend, key, fingerprint, bytes(data)))
            except sqlite3.IntegrityError as err:
                raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id} for blob "
                                      f"{backend}/{key}") from err

    def get_blob(self, kf_id: int, backend: str, key: str, fingerprint: str) -> bytes | None:
        """The blob, or None if absent or written with another fingerprint (= stale)."""
        with self._read() as cur:
            row = cur.execute("SELECT data FROM blobs WHERE kf_id = ? AND backend = ? AND key = ? "
                              "AND fingerprint = ?", (int(kf_id), backend, key, fingerprint)).fetchone()
        return None if row is None else bytes(row[0])

    def iter_blobs(self, backend: str, key: str, fingerprint: str) -> Iterator[tuple[int, bytes]]:
        """``(kf_id, data)`` of every keyframe holding this blob with this fingerprint, id order."""
        with self._read() as cur:
            rows = cur.execute("SELECT kf_id, data FROM blobs WHERE backend = ? AND key = ? AND "
                               "fingerprint = ? ORDER BY kf_id", (backend, key, fingerprint)).fetchall()
        for kf_id, data in rows:
            yield int(kf_id), bytes(data)

    def put_map_blob(self, backend: str, key: str, data: bytes, fingerprint: str) -> None:
        """Store (replace) a database-wide blob such as a vocabulary or a retrieval index."""
        self._check_blob_args(backend, key, fingerprint)
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO map_blobs(backend, key, fingerprint, data) VALUES (?, ?, ?, ?)",
                        (backend, key, fingerprint, bytes(data)))

    def get_map_blob(self, backend: str, key: str, fingerprint: str) -> bytes | None:
        with self._read() as cur:
            row = cur.execute("SELECT data FROM map_blobs WHERE backend = ? AND key = ? AND fingerprint = ?",
                              (backend, key, fingerprint)).fetchone()
        return None if row is None else bytes(row[0])

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
        keep committing meanwhile; an existing ``target`` is overwritten). Without: checkpoint the
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
                    dst = sqlite3.connect(str(target))
                    try:
                        cur.connection.backup(dst)
                    finally:
                        dst.close()
                elif self.readonly:
                    conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_MS / 1000)
                    try:
                        conn.execute("PRAGMA wal_checkpoint(FULL)")
                    finally:
                        conn.close()
                else:
                    cur.execute("PRAGMA wal_checkpoint(FULL)")
            except sqlite3.Error as err:
                where = f"{self.path} -> {target}" if target is not None else str(self.path)
                raise KeyframeDBError(f"backup of {where} failed: {err}") from err

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ('ok' for a healthy file); reads every page."""
        with self._read() as cur:
            return "\n".join(r[0] for r in cur.execute("PRAGMA integrity_check"))
