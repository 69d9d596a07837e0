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
behave like live cameras. ROS-free: the node feeds it from its subscription callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import ConfigError

__all__ = ["RigSet", "RigSync"]

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
