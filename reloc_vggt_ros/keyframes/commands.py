"""`reloc-vggt db build`, `db merge`, `db info`, `db check`, and the fleet sync `db push` / `db pull`."""

from __future__ import annotations

import argparse
import json

from ..errors import KeyframeDBError
from .blobs import unpack_arrays
from .build import build_keyframe_db, default_jobs, merge_keyframe_dbs
from .store import REPAIR_HINT, KeyframeStore
from .summary import format_summary, summarize

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="keyframe database: build, merge, info, check, push, pull")
    sub = db.add_subparsers(dest="db_command", required=True)

    build = sub.add_parser("build", help="build a keyframe database from a posed-image folder")
    build.add_argument("--images", required=True, action="append",
                       help="posed-image folder (with poses.txt) or its images/; repeat it for the cameras of a "
                       "rig (one folder per camera, each with its own intrinsics and lens)")
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
    build.add_argument("--jobs", type=int, default=default_jobs(),
                       help="worker processes reading images and extracting features (default: the cores); "
                       "the database is the same with any number")
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

    push = sub.add_parser("push", help="send a local database's keyframes (with their blobs) that the fleet "
                          "server lacks; creates the fleet schema on an empty PostgreSQL+PostGIS database")
    push.add_argument("db", help="local database file")
    push.add_argument("url", help="fleet server, postgresql://user@host:port/dbname")
    push.add_argument("--near", help="only keyframes near x,y,z (map frame, metres); needs --radius")
    push.add_argument("--radius", type=float, help="with --near: region radius in metres")
    push.add_argument("--source", default="", help="name of this robot, stored with the keyframes")
    push.add_argument("--retries", type=int, default=5, help="attempts while the server is unavailable")
    push.set_defaults(func=_push)

    pull = sub.add_parser("pull", help="copy the fleet server's keyframes of a region into a local database "
                          "(created if missing; only what it lacks)")
    pull.add_argument("url", help="fleet server, postgresql://user@host:port/dbname")
    pull.add_argument("--out", required=True, help="local database file (the robot's cache)")
    pull.add_argument("--near", help="centre x,y,z of the region (map frame, metres); needs --radius")
    pull.add_argument("--radius", type=float, help="region radius in metres")
    pull.add_argument("--route", help="instead of --near: waypoints 'x,y,z;x,y,z;...' of a route, with --radius")
    pull.add_argument("--evict", action="store_true",
                      help="also remove the file's keyframes outside the region that the server holds "
                      "(keeps the cache to the region; keyframes not yet pushed stay)")
    pull.add_argument("--retries", type=int, default=5, help="attempts while the server is unavailable")
    pull.set_defaults(func=_pull)


def _build(args: argparse.Namespace) -> int:
    backend = None if args.backend == "none" else args.backend
    path = build_keyframe_db(args.images, args.out, split=None if args.split == "all" else args.split,
                             overwrite=args.overwrite, max_side=args.max_side, backend=backend,
                             thumbnails=not args.no_thumbnails, jobs=args.jobs)
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


def _region(args: argparse.Namespace, required: bool):  # noqa: ANN202 - sync.Region | None
    from ..errors import ConfigError
    from .sync import Region

    route = getattr(args, "route", None)
    if args.near is None and route is None and args.radius is None and not required:
        return None
    if args.radius is None:
        raise ConfigError("--near / --route need --radius (metres)")
    return Region.parse(args.radius, near=args.near, route=route)


def _push(args: argparse.Namespace) -> int:
    from .postgres import PostgresStore
    from .sync import push, retry

    region = _region(args, required=False)
    with KeyframeStore.open(args.db) as local:
        def run() -> object:
            with PostgresStore.open(args.url, create=True, units=local.metadata.get("units", "m")) as server:
                report = push(local, server, region, source=args.source)
                return report, len(server)
        report, total = retry(run, f"push to {args.url}", attempts=max(1, args.retries))
    print(f"pushed {args.db} -> fleet map: {report}; the fleet map holds {total} keyframes")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .postgres import PostgresStore
    from .sync import evict, pull, retry

    region = _region(args, required=True)
    out = Path(args.out)

    def run() -> object:
        with PostgresStore.open(args.url, readonly=True) as server:
            units = server.metadata.get("units", "m")
            local = KeyframeStore.open(out) if out.exists() else KeyframeStore.create(
                out, units=units, creator="reloc-vggt db pull")
            with local:
                local.set_metadata("fleet_source", server.path)
                report = pull(server, local, region)
                return report, evict(local, server, region) if args.evict else 0, len(local)
    report, evicted, total = retry(run, f"pull from {args.url}", attempts=max(1, args.retries))
    gone = f", {evicted} outside the region evicted" if args.evict else ""
    print(f"pulled fleet map -> {out}: {report}{gone}; {out} holds {total} keyframes")
    return 0
