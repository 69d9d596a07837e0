"""`reloc-vggt mapfree convert`, `mapfree localize` and `mapfree evaluate`."""

from __future__ import annotations

import argparse
import json

from ..errors import DataError
from ..eval.metrics import write_metrics_json
from .convert import DEFAULT_ANGLE_EDGES_DEG, convert_posed_folder
from .evaluate import evaluate
from .registry import DEFAULT_MAPFREE_BACKEND, mapfree_backend_names

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    mf = subparsers.add_parser("mapfree", help="map-free relocalization: convert scenes, localize, evaluate submissions")
    sub = mf.add_subparsers(dest="mapfree_command", required=True)

    conv = sub.add_parser("convert", help="map-free Track 1 / Track 2 scenes from posed-image folders")
    conv.add_argument("--scene", action="append", required=True,
                      help="posed-image folder, e.g. ../shared/data/fountain-P11 (repeatable)")
    conv.add_argument("--out", required=True, help="writes OUT/track1/ and OUT/track2/ datasets")
    conv.add_argument("--angle-edges", default=",".join(f"{e:g}" for e in DEFAULT_ANGLE_EDGES_DEG),
                      help="relative viewing-angle bucket edges in degrees (default: %(default)s)")
    conv.add_argument("--window", type=int, default=3,
                      help="Track 2 frames per query: the query and the ones before it (default: 3)")
    conv.set_defaults(func=_convert)

    loc = sub.add_parser("localize", help="run a map-free backend over a dataset, write the submission")
    loc.add_argument("--dataset", required=True, help="folder of map-free scenes (a split)")
    loc.add_argument("--out", required=True, help="submission folder, or a .zip file")
    loc.add_argument("--backend", default=None,
                     help=f"map-free backend, one of {', '.join(mapfree_backend_names())} "
                          f"(default: {DEFAULT_MAPFREE_BACKEND}, the best weights-free one)")
    loc.add_argument("--depth-suffix", help="reference depth frame_00000.<S>.png (uint16 mm) for metric scale")
    loc.add_argument("--track", type=int, choices=(1, 2),
                     help="official split: 1 = single frames, 2 = each evaluated frame with the frames before "
                          "it (a converted dataset's mapfree.json decides)")
    loc.add_argument("--options", default="{}", help="backend options as JSON (nested sections)")
    loc.set_defaults(func=_localize)

    ev = sub.add_parser("evaluate", help="score a submission (folder or ZIP of pose_<scene>.txt)")
    ev.add_argument("--dataset", required=True, help="folder of map-free scenes (a split)")
    ev.add_argument("--submission", required=True, help="folder or .zip of pose_<scene>.txt")
    ev.add_argument("--track", type=int, choices=(1, 2), default=1,
                    help="evaluated frames of an official split: 1 = every 5th, 2 = every 10th from "
                         "the 10th (a converted dataset's mapfree.json states its own)")
    ev.add_argument("--offset", type=int, help="override: first evaluated query line")
    ev.add_argument("--step", type=int, help="override: evaluate every STEP-th query line")
    ev.add_argument("--json", help="also write the results as JSON")
    ev.set_defaults(func=_evaluate)


def _convert(args: argparse.Namespace) -> int:
    try:
        edges = [float(v) for v in args.angle_edges.split(",")]
    except ValueError as err:
        raise DataError(f"--angle-edges {args.angle_edges!r}: comma-separated degrees expected") from err
    for scene in args.scene:
        made = convert_posed_folder(scene, args.out, edges, args.window)
        print(f"{scene}: track1 {', '.join(made['track1'])}; track2 {', '.join(made['track2']) or '-'}")
    return 0


def _localize(args: argparse.Namespace) -> int:
    from .localize import localize_dataset

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as err:
        raise DataError(f"--options is not JSON: {err}") from err
    outcomes = localize_dataset(args.dataset, args.out, args.backend or DEFAULT_MAPFREE_BACKEND, options,
                                args.depth_suffix, args.track)
    posed = sum(o.result.T_world_cam is not None for o in outcomes)
    ok = sum(o.result.ok for o in outcomes)
    print(f"{len(outcomes)} frames: {posed} with a pose ({ok} OK), {len(outcomes) - posed} without; "
          f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    res = evaluate(args.dataset, args.submission, args.track, args.offset, args.step)
    print(f"{'scene':<32} {'frames':>6} {'estim.':>6} {'med t [m]':>10} {'med R [deg]':>11} {'med VCRE [px]':>13}")

    def cell(v: float | None, w: int) -> str:
        return f"{'-':>{w}}" if v is None else f"{v:>{w}.4g}"

    for name, s in res.per_scene.items():
        print(f"{name:<32} {s['frames']:>6} {s['estimates']:>6} {cell(s.get('median_trans_err_m'), 10)} "
              f"{cell(s.get('median_rot_err_deg'), 11)} {cell(s.get('median_vcre_px'), 13)}")
    print()
    for key, value in res.summary.items():
        print(f"{key:<48} {value:.4f}")
    for thr, value in res.scannet_auc.items():
        print(f"{f'Pose AUC @ {thr:g} deg (max(R, t-direction))':<48} {value:.4f}")
    print(f"{'Failures (missing frames)':<48} {res.failures}")
    if args.json:
        write_metrics_json(res.to_json(), args.json)
    return 0
