"""Replacing a database file atomically: whoever opens the target sees the old file or the new one.

``db build`` and ``KeyframeStore.backup(target)`` write a complete database into a hidden
temporary file beside the target (same directory, so same filesystem), fsync it, and
``os.replace`` it onto the target, then fsync the directory so the rename itself is durable.
A process killed at any moment leaves the previous target untouched (at worst a stray
``.NAME.<what>-PID`` beside it); a power cut after the replace keeps the new file.

The target's own ``-wal`` must not meet the new file (SQLite would replay it into it), so it is
removed before the move, after checkpointing it into the old file: that keeps the old file
whole even if the process dies between the two steps.
"""

from __future__ import annotations

import glob
import logging
import os
import sqlite3
from pathlib import Path

__all__ = ["remove_db_files", "replace_db_file", "temp_beside"]

logger = logging.getLogger(__name__)

_SIDE_FILES = ("-wal", "-shm", "-journal")


def temp_beside(target: Path, what: str) -> Path:
    """A fresh hidden per-process temporary path in the target's directory (``.NAME.<what>-PID``).

    Leftovers of killed processes (their PID no longer runs) are removed first, so repeated
    crashes do not pile up copies of the map.
    """
    for old in target.parent.glob(f".{glob.escape(target.name)}.{what}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            remove_db_files(old)
    tmp = target.with_name(f".{target.name}.{what}-{os.getpid()}")
    remove_db_files(tmp)
    return tmp


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def remove_db_files(path: Path, keep_main: bool = False) -> None:
    """Delete a database file and its SQLite side files (only the side files with ``keep_main``)."""
    for suffix in _SIDE_FILES + (() if keep_main else ("",)):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def replace_db_file(tmp: Path, target: Path) -> None:
    """Move the complete, closed database ``tmp`` onto ``target`` atomically and durably."""
    _fsync(tmp)
    _checkpoint_into_main(target)
    remove_db_files(target, keep_main=True)
    os.replace(tmp, target)
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    """fsync a file, or a directory (its entries: a rename into it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint_into_main(path: Path) -> None:
    """Fold a leftover ``-wal`` (e.g. of a killed writer) into ``path`` so the file alone is whole."""
    if not (path.is_file() and Path(f"{path}-wal").is_file()):
        return
    try:
        conn = sqlite3.connect(str(path), timeout=10.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error as err:  # not a database (any more): it is being replaced on purpose
        logger.warning("could not checkpoint the WAL of %s before replacing it: %s", path, err)
