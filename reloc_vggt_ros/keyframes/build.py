"""Build stage: a posed-image folder -> a keyframe database file (hloc-style function over paths);
merging databases (:func:`merge_keyframe_dbs`).

The database is written to a temporary file beside the target and moved into place only when
complete (``files.replace_db_file``: fsync, ``os.replace``), so a build or merge killed at any
moment leaves the previous file at the target intact and never a half-written one under the real name.
Backends precompute their per-keyframe blobs through ``localizer.registry.index_database``
when that module exists; the store itself never depends on a backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sqlite3
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data import PosedImage, read_posed_folder
from ..errors import DataError, KeyframeDBError
from .blobs import pack_arrays, unpack_arrays
from .files import remove_db_files, replace_db_file, temp_beside
from .store import SCHEMA_VERSION, KeyframeStore
from .types import Keyframe

__all__ = ["build_keyframe_db", "default_jobs", "index_with_backend", "keyframe_from_posed", "merge_keyframe_dbs",
           "worker_pool"]

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95
_BATCH = 32


def _scene_folder(path: Path) -> Path:
    """Accept the scene folder or its ``images/`` sub-folder."""
    if (path / "poses.txt").is_file():
        return path
    if path.name == "images" and (path.parent / "poses.txt").is_file():
        return path.parent
    raise DataError(f"{path} is not a posed-image folder (no poses.txt in it or its parent)")


def keyframe_from_posed(rec: PosedImage, max_side: int | None = None) -> Keyframe:
    """A Keyframe for one posed image: original file bytes if they fit ``max_side``, else a resized JPEG.

    Resizing scales the intrinsics with :meth:`Intrinsics.scaled` (pixel-centre convention),
    using the exact per-axis ratio of the rounded output size.
    """
    data = Path(rec.path).read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image: {rec.path}")
    h, w = img.shape[:2]
    intr = rec.intrinsics
    if (intr.width, intr.height) != (w, h):
        raise DataError(f"{rec.path}: image is {w}x{h} but its intrinsics say {intr.width}x{intr.height}")
    is_jpeg_or_png = data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"
    if max_side is not None and max(w, h) > max_side:
        s = max_side / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        intr = intr.scaled(nw / w, nh / h)
        data = _encode_jpeg(img, rec.path)
    elif not is_jpeg_or_png:
        data = _encode_jpeg(img, rec.path)
    return Keyframe(name=rec.name, image_jpeg=data, intrinsics=intr, T_world_cam=rec.T_world_cam)


def _encode_jpeg(img: np.ndarray, source: Path) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"cannot encode {source} as JPEG")
    return buf.tobytes()


def default_jobs() -> int:
    """Worker processes of a build by default: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_pool(jobs: int, initializer: Any = None) -> ProcessPoolExecutor:
    """A pool of ``jobs`` processes for per-keyframe work; spawned, not forked, because the
    caller may be a threaded process (a node indexing its map off the frame path)."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=initializer)


def index_with_backend(store: KeyframeStore, backend: str, jobs: int = 1) -> None:
    """Let ``backend`` precompute its blobs into ``store`` (the registry owns backend indexing;
    imported here, not at module level, because the localizer package imports keyframes)."""
    from ..localizer.registry import index_database

    index_database(store, backend, jobs=jobs)


def build_keyframe_db(images: Path | str | Sequence[Path | str], db_path: Path | str, split: str | None = "db",
                      overwrite: bool = False, max_side: int | None = None,
                      backend: str | None = None, thumbnails: bool = True,
                      creator: str = "reloc-vggt db build", jobs: int = 1) -> Path:
    """Write the ``split`` images of a posed folder (None = all) into a new database at ``db_path``.

    ``images`` may be several posed folders (the cameras of a rig, each with its own intrinsics
    and lens): their keyframes go into one map, named ``<folder>/<image>``.

    Refuses to replace an existing file unless ``overwrite``. ``thumbnails`` stores the
    weights-free retrieval descriptor of every keyframe (``localizer.retrieval.ThumbnailRetriever``
    reads it; without them the VGGT backends compute them on first use).
    ``backend`` (e.g. "geometric") additionally indexes the database through the localizer
    registry if it exists. ``jobs`` > 1 worker processes (``db build``: :func:`default_jobs`) read the
    images and extract the backend's features; this process writes their results in order, so
    the database equals a one-job build's. Returns ``db_path``.
    """
    folders = [_scene_folder(Path(f)) for f in ([images] if isinstance(images, (str, Path)) else images)]
    if not folders:
        raise DataError("no posed-image folder given")
    if len({f.name for f in folders}) != len(folders):
        raise DataError(f"the folders of a rig build need distinct names (they prefix the keyframe names): "
                        f"{[str(f) for f in folders]}")
    db_path = Path(db_path)
    if db_path.exists() and not overwrite:
        raise KeyframeDBError(f"{db_path} exists; pass overwrite=True (--overwrite) to replace it")
    if max_side is not None and max_side < 16:
        raise KeyframeDBError(f"max_side must be >= 16 px, got {max_side}")
    logger.info("building %s from %s (split=%s, max_side=%s, thumbnails=%s, backend=%s)", db_path,
                ", ".join(map(str, folders)), split, max_side, thumbnails, backend)
    records = []
    for f in folders:
        recs = read_posed_folder(f, split)
        if not recs:
            raise DataError(f"{f}: no images in split {split!r}")
        records += [dataclasses.replace(r, name=f"{f.name}/{r.name}") for r in recs] if len(folders) > 1 else recs
    db_path.parent.mkdir(parents=True, exist_ok=True)
    jobs = max(1, int(jobs))
    tmp = temp_beside(db_path, "building")
    try:
        with KeyframeStore.create(tmp, units="m", creator=creator) as store:
            store.set_metadata("source", ";".join(str(f.resolve()) for f in folders))
            store.set_metadata("split", split or "all")
            store.set_metadata("max_side", str(max_side or ""))
            with worker_pool(jobs) if jobs > 1 and len(records) > 1 else contextlib.nullcontext() as pool:
                for i in range(0, len(records), _BATCH):  # bounded memory: a batch of images at a time
                    batch = records[i:i + _BATCH]
                    store.add_keyframes(list(pool.map(keyframe_from_posed, batch, [max_side] * len(batch)))
                                        if pool is not None else [keyframe_from_posed(r, max_side) for r in batch])
            if thumbnails:
                from ..localizer.retrieval import thumbnail_descriptors

                thumbnail_descriptors(store)      # what the VGGT backends' retrieval reads
            if backend and backend != "none":
                index_with_backend(store, backend, jobs)
            store._conn.execute("PRAGMA journal_mode = DELETE")  # self-contained file before the move
        replace_db_file(tmp, db_path)
    finally:
        remove_db_files(tmp)
    logger.info("wrote %d keyframes to %s", len(records), db_path)
    return db_path


_KEYFRAME_COLUMNS = ("name, stamp_ns, image_format, image_sha256, width, height, fx, fy, cx, cy, T_world_cam, "
                     "depth_height, depth_width, depth, image")


def merge_keyframe_dbs(inputs: list[Path | str], db_path: Path | str, overwrite: bool = False,
                       backend: str | None = "geometric", creator: str = "reloc-vggt db merge") -> Path:
    """One database with every keyframe of ``inputs``, in order (the first keeps its ids, each
    next one's follow), their checksums and blobs copied byte for byte (SQL, no decode).

    The first input's map-wide blobs (vocabulary) are kept; a keyframe's geometric points blob
    gets its neighbour ids renumbered like the keyframes, so the indexer that ``backend`` runs
    afterwards recomputes only what the merge changed: points of keyframes whose neighbours now
    include the other map's (the seam), the graph and the global index (and the VLADs, should
    the vocabulary be retrained as the map grew). Inputs must be of the current schema and the
    same units; KeyframeDBError names the one that is not.
    """
    paths, db_path = [Path(p) for p in inputs], Path(db_path)
    if len(paths) < 2:
        raise KeyframeDBError("merge needs at least two databases")
    if db_path.exists() and not overwrite:
        raise KeyframeDBError(f"{db_path} exists; pass overwrite=True (--overwrite) to replace it")
    units = set()
    for path in paths:
        if path.resolve() == db_path.resolve():
            raise KeyframeDBError(f"cannot merge {path} into itself")
        with KeyframeStore.open(path, readonly=True) as store:
            if store.schema_version != SCHEMA_VERSION:
                raise KeyframeDBError(f"{path}: schema version {store.schema_version}, merge copies checksums of "
                                      f"version {SCHEMA_VERSION}: open it writable once "
                                      f"(`reloc-vggt db check --migrate {path}`)")
            units.add(store.metadata.get("units", "m"))
    if len(units) > 1:
        raise KeyframeDBError(f"cannot merge databases of different units {sorted(units)}")
    tmp = temp_beside(db_path, "merging")
    try:
        with KeyframeStore.create(tmp, units=units.pop(), creator=creator) as store:
            store.set_metadata("source", " + ".join(str(p.resolve()) for p in paths))
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            for n, path in enumerate(paths):
                _merge_one(conn, path, first=n == 0)
            conn.execute("UPDATE metadata SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
        if backend and backend != "none":
            with KeyframeStore.open(tmp) as store:
                index_with_backend(store, backend)
                store._conn.execute("PRAGMA journal_mode = DELETE")  # noqa: SLF001 - self-contained file
        replace_db_file(tmp, db_path)
    finally:
        remove_db_files(tmp)
    logger.info("merged %s into %s", ", ".join(map(str, paths)), db_path)
    return db_path


def _merge_one(conn: sqlite3.Connection, path: Path, first: bool) -> None:
    """Append one database's keyframes (ids shifted past the current ones), checksums and blobs."""
    conn.execute("ATTACH DATABASE ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        conn.execute("BEGIN IMMEDIATE")
        offset = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM main.keyframes").fetchone()[0])
        conn.execute(f"INSERT INTO main.keyframes(id, {_KEYFRAME_COLUMNS}) SELECT id + ?, {_KEYFRAME_COLUMNS} "
                     "FROM src.keyframes ORDER BY id", (offset,))
        conn.execute("INSERT INTO main.keyframe_crc SELECT kf_id + ?, meta_crc32, depth_crc32 FROM src.keyframe_crc",
                     (offset,))
        conn.execute("INSERT INTO main.keyframe_distortion SELECT kf_id + ?, model, coefficients "
                     "FROM src.keyframe_distortion", (offset,))
        conn.execute("INSERT INTO main.blobs SELECT kf_id + ?, backend, key, fingerprint, data, crc32 FROM src.blobs "
                     "WHERE NOT (backend = 'geometric' AND key = 'points')", (offset,))
        for kf_id, fp, data, crc in conn.execute("SELECT kf_id, fingerprint, data, crc32 FROM src.blobs WHERE "
                                                 "backend = 'geometric' AND key = 'points'").fetchall():
            if offset and crc == zlib.crc32(data):       # a damaged blob is copied as it is (the indexer redoes it)
                arrays = unpack_arrays(data)
                if "neighbour_ids" in arrays:
                    arrays["neighbour_ids"] = arrays["neighbour_ids"] + offset
                    data = pack_arrays(arrays)
                    crc = zlib.crc32(data)
            conn.execute("INSERT INTO main.blobs VALUES (?, 'geometric', 'points', ?, ?, ?)",
                         (kf_id + offset, fp, data, crc))
        if first:
            conn.execute("INSERT INTO main.map_blobs SELECT * FROM src.map_blobs")
        conn.execute("COMMIT")
    except (sqlite3.Error, KeyframeDBError) as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise KeyframeDBError(f"cannot merge {path}: {err}") from err
    finally:
        conn.execute("DETACH DATABASE src")
