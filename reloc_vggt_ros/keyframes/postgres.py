"""The fleet's shared keyframe database: PostgreSQL 15 + PostGIS 3 (``psycopg`` 3).

Why a server: several robots insert keyframes at the same time and each localizes against what
the others mapped. The server stores what the SQLite file stores (images, poses bit for bit,
intrinsics, depth, per-keyframe and map-wide blobs, each with the same checksums) plus a global
``uuid`` per keyframe (:func:`~.base.keyframe_uuid`, unique: inserting a keyframe twice is a
no-op) and the camera centre as a PostGIS ``POINTZ`` with an n-D GiST index, so the server
answers the spatial questions a robot asks before pulling a region: keyframes near a pose
(:meth:`PostgresStore.near`) and along a route (:meth:`PostgresStore.along_route`). Vector
search (VLAD, faiss) stays on the robot, over the region it pulled into its SQLite cache
(``keyframes/sync.py``); pgvector is not packaged for this Debian.

Large coordinates: the stored pose is the same 128 bytes of little-endian float64 as in SQLite
(bit-exact at UTM-sized values); the PostGIS point is float64 too, used only for the index.

Transactions: a keyframe and its blobs are written in one transaction, so another robot sees
all of it or nothing. Every write transaction first bumps ``fleet_meta.revision`` (one row, so
writers serialize on it: keyframes are added a few times a second at most, and it gives every
robot a cheap "anything new?" check).

Failures: a server that is down, restarting, unreachable or slower than the statement timeout is
a :class:`ServerUnavailable` (the caller retries with backoff, ``sync.retry``; the connection is
re-opened on the next call); a server whose ``fleet_schema_version`` differs from
:data:`FLEET_SCHEMA_VERSION` is a KeyframeDBError naming both versions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import KeyframeDBError
from ..geometry import Intrinsics, is_valid_T
from .base import keyframe_uuid
from .store import KeyframeStore, _meta_crc
from .types import Keyframe

__all__ = ["PostgresStore", "ServerUnavailable", "FLEET_SCHEMA_VERSION", "Record", "redact_url"]

logger = logging.getLogger(__name__)

FLEET_SCHEMA_VERSION = 1
_POSE_TOL = 1e-6
_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE fleet_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE keyframes (
    id bigserial PRIMARY KEY,
    uuid uuid NOT NULL UNIQUE,
    name text NOT NULL,
    stamp_ns bigint NOT NULL,
    image_format text NOT NULL,
    image_sha256 text NOT NULL,
    width integer NOT NULL, height integer NOT NULL,
    fx double precision NOT NULL, fy double precision NOT NULL,
    cx double precision NOT NULL, cy double precision NOT NULL,
    t_world_cam bytea NOT NULL,
    depth_height integer, depth_width integer,
    meta_crc32 bigint NOT NULL,
    depth_crc32 bigint,
    position geometry(POINTZ) NOT NULL,
    source text NOT NULL DEFAULT '',
    added_utc timestamptz NOT NULL DEFAULT now(),
    depth bytea,
    image bytea NOT NULL
);
ALTER TABLE keyframes ALTER COLUMN image SET STORAGE EXTERNAL;
CREATE INDEX keyframes_position ON keyframes USING GIST (position gist_geometry_ops_nd);
CREATE TABLE blobs (
    kf_id bigint NOT NULL REFERENCES keyframes(id) ON DELETE CASCADE,
    backend text NOT NULL, key text NOT NULL, fingerprint text NOT NULL,
    data bytea NOT NULL, crc32 bigint NOT NULL,
    PRIMARY KEY (kf_id, backend, key)
);
CREATE TABLE map_blobs (
    backend text NOT NULL, key text NOT NULL, fingerprint text NOT NULL,
    data bytea NOT NULL, crc32 bigint NOT NULL,
    PRIMARY KEY (backend, key)
);
"""
# the small columns in the order of store._meta_crc (so a row has the same CRC in both databases)
_META = "id, name, stamp_ns, image_format, image_sha256, width, height, fx, fy, cx, cy, t_world_cam, " \
        "depth_height, depth_width, meta_crc32, depth_crc32"
_INSERT = ("INSERT INTO keyframes (uuid, name, stamp_ns, image, image_format, image_sha256, width, height, "
           "fx, fy, cx, cy, t_world_cam, depth, depth_height, depth_width, meta_crc32, depth_crc32, position, "
           "source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
           "ST_MakePoint(%s, %s, %s), %s) ON CONFLICT (uuid) DO NOTHING RETURNING id")
_RESERVED_METADATA = ("fleet_schema_version", "revision")


class ServerUnavailable(KeyframeDBError):
    """The server is down, restarting, unreachable or too slow: worth retrying later."""


@dataclass
class Record:
    """One keyframe as it travels between databases: the keyframe, its global id, its blobs
    ``{(backend, key): (fingerprint, data)}``."""

    keyframe: Keyframe
    uuid: uuid.UUID
    blobs: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)


def redact_url(url: str) -> str:
    """The URL without its password (for messages and ``path``)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - no psycopg, or unparsable: show nothing that could hold a password
        return "<PostgreSQL URL>"
    host, port = info.get("host", "localhost"), info.get("port", "5432")
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{info.get('dbname', '')}"


def _crc(data: bytes | None) -> int | None:
    return None if data is None else zlib.crc32(data)


class PostgresStore:
    """A fleet keyframe database on a PostgreSQL + PostGIS server; the :class:`~.base.KeyframeDatabase`
    interface plus the spatial queries and the bulk transfer the sync uses.

    One connection, re-opened after a failure, every call under one re-entrant lock (a store may
    be shared by threads). Ids are the server's; a ``kf_id`` set on an inserted keyframe is
    another database's and ignored.
    """

    def __init__(self, url: str, readonly: bool, connect_timeout_s: float, statement_timeout_s: float) -> None:
        """Use :meth:`open`."""
        self.url = url
        self.readonly = readonly
        self.schema_version = FLEET_SCHEMA_VERSION
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._conn = None
        self._lock = threading.RLock()
        self._closed = False

    @property
    def path(self) -> str:
        return redact_url(self.url)

    # ----------------------------------------------------------------- open / close
    @classmethod
    def open(cls, url: str, readonly: bool = False, create: bool = False, units: str = "m",
             connect_timeout_s: float = 5.0, statement_timeout_s: float = 30.0) -> "PostgresStore":
        """Connect and check the schema version; with ``create``, set the schema up if the database
        has none (several robots may race to do it: an advisory lock makes one win).

        ServerUnavailable if the server cannot be reached; KeyframeDBError if the database holds
        no fleet schema (and not ``create``) or another version of it.
        """
        store = cls(url, readonly, connect_timeout_s, statement_timeout_s)
        try:
            store._check_schema(create and not readonly, units)
        except BaseException:
            store.close()
            raise
        return store

    def _check_schema(self, create: bool, units: str) -> None:
        with self._cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(727274)")  # one creator at a time
            cur.execute("SELECT to_regclass('fleet_meta') IS NOT NULL")
            if not cur.fetchone()[0]:
                if not create:
                    raise KeyframeDBError(f"{self.path} holds no fleet keyframe database (no fleet_meta table); "
                                          "`reloc-vggt db push LOCAL.db URL` creates one")
                cur.execute(_SCHEMA)
                now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                cur.executemany("INSERT INTO fleet_meta(key, value) VALUES (%s, %s)", [
                    ("fleet_schema_version", str(FLEET_SCHEMA_VERSION)), ("revision", "0"), ("units", units),
                    ("created_utc", now), ("pose_convention", "T_world_cam"), ("camera_frame", "opencv_optical")])
                logger.info("created fleet keyframe database in %s (schema %d)", self.path, FLEET_SCHEMA_VERSION)
            cur.execute("SELECT value FROM fleet_meta WHERE key = 'fleet_schema_version'")
            row = cur.fetchone()
        found = row[0] if row else None
        if found != str(FLEET_SCHEMA_VERSION):
            newer = found is not None and found.isdigit() and int(found) > FLEET_SCHEMA_VERSION
            what = ("upgrade this robot's reloc_vggt_ros" if newer else
                    "upgrade the other robots, or migrate the server")
            raise KeyframeDBError(f"{self.path}: fleet schema version {found}, this reloc_vggt_ros speaks version "
                                  f"{FLEET_SCHEMA_VERSION}; robots and server must agree: {what}")

    def _connection(self):  # noqa: ANN202 - psycopg.Connection
        try:
            import psycopg
        except ImportError as err:
            raise KeyframeDBError("the fleet store needs psycopg 3: pip install 'psycopg[binary]' "
                                  "(pinned in requirements.txt)") from err
        if self._closed:
            raise KeyframeDBError(f"{self.path}: store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self.url, connect_timeout=max(1, round(self._connect_timeout_s)),
                    options=f"-c statement_timeout={int(self._statement_timeout_s * 1000)}",
                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
            except psycopg.Error as err:
                raise ServerUnavailable(f"{self.path}: cannot connect: {str(err).strip()}") from err
        return self._conn

    @contextlib.contextmanager
    def _cursor(self, write: bool = False) -> Iterator:
        """A cursor inside one transaction (committed on exit, rolled back on any error);
        ``write`` bumps the revision first. psycopg errors become ServerUnavailable (connection,
        timeout, shutdown: retry) or KeyframeDBError (anything else)."""
        import psycopg

        with self._lock:
            if write and self.readonly:
                raise KeyframeDBError(f"{self.path}: opened read-only")
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    if write:
                        cur.execute("UPDATE fleet_meta SET value = (value::bigint + 1)::text WHERE key = 'revision'")
                    yield cur
            except psycopg.OperationalError as err:
                self._drop()
                raise ServerUnavailable(f"{self.path}: {type(err).__name__}: {str(err).strip()}") from err
            except psycopg.Error as err:
                if conn.broken:
                    self._drop()
                    raise ServerUnavailable(f"{self.path}: connection lost: {str(err).strip()}") from err
                raise KeyframeDBError(f"{self.path}: {type(err).__name__}: {str(err).strip()}") from err

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
            self._closed = True

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.path!r}, {'closed' if self._closed else 'ro' if self.readonly else 'rw'})"

    # ----------------------------------------------------------------- keyframes
    def add_keyframe(self, kf: Keyframe) -> int:
        return self.add_keyframes([kf])[0]

    def add_keyframes(self, kfs: Iterable[Keyframe]) -> list[int]:
        """Insert keyframes in one transaction (all or none); one already present (same uuid) is not
        inserted again and its existing id is returned."""
        return [kf_id for kf_id, _ in self.insert([Record(kf, keyframe_uuid(kf)) for kf in kfs])]

    def insert(self, records: Sequence[Record], source: str = "") -> list[tuple[int, bool]]:
        """Insert keyframes with their blobs in one transaction; ``(id, inserted)`` per record, in
        order (``inserted`` False: its uuid was already present, nothing of it is written).
        ``source`` records who pushed them (a robot name)."""
        rows = []
        for rec in records:
            _, (*row, distortion) = KeyframeStore._row(rec.keyframe)  # the same validation as the SQLite store
            if distortion is not None:
                raise KeyframeDBError(f"keyframe {rec.keyframe.name!r} has a lens model ({distortion[0]}): the fleet "
                                      "store holds pinhole keyframes only; push undistorted (image_rect) keyframes")
            for (backend, key), (fp, _) in rec.blobs.items():
                _check_blob_args(backend, key, fp)
            rows.append(row)
        out: list[tuple[int, bool]] = []
        with self._cursor(write=True) as cur:
            for rec, row in zip(records, rows):
                name, stamp, image, fmt, sha, w, h, fx, fy, cx, cy, pose, depth, dh, dw = row
                centre = np.frombuffer(pose, "<f8").reshape(4, 4)[:3, 3]
                cur.execute(_INSERT, (rec.uuid, *row, _meta_crc(name, stamp, fmt, sha, w, h, fx, fy, cx, cy, pose,
                                                                dh, dw), _crc(depth), *map(float, centre), source))
                got = cur.fetchone()
                if got is None:  # already there (another robot, an earlier push)
                    cur.execute("SELECT id FROM keyframes WHERE uuid = %s", (rec.uuid,))
                    out.append((int(cur.fetchone()[0]), False))
                    continue
                kf_id = int(got[0])
                cur.executemany("INSERT INTO blobs(kf_id, backend, key, fingerprint, data, crc32) "
                                "VALUES (%s, %s, %s, %s, %s, %s)",
                                [(kf_id, b, k, fp, data, zlib.crc32(data)) for (b, k), (fp, data) in rec.blobs.items()])
                out.append((kf_id, True))
        return out

    def _rows(self, where: str = "", params: Sequence = ()) -> list[tuple]:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_META} FROM keyframes {where} ORDER BY id", params)
            return cur.fetchall()

    def _valid_rows(self, where: str = "", params: Sequence = ()) -> list[tuple]:
        good = []
        for row in self._rows(where, params):
            problem = _row_problem(row)
            if problem:
                logger.warning("keyframe %d (%s) in %s is damaged: %s; it is skipped", row[0], row[1], self.path,
                               problem)
            else:
                good.append(row)
        return good

    def poses(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [N], T_world_cam [N,4,4])`` of the usable keyframes (all, or those of ``ids``)."""
        rows = self._valid_rows(*(() if ids is None else ("WHERE id = ANY(%s)", ([int(i) for i in ids],))))
        Ts = np.frombuffer(b"".join(r[11] for r in rows), "<f8").reshape(-1, 4, 4).astype(np.float64)
        return np.array([r[0] for r in rows], np.int64), Ts

    def intrinsics(self) -> dict[int, Intrinsics]:
        return {r[0]: Intrinsics(r[7], r[8], r[9], r[10], r[5], r[6]) for r in self._valid_rows()}

    def keyframe_ids(self) -> list[int]:
        with self._cursor() as cur:
            cur.execute("SELECT id FROM keyframes ORDER BY id")
            return [int(r[0]) for r in cur.fetchall()]

    def __len__(self) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT count(*) FROM keyframes")
            return int(cur.fetchone()[0])

    def get_keyframe(self, kf_id: int) -> Keyframe:
        records = self.fetch([kf_id], blobs=False)
        if not records:
            raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id}")
        return records[0].keyframe

    def iter_keyframes(self) -> Iterator[Keyframe]:
        for kf_id in self.keyframe_ids():
            try:
                yield self.get_keyframe(kf_id)
            except KeyframeDBError as err:
                logger.warning("%s; it is skipped", err)

    def remove_keyframe(self, kf_id: int) -> None:
        with self._cursor(write=True) as cur:
            cur.execute("DELETE FROM keyframes WHERE id = %s", (int(kf_id),))
            if cur.rowcount == 0:
                raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id}")

    def fetch(self, ids: Sequence[int], blobs: bool = True) -> list[Record]:
        """The keyframes of ``ids`` (those that exist), every byte verified against its checksum,
        with their blobs; KeyframeDBError naming the first damaged one."""
        ids = [int(i) for i in ids]
        with self._cursor() as cur:
            cur.execute(f"SELECT {_META}, uuid, depth, image FROM keyframes WHERE id = ANY(%s) ORDER BY id", (ids,))
            rows = cur.fetchall()
            blob_rows: list[tuple] = []
            if blobs:
                cur.execute("SELECT kf_id, backend, key, fingerprint, data, crc32 FROM blobs WHERE kf_id = ANY(%s)",
                            (ids,))
                blob_rows = cur.fetchall()
        out: dict[int, Record] = {}
        for row in rows:
            meta, (kf_uuid, depth, image) = row[:16], row[16:]
            kf_id, name, stamp, _fmt, sha, w, h, fx, fy, cx, cy, pose, dh, dw, _crc32, depth_crc = meta
            problem = _row_problem(meta)
            if problem is None and hashlib.sha256(image).hexdigest() != sha:
                problem = "image bytes do not match their SHA-256"
            if problem is None and depth is not None and depth_crc != zlib.crc32(depth):
                problem = "depth bytes fail their CRC32 check"
            if problem:
                raise KeyframeDBError(f"keyframe {kf_id} ({name}) in {self.path} is damaged: {problem}")
            depth_m = None if depth is None else np.frombuffer(depth, "<f4").reshape(dh, dw).copy()
            kf = Keyframe(name=name, image_jpeg=bytes(image), intrinsics=Intrinsics(fx, fy, cx, cy, w, h),
                          T_world_cam=np.frombuffer(pose, "<f8").reshape(4, 4).astype(np.float64),
                          stamp_ns=int(stamp), depth_m=depth_m, kf_id=int(kf_id))
            out[kf_id] = Record(kf, kf_uuid)
        for kf_id, backend, key, fp, data, crc in blob_rows:
            out[kf_id].blobs[(backend, key)] = (fp, _verified(bytes(data), crc, f"blob {backend}/{key} of keyframe "
                                                              f"{kf_id} in {self.path}"))
        return [out[i] for i in sorted(out)]

    # ----------------------------------------------------------------- fleet: identity and space
    def ids_of(self, uuids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
        """``{uuid: id}`` of those of ``uuids`` the server holds."""
        with self._cursor() as cur:
            cur.execute("SELECT uuid, id FROM keyframes WHERE uuid = ANY(%s)", (list(uuids),))
            return {u: int(i) for u, i in cur.fetchall()}

    def uuids(self, ids: Iterable[int]) -> dict[int, uuid.UUID]:
        """``{id: uuid}`` of ``ids``."""
        with self._cursor() as cur:
            cur.execute("SELECT id, uuid FROM keyframes WHERE id = ANY(%s)", ([int(i) for i in ids],))
            return {int(i): u for i, u in cur.fetchall()}

    def near(self, centre: Sequence[float], radius_m: float, limit: int | None = None) -> list[int]:
        """Ids of the keyframes whose camera centre is within ``radius_m`` (3D) of ``centre``,
        nearest first (GiST index on the centres)."""
        x, y, z = (float(v) for v in centre)
        with self._cursor() as cur:
            cur.execute("SELECT id FROM keyframes WHERE ST_3DDWithin(position, ST_MakePoint(%s, %s, %s), %s) "
                        "ORDER BY ST_3DDistance(position, ST_MakePoint(%s, %s, %s)), id LIMIT %s",
                        (x, y, z, float(radius_m), x, y, z, limit))
            return [int(r[0]) for r in cur.fetchall()]

    def along_route(self, waypoints: Sequence[Sequence[float]], radius_m: float) -> list[int]:
        """Ids of the keyframes within ``radius_m`` (3D) of the polyline through ``waypoints``
        [M,3], in the order a robot driving the route reaches them (GiST index on the centres)."""
        pts = np.asarray(waypoints, float).reshape(-1, 3)
        if len(pts) == 1:
            return self.near(pts[0], radius_m)
        line = "ST_MakeLine(ARRAY[" + ", ".join(["ST_MakePoint(%s, %s, %s)"] * len(pts)) + "])"
        flat = [float(v) for v in pts.ravel()]
        with self._cursor() as cur:
            cur.execute(f"WITH route AS (SELECT {line} AS g) SELECT k.id FROM keyframes k, route "
                        "WHERE ST_3DDWithin(k.position, route.g, %s) "
                        "ORDER BY ST_LineLocatePoint(ST_Force2D(route.g), ST_Force2D(k.position)), k.id",
                        (*flat, float(radius_m)))
            return [int(r[0]) for r in cur.fetchall()]

    # ----------------------------------------------------------------- blobs
    def put_blob(self, kf_id: int, backend: str, key: str, data: bytes, fingerprint: str,
                 replace: bool = True) -> bool:
        """Store a keyframe's blob; with ``replace=False`` only if it has none under this key (another
        robot's is kept). Returns whether it was written."""
        _check_blob_args(backend, key, fingerprint)
        data = bytes(data)
        import psycopg

        conflict = ("DO UPDATE SET fingerprint = EXCLUDED.fingerprint, data = EXCLUDED.data, crc32 = EXCLUDED.crc32"
                    if replace else "DO NOTHING")
        try:
            with self._cursor(write=True) as cur:
                cur.execute("INSERT INTO blobs(kf_id, backend, key, fingerprint, data, crc32) VALUES "
                            f"(%s, %s, %s, %s, %s, %s) ON CONFLICT (kf_id, backend, key) {conflict}",
                            (int(kf_id), backend, key, fingerprint, data, zlib.crc32(data)))
                return cur.rowcount == 1
        except KeyframeDBError as err:
            if isinstance(err.__cause__, psycopg.errors.ForeignKeyViolation):
                raise KeyframeDBError(f"{self.path}: no keyframe with id {kf_id} for blob {backend}/{key}") from err
            raise

    def get_blob(self, kf_id: int, backend: str, key: str, fingerprint: str) -> bytes | None:
        with self._cursor() as cur:
            cur.execute("SELECT data, crc32 FROM blobs WHERE kf_id = %s AND backend = %s AND key = %s AND "
                        "fingerprint = %s", (int(kf_id), backend, key, fingerprint))
            row = cur.fetchone()
        return None if row is None else _verified(bytes(row[0]), row[1], f"blob {backend}/{key} of keyframe {kf_id}")

    def iter_blobs(self, backend: str, key: str, fingerprint: str) -> Iterator[tuple[int, bytes]]:
        with self._cursor() as cur:
            cur.execute("SELECT kf_id, data, crc32 FROM blobs WHERE backend = %s AND key = %s AND fingerprint = %s "
                        "ORDER BY kf_id", (backend, key, fingerprint))
            rows = cur.fetchall()
        for kf_id, data, crc in rows:
            yield int(kf_id), _verified(bytes(data), crc, f"blob {backend}/{key} of keyframe {kf_id}")

    def blob_keys_of(self, ids: Iterable[int]) -> dict[int, set[tuple[str, str]]]:
        """``{kf_id: {(backend, key)}}`` of the blobs these keyframes hold (without reading them)."""
        out: dict[int, set[tuple[str, str]]] = {}
        with self._cursor() as cur:
            cur.execute("SELECT kf_id, backend, key FROM blobs WHERE kf_id = ANY(%s)", ([int(i) for i in ids],))
            for kf_id, backend, key in cur.fetchall():
                out.setdefault(int(kf_id), set()).add((backend, key))
        return out

    def blob_ids(self, backend: str, key: str, fingerprint: str) -> set[int]:
        with self._cursor() as cur:
            cur.execute("SELECT kf_id FROM blobs WHERE backend = %s AND key = %s AND fingerprint = %s",
                        (backend, key, fingerprint))
            return {int(r[0]) for r in cur.fetchall()}

    def put_map_blob(self, backend: str, key: str, data: bytes, fingerprint: str) -> None:
        _check_blob_args(backend, key, fingerprint)
        data = bytes(data)
        with self._cursor(write=True) as cur:
            cur.execute("INSERT INTO map_blobs(backend, key, fingerprint, data, crc32) VALUES (%s, %s, %s, %s, %s) "
                        "ON CONFLICT (backend, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                        "data = EXCLUDED.data, crc32 = EXCLUDED.crc32",
                        (backend, key, fingerprint, data, zlib.crc32(data)))

    def get_map_blob(self, backend: str, key: str, fingerprint: str) -> bytes | None:
        with self._cursor() as cur:
            cur.execute("SELECT data, crc32 FROM map_blobs WHERE backend = %s AND key = %s AND fingerprint = %s",
                        (backend, key, fingerprint))
            row = cur.fetchone()
        return None if row is None else _verified(bytes(row[0]), row[1], f"map blob {backend}/{key}")

    def backends(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self._cursor() as cur:
            cur.execute("SELECT DISTINCT backend, fingerprint FROM blobs UNION "
                        "SELECT DISTINCT backend, fingerprint FROM map_blobs")
            for backend, fp in cur.fetchall():
                out.setdefault(backend, set()).add(fp)
        return out

    def blob_counts(self) -> dict[tuple[str, str], int]:
        with self._cursor() as cur:
            cur.execute("SELECT backend, fingerprint, count(DISTINCT kf_id) FROM blobs GROUP BY backend, fingerprint")
            return {(b, f): int(n) for b, f, n in cur.fetchall()}

    # ----------------------------------------------------------------- metadata
    @property
    def metadata(self) -> dict[str, str]:
        with self._cursor() as cur:
            cur.execute("SELECT key, value FROM fleet_meta ORDER BY key")
            return dict(cur.fetchall())

    def set_metadata(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not key or key in _RESERVED_METADATA:
            raise KeyframeDBError(f"metadata key {key!r} is empty or reserved {_RESERVED_METADATA}")
        with self._cursor(write=True) as cur:
            cur.execute("INSERT INTO fleet_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                        "value = EXCLUDED.value", (key, str(value)))

    @property
    def revision(self) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT value FROM fleet_meta WHERE key = 'revision'")
            return int(cur.fetchone()[0])


def _check_blob_args(backend: str, key: str, fingerprint: str) -> None:
    for label, value in (("backend", backend), ("key", key), ("fingerprint", fingerprint)):
        if not isinstance(value, str) or not value:
            raise KeyframeDBError(f"blob {label} must be a non-empty string, got {value!r}")


def _verified(data: bytes, crc: int, what: str) -> bytes:
    if crc != zlib.crc32(data):
        raise KeyframeDBError(f"{what} ({len(data)} bytes) fails its checksum (stored CRC32 {crc:08x}, bytes give "
                              f"{zlib.crc32(data):08x})")
    return data


def _row_problem(meta: Sequence) -> str | None:
    """What is wrong with a keyframe row's small columns (``_META`` order), or None."""
    _id, name, stamp, fmt, sha, w, h, fx, fy, cx, cy, pose, dh, dw, crc, _depth_crc = meta
    pose = bytes(pose)
    if crc != _meta_crc(name, stamp, fmt, sha, w, h, fx, fy, cx, cy, pose, dh, dw):
        return "pose/intrinsics/name columns fail their CRC32 check"
    if len(pose) != 128 or not is_valid_T(np.frombuffer(pose, "<f8").reshape(4, 4), tol=_POSE_TOL):
        return "T_world_cam is not a finite rigid transform"
    return None
