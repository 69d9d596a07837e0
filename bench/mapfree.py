#!/usr/bin/env python3
"""Map-free relocalization on the shared scenes: Track 1 and Track 2 tables by viewing-angle bucket.

    .venv/bin/python -m bench.mapfree [--scene ../shared/data/fountain-P11 ...] [--backend geometric] \
        [--work DIR] [--window 3] [--options JSON] [--json FILE]
    reloc-vggt bench mapfree ...                       (the same)

The scenes are converted (``mapfree convert``, default buckets 0-10-20-40-180 deg) into
``--work`` (a temporary folder by default); every reference gets a depth image triangulated from
the source folder's views that its scene does not contain (``mapfree.depth``, suffix ``tri``).
Rows, each over the evaluated frames of its set:

* ``T1 two-view``: Track 1, the essential-matrix pose (unit baseline: rotation and direction only,
  ``diagnostics["two_view_T_world_cam"]``); its metric errors are not meaningful;
* ``T1 depth``: Track 1, metric scale from the triangulated reference depth (scale ``unknown``
  where a scene has no depth: then the two-view pose is what is scored);
* ``T2 odometry``: Track 2, each evaluated frame with its ``window - 1`` predecessors and their
  (exact) device poses;
* ``T2 odometry+depth``: the same, with the Track 2 reference's own triangulated depth (from the
  views its scene does not contain, window frames included: fewer than Track 1's);
* ``T1 ..., T2 frames``: Track 1 on the query images Track 2 scores (same reference) — the
  same-frame comparison with the ``T2`` rows.

Columns: frames, pose AUC @ 5/10/20 deg of max(rotation, translation-direction error), precision
at VCRE < 90 px and at (25 cm, 5 deg), median translation / rotation error, OK count, OK-but-wrong
count (OKx: OK and not within 25 cm / 5 deg) and the
median wall / CPU time per evaluated frame (a Track 2 frame's time covers its whole window).
A frame without a pose counts as a failure (infinite error), as the challenge counts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reloc_vggt_ros.eval.mapfree_metrics import (SCANNET_AUC_THRESHOLDS_DEG, T_THRESHOLD_M, R_THRESHOLD_DEG,
                                                 VCRE_THRESHOLD_PX, pose_auc, relative_pose_errors, vcre_px)
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.mapfree.convert import convert_posed_folder
from reloc_vggt_ros.mapfree.dataset import read_dataset, read_info
from reloc_vggt_ros.mapfree.depth import TRIANGULATED_SUFFIX, write_triangulated_depth
from reloc_vggt_ros.mapfree.localize import dataset_track, localize_scene
from reloc_vggt_ros.mapfree.registry import DEFAULT_MAPFREE_BACKEND, make_mapfree_localizer

__all__ = ["run_mapfree_bench", "summarize", "format_table", "main"]

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SCENES = ("fountain-P11", "Herz-Jesus-P8", "entry-P10", "middlebury-temple-ring")


def _frame_rows(dataset: Path, backend: str, options: dict[str, Any], depth: bool) -> list[dict[str, Any]]:
    """One row per evaluated frame: errors of the answer (and of the two-view pose), timing."""
    track, offset, step = dataset_track(dataset)
    info = read_info(dataset).get("scenes", {})
    localizer = make_mapfree_localizer(backend, options)
    rows = []
    for scene in read_dataset(dataset):
        meta = info.get(scene.name, {})
        by_name = {q["name"]: q for q in meta.get("queries", [])}
        for o in localize_scene(localizer, scene, track, offset, step, TRIANGULATED_SUFFIX if depth else None):
            gt = scene.query(o.name)
            q = by_name.get(o.name, {})
            row: dict[str, Any] = {
                "scene": scene.name, "name": o.name, "source": q.get("source"), "bucket": meta.get("bucket"),
                "angle_deg": q.get("angle_deg"), "baseline": q.get("baseline"), "status": o.result.status.value,
                "scale": o.result.diagnostics.get("scale"), "latency_s": o.latency_s, "cpu_s": o.cpu_s,
                "reason": o.result.reason}
            for key in ("two_view_rotation_gap_deg", "two_view_direction_gap_deg", "odometry_depth_gap_rel"):
                if key in o.result.diagnostics:                      # Track 2's consistency checks
                    row[key] = o.result.diagnostics[key]
            for key, T in (("", o.result.T_world_cam),
                           ("two_view_", o.result.diagnostics.get("two_view_T_world_cam"))):
                if T is None:
                    continue
                T = np.asarray(T, float)
                row[key + "t_err"], row[key + "r_err"] = pose_error(T, gt.T_world_cam)
                row[key + "vcre_px"] = vcre_px(T, gt.T_world_cam, gt.intrinsics)
                row[key + "pair_err_deg"] = max(relative_pose_errors(T, gt.T_world_cam))
            rows.append(row)
            logger.info("%s %s: %s %s", scene.name, o.name, o.result.status.value, o.result.reason)
    return rows


def summarize(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    """The table's numbers over ``rows`` (``prefix`` "two_view_" scores the essential-matrix pose)."""
    n = len(rows)
    if n == 0:
        return {"frames": 0}
    est = [r for r in rows if prefix + "t_err" in r]
    pair = [r.get(prefix + "pair_err_deg", np.inf) for r in rows]
    auc = pose_auc(pair, SCANNET_AUC_THRESHOLDS_DEG)
    t = np.array([r[prefix + "t_err"] for r in est])
    R = np.array([r[prefix + "r_err"] for r in est])
    v = np.array([r[prefix + "vcre_px"] for r in est])
    return {
        "frames": n, "estimates": len(est),
        "ok": None if prefix else sum(r["status"] == "ok" for r in rows),     # the two-view pose is never OK
        "ok_wrong": None if prefix else sum(r["status"] == "ok" and not (r["t_err"] < T_THRESHOLD_M and
                                                                         r["r_err"] < R_THRESHOLD_DEG) for r in rows),
        **{f"auc@{k:g}": float(a) for k, a in auc.items()},
        "precision_vcre": float(np.sum(v < VCRE_THRESHOLD_PX) / n),
        "precision_pose": float(np.sum((t < T_THRESHOLD_M) & (R < R_THRESHOLD_DEG)) / n),
        "median_t_err": float(np.median(t)) if len(t) else None,
        "median_r_err_deg": float(np.median(R)) if len(R) else None,
        "median_latency_s": float(np.median([r["latency_s"] for r in rows])),
        "median_cpu_s": float(np.median([r["cpu_s"] for r in rows])),
    }


def run_mapfree_bench(scenes: list[Path], work: Path, backend: str = DEFAULT_MAPFREE_BACKEND,
                      options: dict[str, Any] | None = None, window: int = 3) -> dict[str, Any]:
    """Convert, write the triangulated depth, localize Track 1 (with depth) and Track 2 (without
    and with depth); all rows."""
    options = dict(options or {})
    for s in scenes:
        convert_posed_folder(s, work, window=window)
    sources = {s.name: s for s in scenes}
    depth = {t: write_triangulated_depth(work / t, sources) for t in ("track1", "track2")}
    t1 = _frame_rows(work / "track1", backend, options, depth=True)
    t2 = _frame_rows(work / "track2", backend, options, depth=False)
    t2d = _frame_rows(work / "track2", backend, options, depth=True)
    return {"backend": backend, "options": options, "window": window, "scenes": [s.name for s in scenes],
            "depth_pixels": depth, "track1": t1, "track2": t2, "track2_depth": t2d, "tables": tables(t1, t2, t2d)}


def tables(t1: list[dict[str, Any]], t2: list[dict[str, Any]], t2d: list[dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    """Rows of the printed tables: per set, overall and per angle bucket."""
    t2d = t2d or []
    buckets = sorted({r["bucket"] for r in t1 + t2 + t2d if r["bucket"] is not None})
    same = {(r["scene"], r["source"]) for r in t2}
    t1_same = [r for r in t1 if (r["scene"], r["source"]) in same]
    sets = {"T1 two-view": (t1, "two_view_"), "T1 depth": (t1, ""), "T2 odometry": (t2, ""),
            "T2 odometry+depth": (t2d, ""),
            "T1 two-view, T2 frames": (t1_same, "two_view_"), "T1 depth, T2 frames": (t1_same, "")}
    out: dict[str, Any] = {}
    for label, (rows, prefix) in sets.items():
        out[label] = {"all": summarize(rows, prefix)}
        for b in buckets:
            out[label][f"bucket {b}"] = summarize([r for r in rows if r["bucket"] == b], prefix)
    return out


def format_table(tabs: dict[str, Any]) -> str:
    def cell(v: Any, fmt: str) -> str:
        return f"{'-':>{fmt.strip('<>^').split('.')[0] or 1}}" if v is None else format(v, fmt)

    head = (f"{'set':<24} {'rows':<9} {'frames':>6} {'OK':>4} {'OKx':>4} {'AUC@5':>6} {'AUC@10':>6} {'AUC@20':>6} "
            f"{'VCRE<90':>7} {'25cm,5°':>7} {'med t':>8} {'med R°':>7} {'wall s':>6} {'CPU s':>6}")
    lines = [head, "-" * len(head)]
    for label, parts in tabs.items():
        for part, m in parts.items():
            if not m.get("frames"):
                continue
            lines.append(f"{label:<24} {part:<9} {m['frames']:>6} {cell(m['ok'], '>4')} {cell(m['ok_wrong'], '>4')} {m['auc@5']:>6.3f} {m['auc@10']:>6.3f} "
                         f"{m['auc@20']:>6.3f} {m['precision_vcre']:>7.3f} {m['precision_pose']:>7.3f} "
                         f"{cell(m['median_t_err'], '8.4f')} {cell(m['median_r_err_deg'], '7.3f')} "
                         f"{m['median_latency_s']:>6.2f} {m['median_cpu_s']:>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mapfree", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", type=Path, action="append",
                        help="posed-image folder (repeatable; default: the four shared scenes)")
    parser.add_argument("--backend", default=DEFAULT_MAPFREE_BACKEND, help="map-free backend (default: %(default)s)")
    parser.add_argument("--options", default="{}", help="backend options as JSON")
    parser.add_argument("--window", type=int, default=3, help="Track 2 frames per query (default: 3)")
    parser.add_argument("--work", type=Path, help="keep the converted scenes here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write every frame's row and the tables here")


def run(args: argparse.Namespace) -> int:
    scenes = args.scene or [DATA / s for s in SCENES]
    options = json.loads(args.options)
    with tempfile.TemporaryDirectory(prefix="mapfree-bench-") as tmp:
        m = run_mapfree_bench(scenes, args.work or Path(tmp), args.backend, options, args.window)
    print(format_table(m["tables"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(m, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
