#!/usr/bin/env python3
"""Single-thread CPU time per query of the geometric backend: what one idle core would need.

    .venv/bin/python -m bench.geometric_cpu_time --scene ../shared/data/fountain-P11 --preset realtime \
        [--size 640x480] [--json FILE]

OpenCV and BLAS run on one thread, so process CPU time is not inflated by waiting on a busy
machine; each query is localized twice and the second run is timed (warm caches).
"""

import argparse
import json
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
from bench.commands import parse_size  # noqa: E402
from bench.localize import keyframe_at, resized_image  # noqa: E402
from reloc_vggt_ros.localizer.registry import make_localizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.geometric_cpu_time", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", required=True, type=Path, help="posed-image folder (poses.txt, split.txt)")
    parser.add_argument("--preset", default="realtime", help="geometric preset (default: realtime)")
    parser.add_argument("--size", type=parse_size, help="resize every image to WIDTHxHEIGHT (default: native)")
    parser.add_argument("--json", type=Path, help="write the per-query CPU times here")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    db, queries = read_posed_folder(args.scene, "db"), read_posed_folder(args.scene, "query")
    with tempfile.TemporaryDirectory() as tmp, KeyframeStore.create(Path(tmp) / "x.db") as store:
        store.add_keyframes([keyframe_at(r, args.size) for r in db])
        loc = make_localizer("geometric", store, preset=args.preset)
        cpu_ms = {}
        for q in queries[:4]:
            img, intr = resized_image(q, args.size)
            for _ in range(2):
                c0 = time.process_time()
                loc.localize(img, intr)
                cpu_ms[q.name] = 1e3 * (time.process_time() - c0)
    median = float(np.median(list(cpu_ms.values())))
    print(f"{'query':24s} CPU ms (1 thread)")
    for name, ms in cpu_ms.items():
        print(f"{name:24s} {ms:8.0f}")
    print(f"{args.scene.name} {args.preset} {args.size or 'native'}: median {median:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"scene": args.scene.name, "preset": args.preset,
                                         "size": list(args.size) if args.size else "native",
                                         "cpu_ms": cpu_ms, "cpu_ms_median": median}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
