#!/usr/bin/env python3
"""UTM precision table: the same scene localized at its own origin and shifted by a huge offset.

    .venv/bin/python -m bench.huge_coordinates [--scene ../shared/data/fountain-P11] \
        [--shift 5e6 5e6 120] [--size 768x512] [--options JSON] [--json FILE]

Two databases are built from the scene's db split, one with the poses as stored and one with
every keyframe *and* query pose shifted by ``--shift`` metres (UTM-like world frames put camera
centres near 5e6 m). Every query is localized in both (geometric backend, ``--size`` images), its
error taken against its own frame's ground truth. A map that keeps its precision gives the same
errors and inlier counts in both; the table prints per query the errors at the origin and
shifted (mm, deg), the inliers, the differences, and their maximum. ``--options``: the nested
geometric config as JSON (``registry.make_config``), e.g.
``'{"map": {"triangulation": {"max_view_angle_deg": 0.001}}}'`` (no map points: the relative fallback).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.commands import parse_size
from bench.localize import keyframe_at, resized_image
from reloc_vggt_ros.data import PosedImage, read_posed_folder
from reloc_vggt_ros.geometry import pose_error, shift_T
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.localizer.registry import index_database, make_localizer

__all__ = ["DEFAULT_SHIFT", "localize_scene", "compare_shift", "format_table", "main"]

DEFAULT_SHIFT = (5e6, 5e6, 120.0)
DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


def localize_scene(db_recs: list[PosedImage], queries: list[PosedImage], size: tuple[int, int] | None,
                   db_path: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Per query: status, inliers, errors (m, deg) against its own pose and the pose returned."""
    with KeyframeStore.create(db_path, units="m", creator="bench huge_coordinates") as store:
        store.add_keyframes([keyframe_at(r, size) for r in db_recs])
        index_database(store, "geometric", **options)
        loc = make_localizer("geometric", store, **options)
        rows = []
        for q in queries:
            img, intr = resized_image(q, size)
            res = loc.localize(img, intr)
            row: dict[str, Any] = {"name": q.name, "status": res.status.value, "num_inliers": res.num_inliers,
                                   "t_err_m": None, "r_err_deg": None, "T_world_cam": None}
            if res.T_world_cam is not None:
                row["t_err_m"], row["r_err_deg"] = pose_error(res.T_world_cam, q.T_world_cam)
                row["T_world_cam"] = np.asarray(res.T_world_cam, np.float64).tolist()
            rows.append(row)
    return rows


def compare_shift(scene: Path | str, shift: tuple[float, float, float] = DEFAULT_SHIFT,
                  size: tuple[int, int] | None = None, options: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Localize ``scene``'s queries at the origin and with every pose shifted by ``shift`` (m)."""
    scene, options = Path(scene), dict(options or {})
    db_recs, queries = read_posed_folder(scene, "db"), read_posed_folder(scene, "query")
    moved = [[replace(r, T_world_cam=shift_T(r.T_world_cam, shift)) for r in recs] for recs in (db_recs, queries)]
    with tempfile.TemporaryDirectory(prefix="reloc-utm-") as tmp:
        origin = localize_scene(db_recs, queries, size, Path(tmp) / "origin.db", options)
        shifted = localize_scene(*moved, size, Path(tmp) / "shifted.db", options)
    rows = []
    for a, b in zip(origin, shifted):
        row = {"name": a["name"], "status": [a["status"], b["status"]],
               "inliers": [a["num_inliers"], b["num_inliers"]],
               "t_err_mm": [None if r["t_err_m"] is None else 1e3 * r["t_err_m"] for r in (a, b)],
               "r_err_deg": [a["r_err_deg"], b["r_err_deg"]], "T_world_cam_shifted": b["T_world_cam"]}
        both = None not in row["t_err_mm"]
        row["dt_mm"] = abs(row["t_err_mm"][1] - row["t_err_mm"][0]) if both else None
        row["dr_deg"] = abs(row["r_err_deg"][1] - row["r_err_deg"][0]) if both else None
        rows.append(row)
    paired = [r for r in rows if r["dt_mm"] is not None]
    return {"scene": scene.name, "shift_m": list(shift), "image_size": list(size) if size else "native",
            "options": options, "per_query": rows,
            "max_dt_mm": max((r["dt_mm"] for r in paired), default=None),
            "max_dr_deg": max((r["dr_deg"] for r in paired), default=None),
            "max_inlier_diff": max(abs(r["inliers"][1] - r["inliers"][0]) for r in rows),
            "n_unpaired": len(rows) - len(paired)}


def format_table(m: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"{m['scene']} at {m['image_size']}, shift {m['shift_m']} m",
             f"{'query':<12} {'t0 mm':>8} {'t mm':>8} {'dt mm':>8} {'r0 deg':>8} {'r deg':>8} {'dr deg':>8} "
             f"{'inl0':>5} {'inl':>5}"]
    for r in m["per_query"]:
        lines.append(f"{r['name']:<12} {f(r['t_err_mm'][0], '8.3f')} {f(r['t_err_mm'][1], '8.3f')} "
                     f"{f(r['dt_mm'], '8.4f')} {f(r['r_err_deg'][0], '8.4f')} {f(r['r_err_deg'][1], '8.4f')} "
                     f"{f(r['dr_deg'], '8.5f')} {r['inliers'][0]:>5} {r['inliers'][1]:>5}")
    lines.append(f"max difference: {f(m['max_dt_mm'], '.4f')} mm, {f(m['max_dr_deg'], '.5f')} deg, "
                 f"{m['max_inlier_diff']} inliers ({m['n_unpaired']} queries localized in only one frame)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.huge_coordinates", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DATA / "fountain-P11", help="posed-image folder")
    parser.add_argument("--shift", type=float, nargs=3, default=DEFAULT_SHIFT, metavar=("X", "Y", "Z"),
                        help="offset added to every camera centre, metres (default: 5e6 5e6 120)")
    parser.add_argument("--size", type=parse_size, help="image size WIDTHxHEIGHT (default: native)")
    parser.add_argument("--options", type=json.loads, default={}, help="nested geometric options as JSON")
    parser.add_argument("--json", type=Path, help="write the table's numbers here")
    args = parser.parse_args(argv)
    m = compare_shift(args.scene, tuple(args.shift), args.size, args.options)
    print(format_table(m))
    if args.json:
        args.json.write_text(json.dumps(m, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
