"""Background relocalization in a worker process, so it never competes with tracking for the GIL.

On a thread, a relocalization (features, matching, PnP: ~50-250 ms of mixed Python and OpenCV)
holds the GIL for much of its time, and every tracked frame meanwhile waits for it at each of its
many small numpy / OpenCV calls: measured on the 30 Hz stream (``bench.stream``), tracked frames
took 30-57 ms instead of ~13 ms while one ran, and frames were dropped. A worker process has its
own interpreter: the relocalization runs on the other core, at a lower OS priority
(``os.nice``), with one OpenCV / matching thread, and the tracking path only pays for sending
the image (~1 ms).

:class:`ProcessRelocalizer` spawns the process with a *recipe* of the cheap localizer (the
keyframe database's path and the backend's config, :func:`recipe_of`): the child opens the
database read-only and builds its own map and cascade (memory for a second copy of the map's
index; ``tracking.background_process: false`` keeps the thread). Requests are answered in order;
``refresh`` (keyframes added live) is forwarded so the child re-reads the database. If the child
dies every pending and later request fails with the reason, and the caller falls back to its
own thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ...geometry import Intrinsics
from ..base import Localizer, PosePrior, RelocResult
from .config import CascadeSettings

__all__ = ["ProcessRelocalizer", "Recipe", "recipe_of"]

logger = logging.getLogger(__name__)

NICE = 5        # the child's OS priority below the tracking process's


@dataclass(frozen=True)
class Recipe:
    """How to rebuild a localizer in another process (picklable)."""

    database: Path
    config: Any                  # the geometric backend's GeometricConfig


def recipe_of(localizer: Localizer) -> Recipe | None:
    """The recipe of ``localizer`` (the geometric backend over a database file), else None."""
    from ..geometric import GeometricLocalizer

    path = getattr(getattr(localizer, "store", None), "path", None)
    if not isinstance(localizer, GeometricLocalizer) or path is None or not Path(path).is_file():
        return None
    return Recipe(Path(path), localizer.config)


def _serve(conn: Any) -> None:
    """The child: build the cascade over a read-only copy of the map, answer requests in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when it ends (pipe closed)
    recipe, settings = conn.recv()
    try:
        os.nice(NICE)
    except OSError:
        pass
    from ...keyframes import KeyframeStore
    from ..geometric import GeometricLocalizer
    from .cascade import Cascade, full_pass

    cfg = recipe.config
    cfg = dataclasses.replace(cfg, num_threads=1, query=dataclasses.replace(cfg.query, match_threads=1))
    try:
        store = KeyframeStore.open(recipe.database, readonly=True)
        cheap = GeometricLocalizer(store, cfg)
        cascade = Cascade(cheap, full_pass(cheap, settings), settings)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which falls back to its thread
        conn.send(("dead", f"background process could not build its localizer: {err!r}"))
        return
    conn.send(("ready", ""))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "close":
            break
        if kind == "refresh":
            try:
                cascade.refresh()
            except Exception as err:  # noqa: BLE001 - the old map keeps answering
                logger.warning("background process: refresh failed: %r", err)
            continue
        try:
            res = cascade.localize(*msg[1:])
            conn.send(("result", res))
        except Exception as err:  # noqa: BLE001 - one failed query must not end the process
            conn.send(("error", repr(err)))
    store.close()


class ProcessRelocalizer:
    """Relocalizations of ``recipe``'s localizer (as a :class:`Cascade`) in a spawned process."""

    def __init__(self, recipe: Recipe, settings: CascadeSettings) -> None:
        # a fresh interpreter running this module (not multiprocessing's spawn: that re-runs the
        # parent's __main__, which a script without a main guard cannot take)
        mine, theirs = socket.socketpair()
        code = f"from {__name__} import serve_fd; serve_fd({theirs.fileno()})"
        self._proc = subprocess.Popen([sys.executable, "-c", code],
                                      pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(mine.detach())
        self._conn.send((recipe, settings))
        self._lock = threading.Lock()
        self._pending: deque[Future] = deque()
        self.dead = ""                       # why the process is gone ('' while it runs)
        self.ready = threading.Event()
        self._reader = threading.Thread(target=ProcessRelocalizer._read, args=(weakref.ref(self), self._conn),
                                        name="tracking-reloc-reader", daemon=True)   # holds no strong ref
        self._reader.start()
        self._finalizer = weakref.finalize(self, ProcessRelocalizer._stop, self._conn, self._proc)

    def submit(self, image: np.ndarray, intrinsics: Intrinsics, stamp_ns: int, prior: PosePrior | None) -> Future:
        """A future of the relocalization of this frame (its exception says why if the process died)."""
        fut: Future = Future()
        with self._lock:
            if self.dead:
                fut.set_exception(RuntimeError(self.dead))
                return fut
            self._pending.append(fut)
            try:
                self._conn.send(("localize", image, intrinsics, stamp_ns, prior))
            except (OSError, ValueError) as err:
                self._pending.pop()
                fut.set_exception(RuntimeError(f"background process unreachable: {err!r}"))
        return fut

    def refresh(self) -> None:
        with self._lock:
            if not self.dead:
                try:
                    self._conn.send(("refresh",))
                except (OSError, ValueError):
                    pass

    @staticmethod
    def _read(ref: "weakref.ref[ProcessRelocalizer]", conn: Any) -> None:
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                kind, value = "dead", "background process ended"
            self = ref()
            if self is None:
                return
            if kind == "ready":
                self.ready.set()
                continue
            if kind == "dead":
                self._die(value)
                return
            with self._lock:
                fut = self._pending.popleft() if self._pending else None
            if fut is None:
                continue
            if kind == "result":
                fut.set_result(value)
            else:
                fut.set_exception(RuntimeError(f"background relocalization failed: {value}"))

    def _die(self, why: str) -> None:
        with self._lock:
            self.dead = self.dead or why
            pending, self._pending = list(self._pending), deque()
        self.ready.set()
        for fut in pending:
            fut.set_exception(RuntimeError(self.dead))

    def close(self) -> None:
        """End the process (a running query is abandoned)."""
        with self._lock:
            self.dead = self.dead or "closed"
        self._finalizer()

    @staticmethod
    def _stop(conn: Any, proc: subprocess.Popen) -> None:
        try:
            conn.send(("close",))
        except (OSError, ValueError):
            pass
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2.0)
        conn.close()


def serve_fd(fd: int) -> None:
    """The child's entry point: serve on the socket ``fd`` passed by the parent."""
    _serve(Connection(fd))
