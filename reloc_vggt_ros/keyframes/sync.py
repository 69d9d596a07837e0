"""A robot's local SQLite cache of the fleet map, and its sync with the server.

A robot localizes against a :class:`~.store.KeyframeStore` file (retrieval in faiss, features and
3D points in memory: nothing on the frame path waits for the network) holding the region it
works in, pulled from the fleet's :class:`~.postgres.PostgresStore`; keyframes it maps itself go
into that file first and are pushed later. Both directions are idempotent by the keyframes'
global ids (:func:`~.base.keyframe_uuid`, derived from their content): a push sends only what
the server lacks, a pull only what the cache lacks, a repeated or interrupted sync duplicates
nothing. The cache remembers ``local id -> uuid`` in one map blob (backend ``fleet``) so a sync
does not re-hash every image; the blob is only a cache (a lost one is recomputed from the
keyframes).

What travels: the keyframe (image bytes, pose bit for bit, intrinsics, depth) and its
per-keyframe backend blobs with their fingerprints (features, points, VLAD, thumbnails), each
verified against its checksum on both sides; a push also sends the blobs computed since a
keyframe was pushed (a key the server's copy lacks; one it has is never replaced). Map-wide blobs (a vocabulary) do not: each cache
trains its own for its region, and blobs derived from it carry its hash in their fingerprint, so
stale ones are recomputed, never used. A keyframe and its blobs are one transaction on the
server; in the cache the keyframes of a batch are one transaction and their blobs follow (a crash
in between leaves keyframes whose blobs the localizer recomputes).

A server that is down or slow raises :class:`~.postgres.ServerUnavailable`; :func:`retry` runs a
sync again with exponential backoff and jitter, and :class:`FleetSync` (the node's background
thread) keeps the last good state and says what is wrong while the node localizes from the cache.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..config import require_positive, setting
from ..errors import ConfigError, KeyframeDBError
from .base import keyframe_uuid
from .blobs import pack_arrays, unpack_arrays
from .postgres import PostgresStore, Record, ServerUnavailable
from .store import KeyframeStore

__all__ = ["Region", "SyncReport", "push", "pull", "evict", "local_uuids", "retry", "FleetConfig", "FleetSync"]

logger = logging.getLogger(__name__)

BACKEND = "fleet"                        # the sync's own bookkeeping in the cache, never transferred
_UUIDS = ("uuids", "fleet-uuids-v1")     # map blob: kf_id [N] int64, uuid [N,16] uint8
_BATCH = 16                              # keyframes per transaction (bounded memory, bounded retry cost)
T = TypeVar("T")


@dataclass(frozen=True)
class Region:
    """Where a robot works: keyframes within ``radius_m`` of ``centre``, or of the polyline
    ``route`` [M,3] when given."""

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius_m: float = 0.0
    route: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if not (np.isfinite(self.radius_m) and self.radius_m > 0):
            raise ConfigError(f"region radius must be a positive number of metres, got {self.radius_m}")
        if not np.all(np.isfinite(self.centre)) or not np.all(np.isfinite(np.asarray(self.route, float))):
            raise ConfigError("region centre / route must be finite coordinates")

    @classmethod
    def parse(cls, radius_m: float, near: str | None = None, route: str | None = None) -> "Region":
        """From the CLI: ``near`` = ``x,y,z`` or ``route`` = ``x,y,z;x,y,z;...`` (map frame, metres)."""
        if (near is None) == (route is None):
            raise ConfigError("give either --near x,y,z or --route 'x,y,z;x,y,z;...' (with --radius)")
        points = tuple(_point(p) for p in (route or near or "").split(";"))
        return cls(points[0], float(radius_m), points if route is not None else ())

    def server_ids(self, server: PostgresStore) -> list[int]:
        """The server's keyframes in the region (spatial index on the server)."""
        if self.route:
            return server.along_route(self.route, self.radius_m)
        return server.near(self.centre, self.radius_m)

    def contains(self, centres: np.ndarray) -> np.ndarray:
        """Mask of camera centres [N,3] inside the region."""
        centres = np.asarray(centres, float).reshape(-1, 3)
        if not self.route:
            return np.linalg.norm(centres - np.asarray(self.centre), axis=1) <= self.radius_m
        pts = np.asarray(self.route, float)
        if len(pts) == 1:
            return np.linalg.norm(centres - pts[0], axis=1) <= self.radius_m
        a, b = pts[:-1][None], pts[1:][None]                       # [1,S,3] segments
        d = b - a
        t = np.clip(np.einsum("nsk,nsk->ns", centres[:, None] - a, d) / np.maximum(
            np.einsum("nsk,nsk->ns", d, d), 1e-300), 0, 1)
        dist = np.linalg.norm(centres[:, None] - (a + t[..., None] * d), axis=2).min(axis=1)
        return dist <= self.radius_m


def _point(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError as err:
        raise ConfigError(f"a point is x,y,z (three numbers, map frame metres), got {text!r}") from err
    return x, y, z


@dataclass(frozen=True)
class SyncReport:
    """What one push or pull did."""

    sent: int = 0          # keyframes copied
    present: int = 0       # already on the other side (by uuid)
    skipped: int = 0       # damaged locally: left out, with a warning
    blobs: int = 0         # blobs added to keyframes already there (computed after an earlier sync)

    def __str__(self) -> str:
        extra = f", {self.blobs} blobs added to keyframes already there" if self.blobs else ""
        return f"{self.sent} copied, {self.present} already there, {self.skipped} damaged and skipped{extra}"


def local_uuids(local: KeyframeStore) -> dict[int, uuid.UUID]:
    """``{local id: uuid}`` of the cache's usable keyframes: from the cached map blob, the rest
    hashed from their content (and the blob updated when the cache is writable)."""
    ids, _ = local.poses()
    known = _cached_uuids(local)
    out: dict[int, uuid.UUID] = {}
    for kf_id in (int(i) for i in ids):
        if kf_id in known:
            out[kf_id] = known[kf_id]
            continue
        try:
            out[kf_id] = keyframe_uuid(local.get_keyframe(kf_id))
        except KeyframeDBError as err:
            logger.warning("fleet sync: %s; it is not synced", err)
    if set(out) != set(known) and not local.readonly:
        _store_uuids(local, out)
    return out


def _cached_uuids(local: KeyframeStore) -> dict[int, uuid.UUID]:
    try:
        blob = local.get_map_blob(BACKEND, *_UUIDS)
        if blob is None:
            return {}
        arrays = unpack_arrays(blob)
        return {int(i): uuid.UUID(bytes=bytes(u)) for i, u in zip(arrays["kf_id"], arrays["uuid"])}
    except (KeyframeDBError, KeyError, ValueError) as err:
        logger.warning("fleet sync: uuid cache of %s unreadable (%s); recomputed from the keyframes", local.path, err)
        return {}


def _store_uuids(local: KeyframeStore, uuids: dict[int, uuid.UUID]) -> None:
    ids = np.array(sorted(uuids), np.int64)
    table = np.frombuffer(b"".join(uuids[int(i)].bytes for i in ids), np.uint8).reshape(-1, 16)
    local.put_map_blob(BACKEND, _UUIDS[0], pack_arrays({"kf_id": ids, "uuid": table}), _UUIDS[1])


def _check_units(local: KeyframeStore, server: PostgresStore) -> None:
    mine, theirs = local.metadata.get("units", "m"), server.metadata.get("units", "m")
    if mine != theirs:
        raise KeyframeDBError(f"{local.path} is in units {mine!r}, the fleet map {server.path} in {theirs!r}")


def push(local: KeyframeStore, server: PostgresStore, region: Region | None = None, source: str = "") -> SyncReport:
    """Send the cache's keyframes (those in ``region``, or all) that the server lacks, each with its
    blobs, in transactions of a few keyframes. Safe to repeat after any failure."""
    _check_units(local, server)
    uuids = local_uuids(local)
    if region is not None:
        ids, poses = local.poses()
        inside = {int(i) for i in ids[region.contains(poses[:, :3, 3])]}
        uuids = {i: u for i, u in uuids.items() if i in inside}
    present = server.ids_of(uuids.values())
    todo = [i for i, u in uuids.items() if u not in present]
    keys = sorted(k for k in local.blob_keys() if k[0] != BACKEND)
    sent = skipped = 0
    for start in range(0, len(todo), _BATCH):
        records = []
        for kf_id in todo[start:start + _BATCH]:
            try:
                kf = local.get_keyframe(kf_id)
                blobs = {(b, k): (fp, data) for b, k, fp in keys
                         if (data := local.get_blob(kf_id, b, k, fp)) is not None}
            except KeyframeDBError as err:
                logger.warning("fleet push: %s; it is not pushed", err)
                skipped += 1
                continue
            records.append(Record(kf, uuids[kf_id], blobs))
        sent += sum(new for _, new in server.insert(records, source=source))
    blobs = _push_new_blobs(local, server, {i: present[u] for i, u in uuids.items() if u in present}, keys)
    return SyncReport(sent, len(uuids) - sent - skipped, skipped, blobs)   # present: before, or pushed meanwhile


def _push_new_blobs(local: KeyframeStore, server: PostgresStore, on_server: dict[int, int],
                    keys: list[tuple[str, str, str]]) -> int:
    """Send the blobs the cache holds for keyframes the server already has (``local id -> server
    id``) under a key the server's copy lacks: a keyframe pushed before it was indexed gets its
    features, points and VLAD. A blob the server holds under the key (another robot's, other
    settings) is kept; a damaged local one is a warning. Returns how many were sent."""
    if not on_server:
        return 0
    have = server.blob_keys_of(on_server.values())
    sent = 0
    for backend, key, fp in keys:
        for kf_id in sorted(local.blob_ids(backend, key, fp) & on_server.keys()):
            if (backend, key) in have.get(on_server[kf_id], set()):
                continue
            try:
                data = local.get_blob(kf_id, backend, key, fp)
            except KeyframeDBError as err:
                logger.warning("fleet push: %s; it is not pushed", err)
                continue
            if data is not None:
                sent += server.put_blob(on_server[kf_id], backend, key, data, fp, replace=False)
    return sent


def pull(server: PostgresStore, local: KeyframeStore, region: Region | None = None,
         ids: Sequence[int] | None = None) -> SyncReport:
    """Copy the server's keyframes in ``region`` (or of ``ids``, or all) that the cache lacks,
    with their blobs. Safe to repeat after any failure."""
    _check_units(local, server)
    wanted = list(ids) if ids is not None else region.server_ids(server) if region is not None \
        else server.keyframe_ids()
    remote = server.uuids(wanted)
    mine = local_uuids(local)
    have = set(mine.values())
    todo = [i for i in wanted if i in remote and remote[i] not in have]
    sent = skipped = 0
    for start in range(0, len(todo), _BATCH):
        batch = todo[start:start + _BATCH]
        try:
            records = server.fetch(batch)
        except ServerUnavailable:
            raise
        except KeyframeDBError as err:  # one damaged keyframe on the server: fetch the rest one by one
            logger.warning("fleet pull: %s", err)
            records = []
            for kf_id in batch:
                try:
                    records += server.fetch([kf_id])
                except ServerUnavailable:
                    raise
                except KeyframeDBError as one:
                    logger.warning("fleet pull: %s; it is not pulled", one)
                    skipped += 1
        new_ids = local.add_keyframes([replace(r.keyframe, kf_id=None) for r in records])
        for kf_id, rec in zip(new_ids, records):
            mine[kf_id] = rec.uuid
            for (backend, key), (fp, data) in rec.blobs.items():
                local.put_blob(kf_id, backend, key, data, fp)
        _store_uuids(local, mine)
        sent += len(records)
    return SyncReport(sent, len(wanted) - len(todo), skipped)


def evict(local: KeyframeStore, server: PostgresStore, region: Region) -> int:
    """Remove from the cache the keyframes outside ``region`` that the server holds (a keyframe
    only this robot has is never removed: push it first); returns how many were removed."""
    uuids = local_uuids(local)
    ids, poses = local.poses()
    outside = [int(i) for i in ids[~region.contains(poses[:, :3, 3])] if int(i) in uuids]
    on_server = server.ids_of(uuids[i] for i in outside)
    removed = [i for i in outside if uuids[i] in on_server]
    for kf_id in removed:
        local.remove_keyframe(kf_id)
    if removed:
        _store_uuids(local, {i: u for i, u in uuids.items() if i not in set(removed)})
    return len(removed)


def retry(fn: Callable[[], T], what: str, attempts: int = 5, base_delay_s: float = 0.5, max_delay_s: float = 10.0,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, run again after a ServerUnavailable with exponential backoff (x2 per attempt, up to
    ``max_delay_s``, 50-100 % jitter so a fleet does not retry in step); the last error propagates."""
    for attempt in range(attempts):
        try:
            return fn()
        except ServerUnavailable as err:
            if attempt == attempts - 1:
                raise
            delay = min(max_delay_s, base_delay_s * 2 ** attempt) * random.uniform(0.5, 1.0)
            logger.warning("%s: %s; retry %d/%d in %.1f s", what, err, attempt + 1, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------- the node's background sync
@dataclass(frozen=True)
class FleetConfig:
    """Optional fleet sync of the node's database (the ``fleet.*`` parameters)."""

    url: str = setting("", "PostgreSQL URL of the fleet map (postgresql://user@host:port/db); '' = no fleet sync")
    radius_m: float = setting(100.0, "pull the fleet's keyframes within this distance of the robot's last pose")
    period_s: float = setting(10.0, "seconds between syncs (push new local keyframes, pull the region)")
    push: bool = setting(True, "push keyframes mapped by this robot")
    source: str = setting("", "this robot's name, stored with the keyframes it pushes")
    timeout_s: float = setting(5.0, "connect and statement timeout; slower counts as unavailable")
    evict_radius_m: float = setting(0.0, "remove from the local cache the keyframes farther than this from the "
                                    "robot that the server holds (0 = keep everything; at least radius_m)")

    def __post_init__(self) -> None:
        require_positive(self, "fleet", "radius_m", "period_s", "timeout_s")
        if self.evict_radius_m != 0 and not self.evict_radius_m >= self.radius_m:
            raise ConfigError(f"fleet.evict_radius_m must be 0 (never evict) or >= fleet.radius_m "
                              f"({self.radius_m}: what a sync pulls), got {self.evict_radius_m}")


class FleetSync:
    """Background push/pull between the node's cache file and the fleet server.

    Every ``period_s`` (or after :meth:`poke`): push new local keyframes, then pull the region
    around ``position()`` (nothing is pulled before the first pose) and, with
    ``evict_radius_m``, remove the keyframes beyond it that the server holds (the cache follows
    the robot; one only this robot has stays). Failures never stop it: a
    ServerUnavailable backs off (doubling up to 8 periods) and :meth:`status` says the node is
    localizing from its cache; ``on_pulled(n)`` is called after keyframes arrived or left so the
    node re-indexes. The thread opens its own connection to the cache file (WAL: the node's reads are
    not blocked).
    """

    def __init__(self, config: FleetConfig, cache_path: Path | str,
                 position: Callable[[], np.ndarray | None], on_pulled: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.cache_path = Path(cache_path)
        self._position = position
        self._on_pulled = on_pulled or (lambda n: None)
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._server: PostgresStore | None = None
        self._failures = 0
        self._last_ok: float | None = None
        self._state: dict[str, Any] = {"level": "ok", "message": "fleet sync starting", "pushed": 0, "pulled": 0,
                                       "evicted": 0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._server is not None:
            self._server.close()

    def poke(self) -> None:
        """Sync now (e.g. after a keyframe was mapped)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """``level`` (ok / warn / error), ``message``, ``pushed``/``pulled``/``evicted`` totals, ``last_ok_age_s``."""
        with self._lock:
            out = dict(self._state)
        out["last_ok_age_s"] = None if self._last_ok is None else round(self._clock() - self._last_ok, 1)
        return out

    def _set(self, **state: Any) -> None:
        with self._lock:
            self._state.update(state)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync_once()
            wait = self.config.period_s * min(8, 2 ** self._failures) if self._failures else self.config.period_s
            self._wake.wait(wait)
            self._wake.clear()

    def sync_once(self) -> None:
        """One push + pull; the outcome goes to :meth:`status`, never raises."""
        cfg = self.config
        try:
            if self._server is None:
                self._server = PostgresStore.open(cfg.url, create=cfg.push, connect_timeout_s=cfg.timeout_s,
                                                  statement_timeout_s=cfg.timeout_s)
            with KeyframeStore.open(self.cache_path) as local:
                pushed = push(local, self._server, source=cfg.source) if cfg.push else SyncReport()
                position = self._position()
                pulled, evicted = SyncReport(), 0
                if position is not None:
                    centre = tuple(map(float, position))
                    pulled = pull(self._server, local, Region(centre, cfg.radius_m))
                    if cfg.evict_radius_m > 0:
                        evicted = evict(local, self._server, Region(centre, cfg.evict_radius_m))
                size = len(local)
        except ServerUnavailable as err:
            self._failures += 1
            self._set(level="warn", message=f"fleet server unavailable ({err}); localizing from the local cache "
                                            f"{self.cache_path}, retry in "
                                            f"{cfg.period_s * min(8, 2 ** self._failures):.0f} s")
            return
        except Exception as err:  # noqa: BLE001 - schema mismatch, units, a damaged cache: the node stays up
            self._failures += 1
            self._set(level="error", message=f"fleet sync failed: {err}; localizing from the local cache")
            return
        self._failures = 0
        self._last_ok = self._clock()
        with self._lock:
            self._state["pushed"] += pushed.sent
            self._state["pulled"] += pulled.sent
            self._state["evicted"] += evicted
        gone = f"; {evicted} beyond {cfg.evict_radius_m:g} m evicted" if evicted else ""
        self._set(level="ok", message=f"fleet map in sync ({size} keyframes in the cache; last push {pushed}; "
                                      f"last pull {pulled}{gone})")
        if pulled.sent or evicted:
            self._on_pulled(pulled.sent + evicted)
