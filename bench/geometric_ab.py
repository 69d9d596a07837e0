#!/usr/bin/env python3
"""In-process A/B of geometric query variants: one store, one localizer per variant, the same
query images, variants alternated per query (order flipped every other query), so load changes
hit every variant alike.

Usage: python -m bench.geometric_ab SCENE_DIR DB native|WxH ROUNDS NAME='{json options}' [NAME=...]
Options are the nested geometric config (``registry.make_config``, e.g.
``'{"query": {"features": {"max_upsample": 1.25}}, "lk": {"enabled": false}}'``) on top of the
``realtime`` preset (``"preset": "fast"`` to change it; ``"top_k"`` defaults to 8). DB is a database ``reloc-vggt bench localize --db`` wrote for that scene and
size. With ROUNDS > 1 the first round is not timed (cold caches). Prints per variant: median
translation / rotation error, 1%,1deg recall, wall and CPU p50 (CPU of all threads), ``lk_ms``
p50, tracked share of inliers, and the per-query errors (translation in % of the baseline).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.eval.metrics import median_baseline
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.keyframes import KeyframeStore
from bench.localize import _resized
from reloc_vggt_ros.localizer.geometric.localizer import GeometricLocalizer
from reloc_vggt_ros.localizer.registry import make_config


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__.splitlines()[3], file=sys.stderr)
        return 2
    scene, db, size_arg, rounds = Path(argv[0]), argv[1], argv[2], int(argv[3])
    size = None if size_arg == "native" else tuple(int(v) for v in size_arg.split("x"))
    variants = {}
    for arg in argv[4:]:
        name, options = arg.split("=", 1)
        variants[name] = json.loads(options)
    store = KeyframeStore.open(db, readonly=True)
    locs = {name: GeometricLocalizer(store, make_config("geometric", **{"preset": "realtime", "top_k": 8, **v}))
            for name, v in variants.items()}
    queries = read_posed_folder(scene, "query")
    scale = median_baseline(np.stack([r.T_world_cam for r in read_posed_folder(scene, "db")]))
    images = [_resized(q, size) for q in queries]
    out = {k: {"t": [np.inf] * len(queries), "r": [np.inf] * len(queries), "wall": [], "cpu": [], "lk": [],
               "tracked": []} for k in locs}
    for rnd in range(rounds):
        for qi, (q, (img, intr)) in enumerate(zip(queries, images)):
            order = list(locs) if (rnd + qi) % 2 == 0 else list(locs)[::-1]
            for k in order:
                t0, c0 = time.perf_counter(), time.process_time()
                res = locs[k].localize(img, intr)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                o = out[k]
                if res.T_world_cam is not None:
                    o["t"][qi], o["r"][qi] = pose_error(res.T_world_cam, q.T_world_cam)
                if rnd > 0 or rounds == 1:
                    o["wall"].append(1e3 * wall)
                    o["cpu"].append(1e3 * cpu)
                d = res.diagnostics
                o["lk"].append(d.get("lk_ms", 0.0))
                o["tracked"].append(d.get("lk_tracked", 0) / max(1, d.get("lk_attempted", 1)))
    print(f"scene {scene.name} size {size_arg} median db baseline {scale:.5f} (1% = {0.01 * scale:.6f})")
    for k, o in out.items():
        t, r = np.array(o["t"]), np.array(o["r"])
        recall = np.mean((t <= 0.01 * scale) & (r <= 1.0))
        print(f"{k:12s} median t {np.median(t):.6f} R {np.median(r):.4f} deg  1%,1deg {recall:.0%}  "
              f"wall p50 {np.median(o['wall']):.1f} ms  CPU p50 {np.median(o['cpu']):.1f} ms  "
              f"lk_ms p50 {np.median(o['lk']):.2f}  tracked {np.median(o['tracked']):.2f}")
        print("   t in % of baseline: " + " ".join(f"{100 * x / scale:.2f}" for x in t))
        print("   R in deg:           " + " ".join(f"{x:.4f}" for x in r))
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
