"""The keyframe database interface, and the global identity of a keyframe across a fleet.

Two implementations: :class:`~.store.KeyframeStore` (one SQLite file, the embedded default of a
single robot) and :class:`~.postgres.PostgresStore` (one PostgreSQL + PostGIS database shared by a
fleet). Localizers, ``db info`` and the sync read and write keyframes only through the methods
below, so either can stand behind them.

A keyframe's local id (``kf_id``) means something only inside one database; across databases a
keyframe is known by :func:`keyframe_uuid`, derived from its content (image bytes, pose,
intrinsics, name, stamp, depth). Pushing the same keyframe twice, from two robots, or back to
the server it was pulled from gives the same uuid, so a sync can never duplicate a keyframe even
when a crash lost the record of what was already pushed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ..geometry import Intrinsics
from .types import Keyframe

__all__ = ["KeyframeDatabase", "keyframe_uuid", "FLEET_NAMESPACE"]

FLEET_NAMESPACE = uuid.UUID("6f1d3c2a-9b7e-4c55-8a0e-2f4b8d1e7a90")   # fixed forever: uuids must not change


def keyframe_uuid(kf: Keyframe) -> uuid.UUID:
    """The keyframe's global id: a uuid5 of everything it is made of (pose bit for bit)."""
    intr = kf.intrinsics
    head = json.dumps([kf.name, int(kf.stamp_ns), hashlib.sha256(bytes(kf.image_jpeg)).hexdigest(),
                       intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy])
    body = np.asarray(kf.T_world_cam, dtype="<f8").tobytes()
    if kf.depth_m is not None:
        body += np.asarray(kf.depth_m, dtype="<f4").tobytes()
    return uuid.uuid5(FLEET_NAMESPACE, head + hashlib.sha256(body).hexdigest())


@runtime_checkable
class KeyframeDatabase(Protocol):
    """What a keyframe database offers (semantics as documented on ``KeyframeStore``).

    ``path`` names the database in messages (a file path, or a URL without password);
    ``revision`` changes with every committed write, also another process's, so a localizer
    refreshes when it differs from the one its map reflects.
    """

    readonly: bool
    schema_version: int

    @property
    def path(self) -> object: ...

    def add_keyframe(self, kf: Keyframe) -> int: ...
    def add_keyframes(self, kfs: Iterable[Keyframe]) -> list[int]: ...
    def get_keyframe(self, kf_id: int) -> Keyframe: ...
    def keyframe_ids(self) -> list[int]: ...
    def iter_keyframes(self) -> Iterator[Keyframe]: ...
    def poses(self) -> tuple[np.ndarray, np.ndarray]: ...
    def intrinsics(self) -> dict[int, Intrinsics]: ...
    def remove_keyframe(self, kf_id: int) -> None: ...
    def __len__(self) -> int: ...

    def put_blob(self, kf_id: int, backend: str, key: str, data: bytes, fingerprint: str) -> None: ...
    def get_blob(self, kf_id: int, backend: str, key: str, fingerprint: str) -> bytes | None: ...
    def iter_blobs(self, backend: str, key: str, fingerprint: str) -> Iterator[tuple[int, bytes]]: ...
    def blob_ids(self, backend: str, key: str, fingerprint: str) -> set[int]: ...
    def put_map_blob(self, backend: str, key: str, data: bytes, fingerprint: str) -> None: ...
    def get_map_blob(self, backend: str, key: str, fingerprint: str) -> bytes | None: ...
    def backends(self) -> dict[str, set[str]]: ...
    def blob_counts(self) -> dict[tuple[str, str], int]: ...

    @property
    def metadata(self) -> dict[str, str]: ...
    def set_metadata(self, key: str, value: str) -> None: ...
    @property
    def revision(self) -> int: ...
    def close(self) -> None: ...
