"""Fleet store on a private PostgreSQL + PostGIS server: sync cost and spatial-query latency.

    .venv/bin/python -m bench.fleet [--keyframes 1000 10000] [--json FILE]

Starts a cluster with ``tools/pg_test_server.sh`` (root: run it inside ``/work/isolated.sh`` or
any private network namespace; the server listens on 127.0.0.1 only) and removes it at the end.

* sync: the shipped sample (7 keyframes at 640x427 with geometric + thumbnail blobs) pushed to an
  empty fleet map, pushed again (nothing to send), pulled into an empty cache, pulled again.
* spatial: N keyframes (a 2 kB JPEG each, camera centres uniform over 1 km x 1 km at UTM-sized
  coordinates) inserted in transactions of 500, then ``near(point, 50 m)`` at 200 random points,
  with the GiST index and again after dropping it (same run, same data: the ratio is the index's
  share).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import make_T
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore, build_keyframe_db
from reloc_vggt_ros.keyframes.postgres import PostgresStore, Record
from reloc_vggt_ros.keyframes.sync import Region, pull, push

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
SCRIPT = ROOT / "tools" / "pg_test_server.sh"
PSQL = "/usr/lib/postgresql/15/bin/psql"


def _database(base: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    subprocess.run([PSQL, "-qtA", f"{base}/postgres", "-c", f"CREATE DATABASE {name}"], check=True)
    subprocess.run([PSQL, "-qtA", f"{base}/{name}", "-c", "CREATE EXTENSION postgis"], check=True)
    return f"{base}/{name}"


def _timed(fn) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def sync_row(base: str, tmp: Path) -> dict:
    db = build_keyframe_db(SAMPLE, tmp / "sample.db", split="db", backend="geometric")
    url = _database(base)
    with KeyframeStore.open(db) as local, PostgresStore.open(url, create=True) as fleet:
        t_push, rep = _timed(lambda: push(local, fleet))
        t_push2, _ = _timed(lambda: push(local, fleet))
        centre = tuple(local.poses()[1][:, :3, 3].mean(axis=0))
        with KeyframeStore.create(tmp / "cache.db") as cache:
            t_pull, got = _timed(lambda: pull(fleet, cache, Region(centre, 100.0)))
            t_pull2, _ = _timed(lambda: pull(fleet, cache, Region(centre, 100.0)))
        mb = sum(len(r.keyframe.image_jpeg) + sum(len(d) for _, d in r.blobs.values())
                 for r in fleet.fetch(fleet.keyframe_ids())) / 2**20
    return {"keyframes": rep.sent, "mb": mb, "push_s": t_push, "push_again_s": t_push2, "pull_s": t_pull,
            "pull_again_s": t_pull2, "pulled": got.sent}


def spatial_row(base: str, n: int, rng: np.random.Generator) -> dict:
    rec = read_posed_folder(SAMPLE)[0]
    small = cv2.resize(cv2.imread(str(rec.path)), (64, 43))
    jpeg = cv2.imencode(".jpg", small)[1].tobytes()
    intr = rec.intrinsics.scaled(64 / rec.intrinsics.width)
    origin = np.array([500000.0, 5400000.0, 100.0])
    centres = origin + rng.uniform([0, 0, 0], [1000, 1000, 10], (n, 3))
    url = _database(base)
    with PostgresStore.open(url, create=True) as fleet:
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            kfs = [Keyframe(f"kf{i}", jpeg, intr, make_T(rec.T_world_cam[:3, :3], centres[i]), stamp_ns=i)
                   for i in range(start, min(n, start + 500))]
            fleet.insert([Record(kf, uuid.uuid4()) for kf in kfs])
        t_insert = time.perf_counter() - t0
        points = origin + rng.uniform([0, 0, 0], [1000, 1000, 10], (200, 3))

        def query_ms() -> tuple[float, float]:
            times, found = [], []
            for p in points:
                t, ids = _timed(lambda p=p: fleet.near(p, 50.0))
                times.append(t * 1e3)
                found.append(len(ids))
            return float(np.median(times)), float(np.mean(found))

        fleet.near(points[0], 50.0)   # warm the connection and the cache
        with_index, found = query_ms()
        subprocess.run([PSQL, "-qtA", url, "-c", "DROP INDEX keyframes_position"], check=True)
        without, _ = query_ms()
    return {"keyframes": n, "insert_per_s": n / t_insert, "near_ms_p50": with_index,
            "near_ms_p50_no_index": without, "found_mean": found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, nargs="+", default=[1000, 10000], help="fleet map sizes")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    out = subprocess.run([str(SCRIPT), "start"], check=True, capture_output=True, text=True).stdout
    env = dict(line.split("=", 1) for line in out.split())
    base = env["URL"].rsplit("/", 1)[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sync = sync_row(base, Path(tmp))
        rng = np.random.default_rng(0)
        spatial = [spatial_row(base, n, rng) for n in args.keyframes]
    finally:
        subprocess.run([str(SCRIPT), "stop", env["PGDIR"]], capture_output=True)
    print(f"sync of the sample ({sync['keyframes']} keyframes, {sync['mb']:.1f} MB with blobs): push "
          f"{sync['push_s']:.2f} s, again {sync['push_again_s']:.2f} s; pull {sync['pull_s']:.2f} s, "
          f"again {sync['pull_again_s']:.2f} s")
    print("| keyframes | insert (keyframes/s) | near 50 m p50 (ms) | without GiST (ms) | found (mean) |")
    print("|---|---|---|---|---|")
    for r in spatial:
        print(f"| {r['keyframes']} | {r['insert_per_s']:.0f} | {r['near_ms_p50']:.2f} | "
              f"{r['near_ms_p50_no_index']:.2f} | {r['found_mean']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"sync": sync, "spatial": spatial}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
