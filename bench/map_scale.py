"""Large maps: build, open, memory, retrieval and query time of geometric maps of 1k-100k keyframes.

``python -m bench.map_scale --keyframes 1000 10000 [100000] --json FILE [--work DIR] [--keep]``

How a map of N keyframes is made (real images, real descriptor statistics, built fast):

1. A *base* map is built and indexed for real by ``index_database`` (cached in ``--work``): the
   middlebury-temple-ring db split (31 keyframes, native 640x480) at the origin, and one *unit*:
   the db splits of fountain-P11, Herz-Jesus-P8 and entry-P10 (19 keyframes, resized to 640 px
   like the issue's measurements, ~3,000-4,000 keypoints each), the three scenes 1 km apart.
2. The N-keyframe map is the base plus copies of the unit, each moved by a whole multiple of
   10 km on a grid (rotation unchanged), *synthesised directly in SQLite*: every copied keyframe
   row (pose moved, its row checksum recomputed) and blob (features, VLAD and thumbnail copied
   byte for byte; points moved by the offset and their neighbour ids renumbered) is a real
   keyframe's, so descriptor statistics, keypoint counts and blob sizes are the real ones (the
   copies are exact duplicates of 19 views, which makes their descriptors easier to retrieve
   among than a real city's: the temple queries are only ever matched against the one temple).
3. The map-wide state is then computed by the real indexer (``index_database``): the neighbour
   graph (k-d tree, every keyframe checked against its stored points), the global VLAD index
   (exact up to ``map.exact_index_max`` keyframes, inverted lists above); the vocabulary is the
   base's (``map.vocabulary_growth=0``: the copies have its descriptor statistics). Neighbours
   are limited to 100 m (``map.triangulation.max_neighbour_distance_m``; the scenes span < 20 m),
   so a copy's neighbours are its own scene's, as in the base, and its stored points stay valid.
   ``build_s`` = synthesis + indexing.

Measured per size, each in a fresh process (``--child``) on the read-only map with the node's
settings (``geometric.preset=realtime``, top-k 8): ``open_s`` (``KeyframeStore.open`` +
``make_localizer``: what the node's start-up does with the map, the package already imported;
``open_cpu_s`` its CPU time, which a machine shared with other work does not inflate), ``rss_mb`` (resident memory after opening, and ``rss_after_queries_mb`` after the
queries), ``retrieval_ms_p50`` (``Retriever.rank`` of the 16 temple queries' VLADs, 20
repetitions: the search, what grows with the map; describing the query is the same work at any
size; ``retrieval_prior_ms_p50`` with a prior pose 1 m off), ``query_ms_p50`` (the whole
``localize``, second and third pass over the queries: the cache holds what they touch; also its
CPU time, steadier on a shared machine, and the first, cold pass), ``query_vs_smallest`` (the
target's ratio: this map's and the smallest map's queries timed in turn in one process, so a
shared machine's changing load hits both alike; wall and CPU) and the temple
accuracy (status, inliers and pose error per query: the table prints whether they equal the
smallest map's). Then, on the map opened writable, ``refresh_s``: one keyframe added and the
localizer refreshed (live mapping; the node runs it off the frame path). Sizes the disk cannot hold are skipped, never faked;
``--extrapolate`` sizes (default 100000) get a row from the measured growth, labelled
``extrapolated`` (:func:`extrapolate` says which fit each column gets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.keyframes.blobs import pack_arrays, unpack_arrays
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.keyframes.store import _meta_crc

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TEMPLE = "middlebury-temple-ring"
UNIT_SCENES = ("fountain-P11", "Herz-Jesus-P8", "entry-P10")
UNIT_MAX_SIDE = 640
SCENE_SPACING_M = 1000.0
UNIT_SPACING_M = 10_000.0
OPTIONS: dict[str, Any] = {"preset": "realtime", "query": {"top_k": 8},
                           "map": {"vocabulary_growth": 0.0, "triangulation": {"max_neighbour_distance_m": 100.0}}}


def _shifted(T: np.ndarray, offset: np.ndarray) -> np.ndarray:
    T = np.array(T, np.float64)
    T[:3, 3] += offset
    return T


def build_base(path: Path) -> Path:
    """Temple (db split) + one unit of the three Strecha scenes, indexed for real."""
    from reloc_vggt_ros.localizer.registry import index_database

    if path.exists():
        return path
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    with KeyframeStore.create(tmp, creator="bench.map_scale base") as store:
        store.add_keyframes([keyframe_from_posed(r) for r in read_posed_folder(DATA / TEMPLE, "db")])
        for j, scene in enumerate(UNIT_SCENES):
            offset = np.array([UNIT_SPACING_M + j * SCENE_SPACING_M, 0.0, 0.0])
            kfs = [keyframe_from_posed(r, UNIT_MAX_SIDE) for r in read_posed_folder(DATA / scene, "db")]
            for kf in kfs:
                kf.T_world_cam = _shifted(kf.T_world_cam, offset)
            store.add_keyframes(kfs)
        index_database(store, "geometric", **OPTIONS)
    os.replace(tmp, path)
    return path


def _unit_offset(copy: int) -> np.ndarray:
    """Offset of copy ``copy`` (1, 2, ...) from the base unit: a 10 km grid, 64 columns."""
    return np.array([UNIT_SPACING_M * (copy % 64), UNIT_SPACING_M * (1 + copy // 64), 0.0])


def synthesise(base: Path, out: Path, n_keyframes: int) -> int:
    """``out`` = ``base`` + copies of its unit up to ``n_keyframes`` (rows written directly)."""
    out.unlink(missing_ok=True)
    shutil.copy(base, out)
    conn = sqlite3.connect(str(out), isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    n_temple = len(read_posed_folder(DATA / TEMPLE, "db", check_images=False))
    cols = ("name, stamp_ns, image_format, image_sha256, width, height, fx, fy, cx, cy, T_world_cam, "
            "depth_height, depth_width, depth, image")
    unit = conn.execute(f"SELECT id, {cols} FROM keyframes WHERE id > ? ORDER BY id", (n_temple,)).fetchall()
    unit_ids = [r[0] for r in unit]
    blobs = {}
    for kf_id, backend, key, fp, data in conn.execute(
            "SELECT kf_id, backend, key, fingerprint, data FROM blobs WHERE kf_id > ?", (n_temple,)):
        blobs.setdefault(kf_id, []).append((backend, key, fp, data))
    next_id = conn.execute("SELECT MAX(id) FROM keyframes").fetchone()[0] + 1
    copy = 0
    conn.execute("BEGIN")
    while next_id - 1 + len(unit) <= n_keyframes:
        copy += 1
        offset = _unit_offset(copy)
        new_id = {old: next_id + p for p, old in enumerate(unit_ids)}
        for row in unit:
            kf_id, meta = row[0], list(row[1:])
            meta[0] = f"{meta[0]}@{copy}"
            meta[10] = _shifted(np.frombuffer(meta[10], "<f8").reshape(4, 4), offset).astype("<f8").tobytes()
            conn.execute(f"INSERT INTO keyframes(id, {cols}) VALUES (?{', ?' * len(meta)})", (new_id[kf_id], *meta))
            conn.execute("INSERT INTO keyframe_crc(kf_id, meta_crc32, depth_crc32) VALUES (?, ?, NULL)",
                         (new_id[kf_id], _meta_crc(*meta[:13])))
            for backend, key, fp, data in blobs.get(kf_id, []):
                if (backend, key) == ("geometric", "points"):
                    a = unpack_arrays(data)
                    a["points_world"] = a["points_world"] + offset
                    a["neighbour_ids"] = np.array([new_id[int(i)] for i in a["neighbour_ids"]], np.int64)
                    if "reanchor_T" in a:
                        from reloc_vggt_ros.geometry import shift_transform

                        a["reanchor_T"] = shift_transform(a["reanchor_T"], offset)
                    data = pack_arrays(a)
                conn.execute("INSERT INTO blobs(kf_id, backend, key, fingerprint, data, crc32) VALUES (?, ?, ?, ?, ?, ?)",
                             (new_id[kf_id], backend, key, fp, data, zlib.crc32(data)))
        next_id += len(unit)
    conn.execute("DELETE FROM map_blobs WHERE key IN ('graph', 'global_index')")   # the base's: recomputed
    conn.execute("UPDATE metadata SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
    conn.execute("COMMIT")
    conn.close()
    return next_id - 1


def build(base: Path, out: Path, n_keyframes: int) -> dict[str, float]:
    from reloc_vggt_ros.localizer.registry import index_database

    t0 = time.perf_counter()
    n = synthesise(base, out, n_keyframes)
    t1 = time.perf_counter()
    with KeyframeStore.open(out) as store:
        index_database(store, "geometric", **OPTIONS)
        store._conn.execute("PRAGMA journal_mode = DELETE")  # noqa: SLF001 - self-contained file, as db build
    t2 = time.perf_counter()
    return {"keyframes": n, "synth_s": t1 - t0, "index_s": t2 - t1, "build_s": t2 - t0,
            "db_mb": out.stat().st_size / 2**20}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _interleaved(locs: list[Any], images: list[tuple]) -> list[tuple[float, float]]:
    """``(wall, CPU)`` median ms of the queries on each localizer, run query by query in turn
    (two passes, the order alternated): load that comes and goes hits both alike."""
    times: list[list[tuple[float, float]]] = [[] for _ in locs]
    for rep in range(2):
        for img, intr, _ in images:
            for k in (range(len(locs)) if rep % 2 == 0 else reversed(range(len(locs)))):
                t, c = time.perf_counter(), time.process_time()
                locs[k].localize(img, intr)
                times[k].append((1e3 * (time.perf_counter() - t), 1e3 * (time.process_time() - c)))
    return [(float(np.median([w for w, _ in ts])), float(np.median([c for _, c in ts]))) for ts in times]


def measure(db: Path, ref: Path | None = None) -> dict[str, Any]:
    """In this (fresh) process: open like the node, then retrieval and queries on the temple.
    ``ref`` (the smallest map): afterwards its queries and this map's are timed in turn
    (:func:`_interleaved`) for the query-time ratio, which a shared machine's load would
    otherwise decide."""
    from reloc_vggt_ros.geometry import make_T, pose_error, so3_exp
    from reloc_vggt_ros.localizer.geometric.features import extract_features
    from reloc_vggt_ros.localizer.registry import make_localizer
    from reloc_vggt_ros.keyframes.build import keyframe_from_posed as posed

    queries = [posed(r) for r in read_posed_folder(DATA / TEMPLE, "query")]
    images = [(q.decode_image(), q.intrinsics, q.T_world_cam) for q in queries]
    import reloc_vggt_ros.localizer.geometric.localizer  # noqa: F401 - module imports: the same at any size
    from reloc_vggt_ros.localizer.geometric.matching import single_thread_blas

    rss0 = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    store = KeyframeStore.open(db, readonly=True)
    loc = make_localizer("geometric", store, **OPTIONS)
    open_s, open_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rss_open = _rss_mb()
    state = loc._state  # noqa: SLF001 - the retriever the queries use
    descs = [state.retriever.describe(extract_features(img, loc.config.query.features).descriptors)
             for img, _, _ in images]
    nudge = make_T(so3_exp(np.array([0.0, 0.02, 0.0])), np.array([1.0, 0.0, 0.0]))
    ret, ret_cpu, ret_prior = [], [], []
    with single_thread_blas():                     # as inside localize()
        for _ in range(20):
            for d, (_, _, T) in zip(descs, images):
                t, c = time.perf_counter(), time.process_time()
                state.retriever.rank(d, 8)
                ret.append(1e3 * (time.perf_counter() - t))
                ret_cpu.append(1e3 * (time.process_time() - c))
                T_prior = T.copy()
                T_prior[:3, 3] -= state.map.origin
                t = time.perf_counter()
                state.retriever.rank(d, 8, T_prior @ nudge)
                ret_prior.append(1e3 * (time.perf_counter() - t))
    per_query, times, cpu, cold = [], [], [], []
    for rep in range(3):
        for img, intr, T in images:
            t, c = time.perf_counter(), time.process_time()
            res = loc.localize(img, intr)
            dt = 1e3 * (time.perf_counter() - t)
            (times if rep else cold).append(dt)
            if rep:
                cpu.append(1e3 * (time.process_time() - c))
            if rep == 2:
                err = pose_error(res.T_world_cam, T) if res.T_world_cam is not None else (float("nan"),) * 2
                per_query.append({"status": res.status.value, "inliers": res.num_inliers,
                                  "t_err_m": float(err[0]), "r_err_deg": float(err[1])})
    cache, rss_queries = state.map.cache, _rss_mb()
    ratio: dict[str, float] = {}
    if ref is not None:
        ref_loc = make_localizer("geometric", KeyframeStore.open(ref, readonly=True), **OPTIONS)
        for img, intr, _ in images:                          # its cache warm, as this map's is
            ref_loc.localize(img, intr)
        (big, big_cpu), (small, small_cpu) = _interleaved([loc, ref_loc], images)
        ratio = {"query_vs_smallest": big / small, "query_cpu_vs_smallest": big_cpu / small_cpu,
                 "interleaved_query_ms_p50": big, "interleaved_smallest_query_ms_p50": small}
    return {**ratio, "open_s": open_s, "open_cpu_s": open_cpu_s, "rss_before_open_mb": rss0, "rss_mb": rss_open, "rss_after_queries_mb": rss_queries,
            "retrieval_ms_p50": float(np.median(ret)), "retrieval_cpu_ms_p50": float(np.median(ret_cpu)),
            "retrieval_prior_ms_p50": float(np.median(ret_prior)),
            "query_ms_p50": float(np.median(times)), "query_cpu_ms_p50": float(np.median(cpu)),
            "query_cold_ms_p50": float(np.median(cold)),
            "cache_mb": cache.nbytes / 2**20 if cache else 0.0, "index_kind": state.retriever.index.kind,
            "ok": sum(q["status"] == "ok" for q in per_query), "queries": per_query}


def refresh_time(db: Path) -> dict[str, float]:
    """Live mapping on the big map: one keyframe added (a temple query image at its pose), then the
    localizer's refresh timed (the node runs it off the frame path; this is how long the old map
    keeps answering)."""
    from reloc_vggt_ros.localizer.registry import make_localizer

    with KeyframeStore.open(db) as store:
        loc = make_localizer("geometric", store, **OPTIONS)
        kf = keyframe_from_posed(read_posed_folder(DATA / TEMPLE, "query")[0])
        store.add_keyframe(kf)
        t, c = time.perf_counter(), time.process_time()
        loc.refresh()
        return {"refresh_s": time.perf_counter() - t, "refresh_cpu_s": time.process_time() - c,
                "refresh_computed": dict(loc._map.computed)}  # noqa: SLF001


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("keyframes", "build_s", "index_s", "db_mb", "open_s", "open_cpu_s", "rss_mb", "rss_after_queries_mb",
            "retrieval_ms_p50", "retrieval_cpu_ms_p50", "retrieval_prior_ms_p50", "query_ms_p50", "query_cpu_ms_p50", "query_cold_ms_p50",
            "refresh_s", "refresh_cpu_s", "ok", "same_as_smallest", "query_vs_smallest", "query_cpu_vs_smallest")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join(f"{r[h]:.3g}" if isinstance(r.get(h), float) else str(r.get(h, "-")) for h in head))
    return "\n".join(lines)


_LINEAR = ("build_s", "index_s", "db_mb", "open_s", "open_cpu_s", "rss_mb", "refresh_s", "refresh_cpu_s")
_RETRIEVAL = ("retrieval_ms_p50", "retrieval_cpu_ms_p50", "retrieval_prior_ms_p50")


def _fit(x: np.ndarray, y: np.ndarray, at: float) -> float | None:
    """Least-squares line through ``(x, y)`` evaluated at ``at``; a line that falls (noise over
    what does not grow) gives the largest measured value instead. None without two points."""
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return None
    b, a = np.polyfit(x[ok], y[ok], 1)
    return float(a + b * at) if b > 0 else float(np.max(y[ok]))


def extrapolate(rows: list[dict[str, Any]], n_keyframes: int) -> dict[str, Any]:
    """A row for ``n_keyframes`` from the measured growth (labelled ``extrapolated``): what the map
    holds or reads per keyframe (build, file, start-up, memory, refresh) as a line in the number of
    keyframes (memory after the queries: plus the most the queries added); retrieval as a line in its square root over the maps with the inverted-list index
    (a query scans ``index_probe`` of ~sqrt(N) lists: ~sqrt(N) entries); query time as the largest
    map's plus the retrieval's growth (the rest of a query works on its top-k keyframes, whatever
    the map's size)."""
    measured = [r for r in rows if "queries" in r]
    x = np.array([r["keyframes"] for r in measured], float)
    out: dict[str, Any] = {"keyframes": n_keyframes,
                           "extrapolated": f"fit over the measured {', '.join(str(int(v)) for v in x)} (see docstring)"}
    for col in _LINEAR:
        value = _fit(x, np.array([r.get(col, np.nan) for r in measured], float), n_keyframes)
        if value is not None:
            out[col] = value
    ivf = [r for r in measured if r.get("index_kind") != "flat"]
    xs = np.sqrt([r["keyframes"] for r in ivf])
    for col in _RETRIEVAL:
        value = _fit(xs, np.array([r.get(col, np.nan) for r in ivf], float), float(np.sqrt(n_keyframes)))
        if value is not None:
            out[col] = value
    if "rss_mb" in out:                                  # plus what the queries added (the cache), at most as measured
        out["rss_after_queries_mb"] = out["rss_mb"] + max(r["rss_after_queries_mb"] - r["rss_mb"] for r in measured)
    last = max(measured, key=lambda r: r["keyframes"])
    grow = out.get("retrieval_ms_p50", last["retrieval_ms_p50"]) - last["retrieval_ms_p50"]
    grow_cpu = out.get("retrieval_cpu_ms_p50", last["retrieval_cpu_ms_p50"]) - last["retrieval_cpu_ms_p50"]
    out["query_ms_p50"] = last["query_ms_p50"] + grow
    out["query_cpu_ms_p50"] = last["query_cpu_ms_p50"] + grow_cpu
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--work", default="/tmp/map_scale", help="where the maps are built (GBs)")
    ap.add_argument("--keep", action="store_true", help="keep the maps (else each is deleted after measuring)")
    ap.add_argument("--extrapolate", type=int, nargs="*", default=[100_000],
                    help="sizes not measured: a row each from the measured growth (labelled extrapolated)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.child), Path(args.ref) if args.ref else None)))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = build_base(work / "base.db")
    per_kf_mb = base.stat().st_size / 2**20 / 50
    rows: list[dict[str, Any]] = []
    smallest: Path | None = None       # kept unchanged (its refresh is timed last) for the interleaved ratio
    for n in sorted(args.keyframes):
        free_mb = shutil.disk_usage(work).free / 2**20
        if per_kf_mb * n * 1.2 + 4096 > free_mb:
            print(f"{n} keyframes: ~{per_kf_mb * n:.0f} MB of map, {free_mb:.0f} MB free on {work}: skipped")
            rows.append({"keyframes": n, "skipped": f"needs ~{per_kf_mb * n / 1024:.0f} GB of disk"})
            continue
        db = work / f"map_{n}.db"
        row = build(base, db, n)
        child = subprocess.run([sys.executable, "-m", "bench.map_scale", "--child", str(db),
                                *(["--ref", str(smallest)] if smallest else [])], capture_output=True, text=True,
                               check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        row.update(json.loads(child.stdout.strip().splitlines()[-1]))
        first = next((r for r in rows if "queries" in r), None)
        row["same_as_smallest"] = first is None or all(
            (a["status"], a["inliers"]) == (b["status"], b["inliers"]) for a, b in zip(first["queries"], row["queries"]))
        if smallest is None:           # the reference of the target (query time within 10 % of its)
            smallest, row["query_vs_smallest"], row["query_cpu_vs_smallest"] = db, 1.0, 1.0
        else:
            row.update(refresh_time(db))
            if not args.keep:
                db.unlink()
        rows.append(row)
        print(_table([row]).splitlines()[-1], flush=True)
    if smallest is not None:           # its refresh adds a keyframe: timed once nothing compares against it
        next(r for r in rows if "queries" in r).update(refresh_time(smallest))
        if not args.keep:
            smallest.unlink()
    measured = [r for r in rows if "queries" in r]
    if len(measured) >= 2:
        rows += [extrapolate(rows, n) for n in args.extrapolate if n not in {r["keyframes"] for r in measured}]
    print(_table([r for r in rows if "queries" in r or "extrapolated" in r]))
    for r in rows:
        if "extrapolated" in r:
            print(f"{r['keyframes']} keyframes: extrapolated ({r['extrapolated']}), not measured")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
