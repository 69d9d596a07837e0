"""Group the frames of a camera rig by stamp: one rig query per instant, from the cameras present.

Each camera's image is first paired with its camera_info (``sync.StampMatcher``); the paired
frames of all cameras meet here. A frame joins the pending set whose stamp is within ``slop_ns``
of its own (a set holds one frame per camera), else it opens a new set. A set is released

* complete, as soon as every camera has a frame in it (older pending sets are then dropped and
  counted: their missing frames can no longer arrive in order);
* partial, once frames ``wait_ns`` newer than it have arrived from any camera: a camera that
  stopped publishing (or lags more than ``wait_ns``) never blocks the others, the set goes out
  with the cameras present and names the missing ones.

Everything is driven by the stamps (not the wall clock), so bags played at any rate and sim time
behave like live cameras. ROS-free: the node feeds :class:`RigInputs` (per camera image <->
camera_info pairing, then :class:`RigSync`) from its subscription callbacks; ``RigConfig`` is the
node's ``rig.*`` parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..config import require_non_negative, setting
from ..errors import ConfigError
from .sync import StampMatcher

__all__ = ["RigConfig", "RigSet", "RigSync", "RigInputs"]

_CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RigConfig:
    """A camera rig (parameters ``rig.*``): several cameras localized as one base pose per instant."""

    cameras: tuple[str, ...] = setting((), "camera names of a rig; camera N subscribes N/image (or "
                                           "N/image/compressed) and N/camera_info, its extrinsic base_frame -> "
                                           "header.frame_id from TF; [] = one camera on image + camera_info")
    slop_s: float = setting(0.02, "images of the rig's cameras stamped within this of each other are one rig query")
    wait_s: float = setting(0.1, "a rig query goes out without the cameras whose image is this much late (s)")
    silent_after_s: float = setting(1.0, "a camera with no image for this long (by stamps) is reported silent")

    def __post_init__(self) -> None:
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"rig.cameras must be unique, got {list(self.cameras)}")
        for name in self.cameras:
            if not _CAMERA_NAME.fullmatch(name):
                raise ConfigError(f"rig.cameras: {name!r} is not a topic name token (letters, digits, '_', "
                                  "starting with a letter)")
        require_non_negative(self, "rig", "slop_s", "wait_s", "silent_after_s")

F = TypeVar("F")


@dataclass
class RigSet(Generic[F]):
    """The frames of one rig instant: ``frames[camera] = (stamp_ns, frame)``; ``missing`` cameras."""

    stamp_ns: int
    frames: dict[str, tuple[int, F]]
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class RigSync(Generic[F]):
    """Stamp grouping of the frames of ``cameras`` (thread-compatible, not thread-safe)."""

    cameras: list[str]
    slop_ns: int
    wait_ns: int
    depth: int = 10
    dropped_sets: int = 0                     # pending sets dropped (older than a completed one, or overflow)
    last_stamp: dict[str, int] = field(default_factory=dict)   # newest stamp seen per camera
    _pending: list[RigSet[F]] = field(init=False, default_factory=list, repr=False)
    _newest: int = field(init=False, default=-1, repr=False)

    def __post_init__(self) -> None:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"a rig needs one or more uniquely named cameras, got {self.cameras}")
        if self.slop_ns < 0 or self.wait_ns < 0:
            raise ConfigError(f"rig sync slop and wait must be >= 0 ns, got {self.slop_ns}, {self.wait_ns}")
        if self.depth < 1:
            raise ConfigError(f"rig sync depth must be >= 1, got {self.depth}")

    def add(self, camera: str, stamp_ns: int, frame: F) -> list[RigSet[F]]:
        """Offer one camera's frame; returns the sets it releases (oldest first, usually none or one)."""
        if camera not in self.cameras:
            raise ConfigError(f"camera {camera!r} is not in the rig {self.cameras}")
        self.last_stamp[camera] = max(stamp_ns, self.last_stamp.get(camera, stamp_ns))
        self._newest = max(self._newest, stamp_ns)
        target = min((s for s in self._pending if camera not in s.frames and abs(s.stamp_ns - stamp_ns) <= self.slop_ns),
                     key=lambda s: abs(s.stamp_ns - stamp_ns), default=None)
        if target is None:
            target = RigSet(stamp_ns, {}, [])
            self._pending.append(target)
            self._pending.sort(key=lambda s: s.stamp_ns)
        target.frames[camera] = (stamp_ns, frame)
        out: list[RigSet[F]] = []
        if len(target.frames) == len(self.cameras):
            older = [s for s in self._pending if s.stamp_ns < target.stamp_ns]
            out += [self._partial(s) for s in older if self._newest - s.stamp_ns > self.wait_ns]
            self.dropped_sets += len(older) - len(out)
            self._pending = [s for s in self._pending if s.stamp_ns > target.stamp_ns]
            out.append(self._finish(target))
            return out
        while self._pending and self._newest - self._pending[0].stamp_ns > self.wait_ns:
            out.append(self._partial(self._pending.pop(0)))
        while len(self._pending) > self.depth:
            self._pending.pop(0)
            self.dropped_sets += 1
        return out

    def clear(self) -> None:
        """Forget every pending frame and stamp (a backwards time jump); the drop count stays."""
        self._pending.clear()
        self.last_stamp.clear()
        self._newest = -1

    def silent_cameras(self, timeout_ns: int) -> list[str]:
        """Cameras with no frame within ``timeout_ns`` of the newest stamp of any camera."""
        return [c for c in self.cameras if self._newest - self.last_stamp.get(c, -timeout_ns - 1) > timeout_ns]

    def _partial(self, s: RigSet[F]) -> RigSet[F]:
        if s in self._pending:
            self._pending.remove(s)
        return self._finish(s)

    def _finish(self, s: RigSet[F]) -> RigSet[F]:
        s.missing = [c for c in self.cameras if c not in s.frames]
        s.frames = {c: s.frames[c] for c in self.cameras if c in s.frames}     # rig order
        return s


@dataclass
class RigInputs:
    """Per camera image <-> camera_info pairing (``StampMatcher``), then stamp grouping (``RigSync``).

    ``add_image`` / ``add_info`` return the rig sets a message releases; ``frames_in[camera]``
    counts each camera's images, ``unmatched[camera]`` its images dropped without camera_info.
    """

    config: RigConfig
    pair_slop_ns: int
    depth: int = 10
    sync: RigSync[Any] = field(init=False)
    _pairs: dict[str, StampMatcher] = field(init=False, repr=False)
    frames_in: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        cams = list(self.config.cameras)
        self.sync = RigSync(cams, int(self.config.slop_s * 1e9), int(self.config.wait_s * 1e9), depth=self.depth)
        self._pairs = {c: StampMatcher(self.pair_slop_ns, depth=self.depth) for c in cams}
        self.frames_in = {c: 0 for c in cams}

    def add_image(self, camera: str, stamp_ns: int, image: Any, make: Any) -> list[RigSet[Any]]:
        """Offer an image; ``make(stamp_ns, image, info)`` builds the frame once it has its camera_info."""
        self.frames_in[camera] += 1
        return self._group(camera, self._pairs[camera].add_a(stamp_ns, image), make)

    def add_info(self, camera: str, stamp_ns: int, info: Any, make: Any) -> list[RigSet[Any]]:
        """Offer a camera_info (see :meth:`add_image`)."""
        return self._group(camera, self._pairs[camera].add_b(stamp_ns, info), make)

    def _group(self, camera: str, pair: tuple[int, Any, Any] | None, make: Any) -> list[RigSet[Any]]:
        return [] if pair is None else self.sync.add(camera, pair[0], make(*pair))

    @property
    def unmatched(self) -> dict[str, int]:
        return {c: m.unmatched_a for c, m in self._pairs.items()}

    def silent(self) -> list[str]:
        return self.sync.silent_cameras(int(self.config.silent_after_s * 1e9))

    def clear(self) -> None:
        """Forget every unpaired and pending frame (a backwards time jump)."""
        for m in self._pairs.values():
            m.clear()
        self.sync.clear()
