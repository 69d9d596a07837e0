"""``reloc-vggt bench localize``: the localization benchmark on a posed scene folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reloc_vggt_ros.config import unflatten
from reloc_vggt_ros.errors import ConfigError

__all__ = ["register"]


def fmt(v: Any, spec: str) -> str:
    """``v`` formatted with ``spec``, or "-" for None (a table cell)."""
    return "-" if v is None else format(v, spec)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from err
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return w, h


def _option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", required=True)
    loc = sub.add_parser("localize", help="build a database from a scene's db split and localize its queries")
    loc.add_argument("--scene", required=True, type=Path, help="posed-image folder (poses.txt, split.txt)")
    loc.add_argument("--backend", default="geometric", help="localizer backend (default: geometric)")
    loc.add_argument("--json", type=Path, help="write the metrics JSON here")
    loc.add_argument("--size", type=parse_size, help="resize every image to WIDTHxHEIGHT (default: native)")
    loc.add_argument("--top-k", type=int, help="keyframes retrieved per query")
    loc.add_argument("--preset", help="backend preset (geometric: default, fast, accurate, realtime)")
    loc.add_argument("--weights", type=Path,
                     help="weights / exported engine for learned backends (same as -o weights=PATH)")
    loc.add_argument("--db", type=Path, help="keep the database at this path; one holding exactly the scene's "
                     "db split at this size (e.g. from `db build`) is reused, any other is refused")
    loc.add_argument("-o", "--option", type=_option, action="append", default=[],
                     help="backend option KEY=VALUE (repeatable; dotted keys name nested settings), e.g. "
                     "-o query.features.max_keypoints=2048")
    loc.set_defaults(func=_run_localize)
    from . import mapfree

    mf = sub.add_parser("mapfree", help="map-free Track 1 / Track 2 tables on converted shared scenes")
    mapfree.add_arguments(mf)
    mf.set_defaults(func=mapfree.run)


def _run_localize(args: argparse.Namespace) -> int:
    from .localize import bench_localize, format_report, write_json

    options = unflatten(dict(args.option))
    if args.top_k is not None:
        if args.top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
        options["top_k"] = args.top_k
    if args.preset:
        options["preset"] = args.preset
    if args.weights is not None:
        options["weights"] = str(args.weights)
    metrics = bench_localize(args.scene, args.backend, args.size, args.db, options)
    print(format_report(metrics))
    if args.json:
        write_json(metrics, args.json)
        print(f"wrote {args.json}")
    return 0
