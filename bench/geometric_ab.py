#!/usr/bin/env python3
"""In-process A/B of geometric query variants: one store, one localizer per variant, the same
query images, variants alternated per query (order flipped every other query), so load changes
hit every variant alike.

    .venv/bin/python -m bench.geometric_ab --scene SCENE_DIR --db DB [--size WxH] [--rounds N] \
        --variant NAME='{json options}' [--variant NAME=...] [--json FILE]

Options are the nested geometric config (``registry.make_config``, e.g.
``'{"query": {"features": {"max_upsample": 1.25}}, "lk": {"enabled": false}}'``) on top of the
``realtime`` preset (``"preset": "fast"`` to change it; ``"top_k"`` defaults to 8). DB is a database ``reloc-vggt bench localize --db`` wrote for that scene and
size. With ROUNDS > 1 the first round is not timed (cold caches). Prints per variant: median
translation / rotation error, 1%,1deg recall, wall and CPU p50 (CPU of all threads), ``lk_ms``
p50, tracked share of inliers, and the per-query errors (translation in % of the baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.eval.metrics import median_baseline
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.keyframes import KeyframeStore
from bench.commands import parse_size
from bench.localize import resized_image
from reloc_vggt_ros.localizer.geometric.localizer import GeometricLocalizer
from reloc_vggt_ros.localizer.registry import make_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.geometric_ab", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", required=True, type=Path, help="posed-image folder (poses.txt, split.txt)")
    parser.add_argument("--db", required=True, help="database bench localize --db wrote for this scene and size")
    parser.add_argument("--size", type=parse_size, help="query size WIDTHxHEIGHT (default: native)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the queries; the first is untimed if > 1")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                        help="a variant: name and nested geometric options as JSON (repeatable)")
    parser.add_argument("--json", type=Path, help="write every variant's per-query numbers here")
    args = parser.parse_args(argv)
    scene, db, size, rounds = args.scene, args.db, args.size, args.rounds
    size_arg = "native" if size is None else f"{size[0]}x{size[1]}"
    variants = {}
    for arg in args.variant:
        name, options = arg.split("=", 1)
        variants[name] = json.loads(options)
    store = KeyframeStore.open(db, readonly=True)
    locs = {name: GeometricLocalizer(store, make_config("geometric", **{"preset": "realtime", "top_k": 8, **v}))
            for name, v in variants.items()}
    queries = read_posed_folder(scene, "query")
    scale = median_baseline(np.stack([r.T_world_cam for r in read_posed_folder(scene, "db")]))
    images = [resized_image(q, size) for q in queries]
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
    if args.json:
        args.json.write_text(json.dumps({"scene": scene.name, "size": size_arg, "scene_scale_m": scale,
                                         "variants": {k: {"t_err": [float(x) for x in o["t"]],
                                                          "r_err_deg": [float(x) for x in o["r"]],
                                                          "wall_ms": o["wall"], "cpu_ms": o["cpu"]}
                                                      for k, o in out.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
