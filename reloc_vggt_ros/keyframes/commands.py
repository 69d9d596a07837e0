"""`reloc-vggt db build` and `reloc-vggt db info`."""

from __future__ import annotations

import argparse
import json

from .build import build_keyframe_db
from .store import KeyframeStore
from .summary import format_summary, summarize

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="keyframe database: build, info")
    sub = db.add_subparsers(dest="db_command", required=True)

    build = sub.add_parser("build", help="build a keyframe database from a posed-image folder")
    build.add_argument("--images", required=True, help="posed-image folder (with poses.txt) or its images/")
    build.add_argument("--split", default="db", choices=("db", "query", "all"),
                       help="which images of split.txt become keyframes (default: db)")
    build.add_argument("--out", required=True, help="database file to write (.db)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing database")
    build.add_argument("--max-side", type=int, default=None,
                       help="downscale images so their longer side is at most this many pixels")
    build.add_argument("--backend", default="geometric", choices=("none", "geometric"),
                       help="precompute this backend's per-keyframe data (default: geometric)")
    build.add_argument("--no-thumbnails", action="store_true",
                       help="do not store the weights-free thumbnail retrieval descriptors (the VGGT "
                       "backends then compute them on first use)")
    build.set_defaults(func=_build)

    info = sub.add_parser("info", help="counts, map extent, units and backends of a database")
    info.add_argument("db", help="database file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    backend = None if args.backend == "none" else args.backend
    path = build_keyframe_db(args.images, args.out, split=None if args.split == "all" else args.split,
                             overwrite=args.overwrite, max_side=args.max_side, backend=backend,
                             thumbnails=not args.no_thumbnails)
    with KeyframeStore.open(path, readonly=True) as store:
        print(format_summary(summarize(store)))
    return 0


def _info(args: argparse.Namespace) -> int:
    with KeyframeStore.open(args.db, readonly=True) as store:
        summary = summarize(store)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
