#!/usr/bin/env python3
"""Lens-model table: a real scene seen through each ROS distortion model, localized with and without its coefficients.

    .venv/bin/python -m bench.camera_models [--scene ../shared/data/fountain-P11] [--size 768x512] \
        [--preset default] [--models plumb_bob equidistant] [--json FILE]

Every image of the (undistorted) scene is resized to ``--size`` and warped through a known lens of
each model (``data.distort.write_distorted_folder``: OpenCV remap, same K and poses), then the db
split is built into a database and every query localized (geometric backend, ``bench.localize``)
twice: with ``distortion.txt`` (keypoints undistorted, in the keyframes and the queries) and
without it (the same raw images taken for pinhole). The pinhole row is the undistorted scene at
the same size. Columns: queries localized, median error (cm, deg), recall at 5 cm / 1 deg and at
1 % of the median db baseline / 1 deg, median PnP inliers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.commands import fmt as f, parse_size
from bench.localize import bench_localize
from reloc_vggt_ros.data.distort import write_distorted_folder
from reloc_vggt_ros.geometry import Distortion

__all__ = ["LENSES", "run_lens", "compare_lenses", "format_table", "main"]

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
# one lens per model, each bending the image corner of fountain-P11 by ~11 % of its radius
# (~40 px at 768x512): a typical wide-angle lens
LENSES: dict[str, Distortion] = {
    "plumb_bob": Distortion("plumb_bob", (-0.28, 0.09, 0.0008, -0.0005, -0.012)),
    "rational_polynomial": Distortion("rational_polynomial", (0.6, -0.1, 0.0008, -0.0005, 0.01, 0.9, 0.0, 0.02)),
    "equidistant": Distortion("equidistant", (0.02, -0.01, 0.005, -0.001)),
}


def run_lens(scene: Path | str, lens: Distortion | None, use_coefficients: bool, size: tuple[int, int] | None,
             workdir: Path, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table row: ``scene`` through ``lens`` (None: pinhole), localized with or without its coefficients."""
    name = "pinhole" if lens is None else lens.model
    folder = write_distorted_folder(scene, workdir / f"{name}-{use_coefficients}", lens, size,
                                    write_distortion=use_coefficients)
    m = bench_localize(folder, "geometric", options=options)
    inliers = [q["num_inliers"] for q in m["per_query"] if q["status"] == "ok"]
    return {"model": name, "coefficients": use_coefficients or lens is None,
            "distortion": None if lens is None else str(lens),
            "n_localized": m["n_localized"], "n_queries": m["n_queries"],
            "median_cm": None if m["median_translation_m"] is None else 100 * m["median_translation_m"],
            "median_deg": m["median_rotation_deg"], "recall": m["recall"],
            "median_inliers": float(np.median(inliers)) if inliers else 0.0,
            "per_query": [{k: q[k] for k in ("name", "status", "t_err_m", "r_err_deg", "num_inliers")}
                          for q in m["per_query"]]}


def compare_lenses(scene: Path | str, size: tuple[int, int] | None, models: list[str],
                   options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pinhole row, then each model with and without its coefficients."""
    with tempfile.TemporaryDirectory(prefix="reloc-lens-") as tmp:
        rows = [run_lens(scene, None, True, size, Path(tmp), options)]
        for model in models:
            rows += [run_lens(scene, LENSES[model], use, size, Path(tmp), options) for use in (True, False)]
    return {"scene": Path(scene).name, "image_size": list(size) if size else "native", "options": options or {},
            "rows": rows}


def format_table(m: dict[str, Any]) -> str:
    lines = [f"{m['scene']} at {m['image_size']}, geometric {m['options'] or 'default'}",
             f"{'model':<20} {'coefficients':<12} {'localized':>9} {'median cm':>9} {'median deg':>10} "
             f"{'5cm/1deg':>8} {'1%/1deg':>8} {'inliers':>7}"]
    for r in m["rows"]:
        used = "-" if r["distortion"] is None else "used" if r["coefficients"] else "ignored"
        lines.append(f"{r['model']:<20} {used:<12} "
                     f"{r['n_localized']:>5}/{r['n_queries']:<3} {f(r['median_cm'], '9.3f')} "
                     f"{f(r['median_deg'], '10.4f')} {r['recall']['5cm_1deg']:>8.0%} {r['recall']['1pct_1deg']:>8.0%} "
                     f"{r['median_inliers']:>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.camera_models", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DATA / "fountain-P11", help="posed-image folder (pinhole)")
    parser.add_argument("--size", type=parse_size, default=(768, 512), help="image size WIDTHxHEIGHT (768x512)")
    parser.add_argument("--preset", default="default", help="geometric preset (default)")
    parser.add_argument("--models", nargs="+", choices=list(LENSES), default=list(LENSES), help="lens models")
    parser.add_argument("--json", type=Path, help="write the table's numbers here")
    args = parser.parse_args(argv)
    m = compare_lenses(args.scene, args.size, args.models, {"preset": args.preset})
    print(format_table(m))
    if args.json:
        args.json.write_text(json.dumps(m, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
