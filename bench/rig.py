#!/usr/bin/env python3
"""Rig table: queries of a real scene grouped into camera rigs, localized as one rig vs one camera at a time.

    .venv/bin/python -m bench.rig [--scene ../shared/data/fountain-P11 ...] [--size 640x427] \
        [--preset realtime] [--cameras 3] [--json FILE]

The scene's db split is the map. Its queries, in name order, are grouped into rigs of
``--cameras`` consecutive views; a rig's base is its first camera and each camera's extrinsic
``T_base_cam`` comes from the ground-truth poses, so the views form a rigid rig with known
extrinsics. Each rig is localized three ways, each answer scored as the error of the *base*
pose: every camera alone (``localize``, its pose moved to the base through its extrinsic), the
whole rig (``localize_rig``) and the rig without its base camera (the other cameras only).
Columns: answers OK, median base error (mm, deg), worst base error, median inliers, median
position sigma of the covariance (mm, square root of the trace's position part).
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
from bench.localize import keyframe_at, resized_image
from reloc_vggt_ros.data import PosedImage, read_posed_folder
from reloc_vggt_ros.geometry import invert_T, pose_error
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.localizer.geometric import RigCamera, RigFrame
from reloc_vggt_ros.localizer.registry import make_localizer

__all__ = ["rig_frames", "run_rig", "format_table", "main"]

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


def rig_frames(queries: list[PosedImage], size: tuple[int, int] | None) -> tuple[np.ndarray, list[RigFrame]]:
    """``(T_world_base, frames)``: ``queries`` as one rig based at the first one (extrinsics from GT)."""
    base = queries[0].T_world_cam
    frames = []
    for q in queries:
        img, intr = resized_image(q, size)
        frames.append(RigFrame(RigCamera(q.name, invert_T(base) @ q.T_world_cam), img, intr))
    return base, frames


def _row(res: Any, T_base_est: np.ndarray | None, base: np.ndarray) -> dict[str, Any]:
    t, r = pose_error(T_base_est, base) if T_base_est is not None else (None, None)
    sigma = (1e3 * float(np.sqrt(np.trace(res.covariance[:3, :3]))) if res.covariance is not None else None)
    return {"ok": res.ok, "t_err_mm": None if t is None else 1e3 * t, "r_err_deg": r, "num_inliers": res.num_inliers,
            "sigma_mm": sigma, "reason": res.reason}


def run_rig(scene: Path | str, size: tuple[int, int] | None, cameras: int = 3,
            options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per rig: each camera alone, the whole rig, the rig without its base camera (rows of answers)."""
    scene = Path(scene)
    queries = read_posed_folder(scene, "query")
    groups = [queries[i:i + cameras] for i in range(0, len(queries) - cameras + 1, cameras)]
    kinds: dict[str, list[dict[str, Any]]] = {"single camera": [], "rig": [], "rig without base camera": []}
    with tempfile.TemporaryDirectory(prefix="reloc-rig-") as tmp:
        with KeyframeStore.create(Path(tmp) / "map.db", creator="bench rig") as store:
            store.add_keyframes([keyframe_at(r, size) for r in read_posed_folder(scene, "db")])
            loc = make_localizer("geometric", store, **(options or {}))
            for group in groups:
                base, frames = rig_frames(group, size)
                for f in frames:
                    res = loc.localize(f.image_bgr, f.intrinsics)
                    T = None if res.T_world_cam is None else res.T_world_cam @ invert_T(f.camera.T_base_cam)
                    kinds["single camera"].append({"rig": group[0].name, "camera": f.camera.name, **_row(res, T, base)})
                for kind, sub in (("rig", frames), ("rig without base camera", frames[1:])):
                    res = loc.localize_rig(sub)
                    kinds[kind].append({"rig": group[0].name, "cameras": [f.camera.name for f in sub],
                                        **_row(res, res.T_world_cam, base)})
    return {"scene": scene.name, "image_size": list(size) if size else "native", "options": options or {},
            "cameras_per_rig": cameras, "rigs": len(groups), "rows": {k: _summary(v) for k, v in kinds.items()},
            "answers": kinds}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["ok"]]

    def med(key: str) -> float | None:
        return float(np.median([r[key] for r in ok])) if ok else None

    return {"n_ok": len(ok), "n": len(rows), "median_t_mm": med("t_err_mm"), "median_r_deg": med("r_err_deg"),
            "max_t_mm": max((r["t_err_mm"] for r in ok), default=None),
            "max_r_deg": max((r["r_err_deg"] for r in ok), default=None),
            "median_inliers": med("num_inliers"), "median_sigma_mm": med("sigma_mm")}


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'scene':<24} {'query':<24} {'ok':>6} {'med mm':>8} {'med deg':>8} {'max mm':>8} {'max deg':>8} "
             f"{'inliers':>7} {'sigma mm':>8}"]
    for m in results:
        for kind, s in m["rows"].items():
            lines.append(f"{m['scene']:<24} {kind:<24} {s['n_ok']:>3}/{s['n']:<2} {f(s['median_t_mm'], '8.3f')} "
                         f"{f(s['median_r_deg'], '8.4f')} {f(s['max_t_mm'], '8.3f')} {f(s['max_r_deg'], '8.4f')} "
                         f"{f(s['median_inliers'], '7.0f')} {f(s['median_sigma_mm'], '8.3f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rig", description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, nargs="+",
                        default=[DATA / "fountain-P11", DATA / "middlebury-temple-ring"], help="posed-image folders")
    parser.add_argument("--size", type=parse_size, help="image size WIDTHxHEIGHT (default: native)")
    parser.add_argument("--preset", default="realtime", help="geometric preset (realtime)")
    parser.add_argument("--cameras", type=int, default=3, help="cameras per rig (3)")
    parser.add_argument("--json", type=Path, help="write the table's numbers here")
    args = parser.parse_args(argv)
    results = [run_rig(s, args.size, args.cameras, {"preset": args.preset}) for s in args.scene]
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
