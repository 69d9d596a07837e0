"""`reloc-vggt db build`, `reloc-vggt db merge`, `reloc-vggt db info` and `reloc-vggt db check`."""

from __future__ import annotations

import argparse
import json

from ..errors import KeyframeDBError
from .blobs import unpack_arrays
from .build import build_keyframe_db, merge_keyframe_dbs
from .store import REPAIR_HINT, KeyframeStore
from .summary import format_summary, summarize

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="keyframe database: build, merge, info, check")
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

    merge = sub.add_parser("merge", help="one database with the keyframes (and reusable blobs) of several")
    merge.add_argument("inputs", nargs="+", help="databases to merge, in order (the first keeps its ids)")
    merge.add_argument("--out", required=True, help="database file to write (.db)")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing database")
    merge.add_argument("--backend", default="geometric", choices=("none", "geometric"),
                       help="bring this backend's data up to date after merging (default: geometric)")
    merge.set_defaults(func=_merge)

    info = sub.add_parser("info", help="counts, map extent, units and backends of a database")
    info.add_argument("db", help="database file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)

    check = sub.add_parser("check", help="full damage check: SQLite pages, checksums, poses, images, blobs "
                           "(exit status 1 if anything is wrong)")
    check.add_argument("db", help="database file")
    check.add_argument("--migrate", action="store_true",
                       help="open writable first: an older schema gets its checksums (from the bytes as they are)")
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.set_defaults(func=_check)


def _build(args: argparse.Namespace) -> int:
    backend = None if args.backend == "none" else args.backend
    path = build_keyframe_db(args.images, args.out, split=None if args.split == "all" else args.split,
                             overwrite=args.overwrite, max_side=args.max_side, backend=backend,
                             thumbnails=not args.no_thumbnails)
    with KeyframeStore.open(path, readonly=True) as store:
        print(format_summary(summarize(store)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    path = merge_keyframe_dbs(args.inputs, args.out, overwrite=args.overwrite,
                              backend=None if args.backend == "none" else args.backend)
    with KeyframeStore.open(path, readonly=True) as store:
        print(format_summary(summarize(store)))
    return 0


def _info(args: argparse.Namespace) -> int:
    with KeyframeStore.open(args.db, readonly=True) as store:
        summary = summarize(store)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _blob_problem(backend: str, key: str, data: bytes) -> str | None:
    """Content check of a blob in the array format: it unpacks, and the backend accepts its arrays."""
    if backend != "geometric" and not data.startswith(b"PK\x03\x04"):
        return None  # not an array archive (another backend's format): only its checksum can be judged
    try:
        arrays = unpack_arrays(data)
    except KeyframeDBError as err:
        return str(err)
    if backend == "geometric":
        from ..localizer.geometric.indexing import blob_problem

        return blob_problem(key, arrays)
    return None


def check_database(path: str) -> dict:
    """The full check of ``db check`` as a JSON-able dict: ``ok``, ``problems`` (one line each)."""
    try:
        with KeyframeStore.open(path, readonly=True) as store:
            problems = store.check(_blob_problem)
            n, version = len(store.keyframe_ids()), store.schema_version
    except KeyframeDBError as err:  # cannot even be opened: that is the one problem
        return {"path": path, "ok": False, "keyframes": None, "schema_version": None, "problems": [str(err)]}
    return {"path": path, "ok": not problems, "keyframes": n, "schema_version": version, "problems": problems}


def _check(args: argparse.Namespace) -> int:
    if args.migrate:
        try:
            KeyframeStore.open(args.db).close()
        except KeyframeDBError as err:
            print(f"cannot migrate: {err}")
            return 1
    report = check_database(args.db)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"{args.db}: ok ({report['keyframes']} keyframes, schema {report['schema_version']}; "
              "SQLite integrity, checksums, poses, images and blobs verified)")
    else:
        print(f"{args.db}: {len(report['problems'])} problem(s):")
        print("\n".join(f"  {p}" for p in report["problems"]))
        if report["keyframes"] is not None:
            print(f"What to do: {REPAIR_HINT}.")
    return 0 if report["ok"] else 1
