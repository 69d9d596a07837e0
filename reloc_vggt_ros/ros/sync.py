"""Pair two message streams by header stamp (what message_filters would do; it is not on PyPI).

Each stream keeps a short deque. A new item is paired with the closest-stamped item of the other
stream within ``slop_ns``; items of either stream older than a match can no longer pair and are
discarded and counted, so a camera whose camera_info never matches shows up in diagnostics.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import ConfigError

__all__ = ["StampMatcher"]

A = TypeVar("A")
B = TypeVar("B")


@dataclass
class StampMatcher(Generic[A, B]):
    """Exact-or-near stamp pairing of stream ``a`` with stream ``b`` (thread-compatible, not safe)."""

    slop_ns: int
    depth: int = 10
    unmatched_a: int = 0
    unmatched_b: int = 0
    _a: deque = field(init=False, repr=False)
    _b: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.slop_ns < 0:
            raise ConfigError(f"sync slop must be >= 0 ns, got {self.slop_ns}")
        if self.depth < 1:
            raise ConfigError(f"sync depth must be >= 1, got {self.depth}")
        self._a = deque()
        self._b = deque()

    def add_a(self, stamp_ns: int, item: A) -> tuple[int, A, B] | None:
        """Offer an ``a`` item; returns ``(stamp_ns, a, b)`` when it completes a pair."""
        pair = self._match(stamp_ns, self._b, "b")
        if pair is None:
            self._push(self._a, stamp_ns, item, "a")
            return None
        return stamp_ns, item, pair

    def add_b(self, stamp_ns: int, item: B) -> tuple[int, A, B] | None:
        """Offer a ``b`` item; returns ``(stamp_ns of a, a, b)`` when it completes a pair."""
        found = self._find(stamp_ns, self._a)
        if found is None:
            self._push(self._b, stamp_ns, item, "b")
            return None
        a_stamp, a_item = found
        self._drop_older(self._a, a_stamp, "a")
        return a_stamp, a_item, item

    def clear(self) -> None:
        """Forget every unpaired item (their stamps belong to a timeline that was left)."""
        self._a.clear()
        self._b.clear()

    def pending(self) -> tuple[int, int]:
        return len(self._a), len(self._b)

    def _find(self, stamp_ns: int, other: deque) -> tuple[int, object] | None:
        best = None
        for entry in other:
            d = abs(entry[0] - stamp_ns)
            if d <= self.slop_ns and (best is None or d < abs(best[0] - stamp_ns)):
                best = entry
        if best is not None:
            other.remove(best)
        return best

    def _match(self, stamp_ns: int, other: deque, name: str):
        found = self._find(stamp_ns, other)
        if found is None:
            return None
        self._drop_older(other, found[0], name)
        return found[1]

    def _drop_older(self, queue: deque, stamp_ns: int, name: str) -> None:
        while queue and queue[0][0] < stamp_ns:
            queue.popleft()
            self._count(name)

    def _push(self, queue: deque, stamp_ns: int, item: object, name: str) -> None:
        queue.append((stamp_ns, item))
        if len(queue) > self.depth:
            queue.popleft()
            self._count(name)

    def _count(self, name: str) -> None:
        if name == "a":
            self.unmatched_a += 1
        else:
            self.unmatched_b += 1
