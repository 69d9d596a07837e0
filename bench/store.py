#!/usr/bin/env python3
"""Time KeyframeStore operations on the shipped sample (for docs/database.md).

    .venv/bin/python -m bench.store [--n 100]

Inserts ``n`` copies of a 640x427 sample keyframe (~64 kB JPEG), each in its own transaction,
under ``synchronous=FULL`` (the store's setting) and ``NORMAL`` (for comparison), then times
``poses()`` and ``get_keyframe``. Absolute numbers depend on the disk's fsync latency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reloc_vggt_ros.data import read_posed_folder  # noqa: E402
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    n = parser.parse_args().n
    rec = read_posed_folder(ROOT / "sample" / "fountain-P11-small")[0]
    image = rec.path.read_bytes()
    for sync in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory() as tmp, KeyframeStore.create(Path(tmp) / "bench.db") as store:
            store._conn.execute(f"PRAGMA synchronous = {sync}")  # noqa: SLF001 - comparison only
            t0 = time.perf_counter()
            for i in range(n):
                store.add_keyframe(Keyframe(f"kf{i}", image, rec.intrinsics, rec.T_world_cam))
            t_add = (time.perf_counter() - t0) / n
            t0 = time.perf_counter()
            for _ in range(100):
                store.poses()
            t_poses = (time.perf_counter() - t0) / 100
            t0 = time.perf_counter()
            for kf_id in store.keyframe_ids():
                store.get_keyframe(kf_id)
            t_get = (time.perf_counter() - t0) / n
            print(f"synchronous={sync:6s} add_keyframe {1e3 * t_add:6.2f} ms   poses() of {n} "
                  f"{1e3 * t_poses:5.2f} ms   get_keyframe {1e3 * t_get:5.2f} ms  ({len(image) // 1024} kB JPEG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
