#!/usr/bin/env python3
"""Look-alike places: a map holding two copies of one scene, queried with and without a pose prior.

    .venv/bin/python -m bench.look_alike [--scene ../shared/data/fountain-P11] [--sizes native 768x512] \
        [--shift 100] [--yaw 90] [--preset realtime] [--json FILE]

The scene's db split goes into one database twice: copy 0 at the stored poses, copy 1 (the same
images) with every keyframe pose moved by ``D``: a ``--yaw`` degree turn about the vertical (the
cameras' mean "up") through the cameras' centroid, then ``--shift`` metres along the horizontal.
Every query is localized three times: without a prior (the map cannot tell the copies apart: the
answer must be LOW_CONFIDENCE "ambiguous"), and with a prior in copy 0 and in copy 1 (the query's
ground truth moved into that copy, off by 1 m and 5 degrees, 2 m / 0.2 rad sigma). The copy
chosen is the one whose ground truth is nearest the pose returned. An OK answer is wrong when it
is farther than 5% of the median keyframe spacing or 1 degree from the ground truth of the copy
it should be in (the prior's; copy 0 without a prior, where the query was taken). The table
prints per query and prior the status, the copy chosen and the error; the figure that must be 0
is the OK-but-wrong count.
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
from reloc_vggt_ros.eval.metrics import median_baseline
from reloc_vggt_ros.geometry import make_T, pose_error, so3_exp
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.localizer.base import PosePrior
from reloc_vggt_ros.localizer.registry import index_database, make_localizer

__all__ = ["copy_transform", "two_copies", "prior_near", "run_look_alike", "format_table", "main"]

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
PRIOR_COV = np.diag([4.0, 4.0, 4.0, 0.04, 0.04, 0.04])      # 2 m, 0.2 rad sigma


def copy_transform(recs: list[PosedImage], shift_m: float, yaw_deg: float) -> np.ndarray:
    """``D`` [4,4] (world -> world): turn ``yaw_deg`` about the cameras' mean up axis through
    their centroid, then move ``shift_m`` along a horizontal axis (perpendicular to up)."""
    T = np.stack([r.T_world_cam for r in recs])
    up = -T[:, :3, 1].mean(axis=0)                   # OpenCV cameras: y points down
    up /= np.linalg.norm(up)
    horizontal = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    horizontal /= np.linalg.norm(horizontal)
    R = so3_exp(np.radians(yaw_deg) * up)
    c = T[:, :3, 3].mean(axis=0)
    return make_T(R, c - R @ c + shift_m * horizontal)


def two_copies(recs: list[PosedImage], D: np.ndarray) -> list[PosedImage]:
    """``recs`` as they are, then again with poses ``D @ T`` under names ``copy1/<name>``."""
    return list(recs) + [replace(r, name=f"copy1/{r.name}", T_world_cam=D @ r.T_world_cam) for r in recs]


def prior_near(T_gt: np.ndarray, offset_m: float = 1.0, offset_deg: float = 5.0) -> PosePrior:
    """A prior off the ground truth by ``offset_m`` (along x) and ``offset_deg`` (about z)."""
    T = T_gt.copy()
    T[:3, 3] += [offset_m, 0.0, 0.0]
    T[:3, :3] = so3_exp(np.radians(offset_deg) * np.array([0.0, 0.0, 1.0])) @ T[:3, :3]
    return PosePrior(T, PRIOR_COV.copy())


def _row(res: Any, name: str, prior_copy: int | None, gts: list[np.ndarray], t_ok: float) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "prior": prior_copy, "status": res.status.value, "reason": res.reason,
                           "num_inliers": res.num_inliers, "copy": None, "t_err_m": None, "r_err_deg": None}
    if res.T_world_cam is not None:
        errors = [pose_error(res.T_world_cam, gt) for gt in gts]
        row["copy"] = int(np.argmin([e[0] for e in errors]))
        row["t_err_m"], row["r_err_deg"] = errors[0 if prior_copy is None else prior_copy]
    want = 0 if prior_copy is None else prior_copy
    row["ok_but_wrong"] = bool(res.ok and (row["copy"] != want or row["t_err_m"] > t_ok or row["r_err_deg"] > 1.0))
    row["ambiguous"] = res.reason.startswith("ambiguous")
    cands = res.diagnostics.get("places")
    if cands:
        row["places"] = cands
    return row


def run_look_alike(scene: Path | str, size: tuple[int, int] | None, shift_m: float = 100.0,
                   yaw_deg: float = 90.0, options: dict[str, Any] | None = None, db_path: Path | None = None
                   ) -> dict[str, Any]:
    """Every query of ``scene`` without a prior and with a prior in each copy, in a two-copy map.

    ``db_path``: keep the two-copy database there; one an earlier call with the same scene, size,
    shift and yaw left there is reused (only missing blobs are indexed)."""
    scene, options = Path(scene), dict(options or {})
    db, queries = read_posed_folder(scene, "db"), read_posed_folder(scene, "query")
    D = copy_transform(db, shift_m, yaw_deg)
    t_ok = 0.05 * median_baseline(np.stack([r.T_world_cam for r in db]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="reloc-lookalike-") as tmp:
        path = Path(db_path) if db_path else Path(tmp) / "two.db"
        with (KeyframeStore.open(path) if path.exists() else
              KeyframeStore.create(path, units="m", creator="bench look_alike")) as store:
            if len(store) == 0:
                store.add_keyframes([keyframe_at(r, size) for r in two_copies(db, D)])
            index_database(store, "geometric", **options)
            loc = make_localizer("geometric", store, **options)
            for q in queries:
                img, intr = resized_image(q, size)
                gts = [q.T_world_cam, D @ q.T_world_cam]
                for prior_copy in (None, 0, 1):
                    prior = None if prior_copy is None else prior_near(gts[prior_copy])
                    rows.append(_row(loc.localize(img, intr, prior=prior), q.name, prior_copy, gts, t_ok))
    return {"scene": scene.name, "image_size": list(size) if size else "native", "shift_m": shift_m,
            "yaw_deg": yaw_deg, "options": options, "ok_tolerance_m": t_ok, "per_query": rows,
            "n_ok_but_wrong": sum(r["ok_but_wrong"] for r in rows),
            "n_ok": sum(r["status"] == "ok" for r in rows), "n": len(rows)}


def format_table(m: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"{m['scene']} at {m['image_size']}: two copies {m['shift_m']} m / {m['yaw_deg']} deg apart",
             f"{'query':<10} {'prior':>5} {'status':<15} {'copy':>4} {'t err m':>9} {'r err deg':>9} {'inl':>4}  reason"]
    for r in m["per_query"]:
        lines.append(f"{r['name']:<10} {f(r['prior'], 'd'):>5} {r['status']:<15} {f(r['copy'], 'd'):>4} "
                     f"{f(r['t_err_m'], '9.4f')} {f(r['r_err_deg'], '9.4f')} {r['num_inliers']:>4}  "
                     f"{r['reason'][:60]}")
    lines.append(f"OK {m['n_ok']}/{m['n']}, OK but wrong: {m['n_ok_but_wrong']}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int] | None:
    return None if text == "native" else parse_size(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.look_alike", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DATA / "fountain-P11", help="posed-image folder")
    parser.add_argument("--sizes", type=_size, nargs="+", default=[None, (768, 512)],
                        help="image sizes WIDTHxHEIGHT or 'native' (default: native 768x512)")
    parser.add_argument("--shift", type=float, default=100.0, help="distance between the copies, metres")
    parser.add_argument("--yaw", type=float, default=90.0, help="turn of copy 1 about the vertical, degrees")
    parser.add_argument("--preset", default="realtime", help="geometric preset (default: realtime)")
    parser.add_argument("--json", type=Path, help="write the tables' numbers here")
    args = parser.parse_args(argv)
    runs = [run_look_alike(args.scene, s, args.shift, args.yaw, {"preset": args.preset}) for s in args.sizes]
    for m in runs:
        print(format_table(m))
    total = sum(m["n_ok_but_wrong"] for m in runs)
    print(f"OK but wrong over every query and size: {total}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "n_ok_but_wrong": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
