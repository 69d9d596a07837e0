#!/usr/bin/env python3
"""Single-thread CPU time per query of the geometric backend: what one idle core would need.

Usage: python -m bench.geometric_cpu_time SCENE_DIR PRESET [WIDTHxHEIGHT]
OpenCV and BLAS run on one thread, so process CPU time is not inflated by waiting on a busy
machine; each query is localized twice and the second run is timed (warm caches).
"""

import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"     # before numpy loads OpenBLAS

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from reloc_vggt_ros.data import read_posed_folder  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore  # noqa: E402
from bench.localize import _keyframe, _resized  # noqa: E402
from reloc_vggt_ros.localizer.registry import make_localizer  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    scene, preset = Path(argv[0]), argv[1]
    size = tuple(int(v) for v in argv[2].split("x")) if len(argv) == 3 else None
    db, queries = read_posed_folder(scene, "db"), read_posed_folder(scene, "query")
    with tempfile.TemporaryDirectory() as tmp, KeyframeStore.create(Path(tmp) / "x.db") as store:
        store.add_keyframes([_keyframe(r, size) for r in db])
        loc = make_localizer("geometric", store, preset=preset)
        cpu_ms = {}
        for q in queries[:4]:
            img, intr = _resized(q, size)
            for _ in range(2):
                c0 = time.process_time()
                loc.localize(img, intr)
                cpu_ms[q.name] = 1e3 * (time.process_time() - c0)
    print(f"{scene.name} {preset} {size or 'native'}: CPU ms per query (1 thread) "
          f"{ {k: round(v) for k, v in cpu_ms.items()} } median {np.median(list(cpu_ms.values())):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
