"""Inference off the executor thread: a newest-wins slot for queries, a FIFO for keyframes.

Subscription callbacks only ``offer`` work and return at once. The worker thread takes the newest
query (older ones are counted as dropped, never queued behind a slow model) and every pending
keyframe (mapping must not lose one; they are drained before the thread stops). Queries that
arrive while the consumer says its queries are cheap (``keep_backlog``: camera-rate tracking
holds a track) are kept, up to ``max_queries``, and answered in order (a tracked frame costs a
fraction of the frame period, so a backlog left by one slow frame drains within a few frames);
one arriving otherwise (a relocalization is running) drops every waiting query, as before, so
no frame is answered late behind a relocalization.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

__all__ = ["NewestSlot", "Worker"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")


class NewestSlot(Generic[T]):
    """Queue of waiting items: ``put`` replaces every unread item (newest wins), or with
    ``backlog=True`` keeps up to ``depth`` of them; every item pushed out, or skipped by
    ``take(newest_only=True)``, counts as dropped."""

    def __init__(self, depth: int = 1) -> None:
        self._items: deque[T] = deque()
        self.depth = max(1, int(depth))
        self.dropped = 0
        self.offered = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, backlog: bool = False) -> bool:
        """Store ``item``; True if an older unread item was dropped."""
        self.offered += 1
        keep = self.depth - 1 if backlog else 0
        dropped = max(0, len(self._items) - keep)
        for _ in range(dropped):
            self._items.popleft()
        self.dropped += dropped
        self._items.append(item)
        return dropped > 0

    def take(self, newest_only: bool = True) -> T | None:
        """The newest item (older ones dropped), or with ``newest_only=False`` the oldest."""
        if not self._items:
            return None
        if newest_only:
            self.dropped += len(self._items) - 1
            item = self._items[-1]
            self._items.clear()
            return item
        return self._items.popleft()


class Worker(Generic[T, K]):
    """One thread running ``handle_query`` on the newest query and ``handle_keyframe`` on each keyframe.

    Keyframes are handled first (they are cheap and must not starve). ``stop(drain=True)`` finishes
    every queued keyframe (and the job in hand) before returning; a waiting query is discarded.
    """

    def __init__(self, handle_query: Callable[[T], None], handle_keyframe: Callable[[K], None],
                 max_keyframes: int = 1000, min_query_interval_s: float = 0.0, name: str = "reloc-worker",
                 max_queries: int = 1, keep_backlog: Callable[[], bool] | None = None) -> None:
        self._handle_query = handle_query
        self._handle_keyframe = handle_keyframe
        self._keep_backlog = keep_backlog
        self._cv = threading.Condition()
        self._queries: NewestSlot[T] = NewestSlot(max_queries)
        self._keyframes: deque[K] = deque()
        self._max_keyframes = max_keyframes
        self.keyframes_dropped = 0
        self._min_interval = float(min_query_interval_s)
        self._next_query_at = 0.0
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self._queries.dropped

    def offer_query(self, item: T) -> bool:
        """Hand a query to the worker; True if it replaced (dropped) an unread one."""
        backlog = self._backlog()
        with self._cv:
            dropped = self._queries.put(item, backlog)
            self._cv.notify()
        return dropped

    def offer_keyframe(self, item: K) -> bool:
        """Queue a keyframe; False (and counted) only if ``max_keyframes`` are already waiting."""
        with self._cv:
            if len(self._keyframes) >= self._max_keyframes:
                self.keyframes_dropped += 1
                return False
            self._keyframes.append(item)
            self._cv.notify()
        return True

    def pending_keyframes(self) -> int:
        with self._cv:
            return len(self._keyframes)

    def idle(self) -> bool:
        with self._cv:
            return not self._busy and not self._keyframes and not self._queries

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the thread; with ``drain`` every queued keyframe is handled first."""
        with self._cv:
            self._stopping = True
            if not drain:
                self._keyframes.clear()
                self._queries.take()
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next(self) -> tuple[str, object] | None:
        with self._cv:
            while True:
                if self._keyframes:
                    self._busy = True
                    return "keyframe", self._keyframes.popleft()
                wait_s = self._next_query_at - time.monotonic()
                if wait_s <= 0 or self._stopping:  # throttled queries wait; keyframes never do
                    query = self._queries.take(newest_only=not self._backlog())
                    if query is not None and not self._stopping:  # a stale query is not worth the wait
                        self._busy = True
                        self._next_query_at = time.monotonic() + self._min_interval
                        return "query", query
                self._busy = False
                if self._stopping:
                    return None
                self._cv.wait(wait_s if wait_s > 0 and self._queries else None)

    def _backlog(self) -> bool:
        try:
            return self._keep_backlog is not None and bool(self._keep_backlog())
        except Exception:  # noqa: BLE001 - a failing predicate means newest wins
            return False

    def _run(self) -> None:
        while (job := self._next()) is not None:
            kind, item = job
            try:
                if kind == "keyframe":
                    self._handle_keyframe(item)  # type: ignore[arg-type]
                else:
                    self._handle_query(item)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the worker must survive any one bad frame
                logger.exception("worker: %s handler failed", kind)
