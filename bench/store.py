"""Time KeyframeStore operations on the shipped sample (for docs/database.md).

    .venv/bin/python -m bench.store [--n 100] [--json bench/results/store.json]

Inserts ``n`` copies of a 640x427 sample keyframe (~64 kB JPEG), each in its own transaction,
under ``synchronous=FULL`` (the store's setting) and ``NORMAL`` (for comparison), then times
``poses()`` and ``get_keyframe``. Absolute numbers depend on the disk's fsync latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample" / "fountain-P11-small"


def run(n: int) -> list[dict]:
    """One row per ``synchronous`` setting: ms per add_keyframe, per poses() of n, per get_keyframe."""
    rec = read_posed_folder(SAMPLE)[0]
    image = rec.path.read_bytes()
    rows = []
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
        rows.append({"synchronous": sync, "n": n, "image_kb": len(image) // 1024, "add_keyframe_ms": 1e3 * t_add,
                     "poses_ms": 1e3 * t_poses, "get_keyframe_ms": 1e3 * t_get})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="keyframes inserted")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    rows = run(args.n)
    for r in rows:
        print(f"synchronous={r['synchronous']:6s} add_keyframe {r['add_keyframe_ms']:6.2f} ms   poses() of {r['n']} "
              f"{r['poses_ms']:5.2f} ms   get_keyframe {r['get_keyframe_ms']:5.2f} ms  ({r['image_kb']} kB JPEG)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
