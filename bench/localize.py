"""Localization benchmark over a posed scene folder: db split -> database, every query localized.

    .venv/bin/python -m bench.localize --scene ../shared/data/fountain-P11 --json /tmp/fountain.json
    # = reloc-vggt bench localize (same arguments)

:func:`bench_localize` is a function over paths returning the metrics dict (keys of
``metrics.json``, see :func:`reloc_vggt_ros.eval.metrics.summarize_against_map`, the same
definitions ``reloc-vggt evaluate`` uses) plus per-query details. Relative recall thresholds
(``1pct``/``5pct``) are fractions of the median db baseline
(:func:`reloc_vggt_ros.eval.metrics.median_baseline`).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reloc_vggt_ros.data import PosedImage, load_image, read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.eval.metrics import summarize_against_map, write_metrics_json as write_json
from reloc_vggt_ros.geometry import pose_error, so3_log
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer.registry import index_database, make_localizer

__all__ = ["bench_localize", "score_queries", "format_report", "write_json", "main"]

logger = logging.getLogger(__name__)


def resized_image(rec: PosedImage, size: tuple[int, int] | None) -> tuple[np.ndarray, Any]:
    """Image and intrinsics of ``rec`` at ``size`` (w, h) (native if None)."""
    img = load_image(rec.path)
    if size is None or (img.shape[1], img.shape[0]) == size:
        return img, rec.intrinsics
    w, h = img.shape[1], img.shape[0]
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return out, rec.intrinsics.scaled(size[0] / w, size[1] / h)


def keyframe_at(rec: PosedImage, size: tuple[int, int] | None) -> Keyframe:
    if size is None:
        return keyframe_from_posed(rec)
    img, intr = resized_image(rec, size)
    ok, buf = cv2.imencode(".png", img)            # lossless: the resize is the only change
    if not ok:
        raise DataError(f"cannot encode {rec.path}")
    return Keyframe(rec.name, buf.tobytes(), intr, rec.T_world_cam)


def _nees(T_est: np.ndarray, T_gt: np.ndarray, cov: np.ndarray) -> float:
    """Normalised estimation error squared over (x y z rx ry rz), world frame, left rotation."""
    e = np.concatenate([T_est[:3, 3] - T_gt[:3, 3], so3_log(T_est[:3, :3] @ T_gt[:3, :3].T)])
    return float(e @ np.linalg.solve(cov, e))


def bench_localize(scene: Path | str, backend: str = "geometric", size: tuple[int, int] | None = None,
                   db_path: Path | str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a database from ``scene``'s db split, localize each query, return the metrics.

    ``size`` = (width, height) to resize every image to (intrinsics scaled), None = native.
    ``db_path``: where to keep the database (a temporary file if None). A database there that
    holds exactly this scene's db split at this size (same keyframe names, poses, intrinsics and
    image sizes), e.g. from ``reloc-vggt db build`` or an earlier run, is reused: only missing
    backend blobs are indexed (``db build --max-side`` stores resized keyframes as JPEG where bench
    stores lossless PNG, so resized runs on such a database may differ slightly; ``db_creator`` in
    the metrics says which was used). One an earlier bench run created for other settings is
    replaced; any other file is never touched (DataError saying what differs).
    ``options`` go to :func:`make_localizer` / :func:`index_database` (e.g. ``{"top_k": 8}``).
    """
    scene, options = Path(scene), dict(options or {})
    db_recs, queries = read_posed_folder(scene, "db"), read_posed_folder(scene, "query")
    if not db_recs or not queries:
        raise DataError(f"{scene}: need both db and query images in split.txt")
    source = json.dumps({"scene": str(scene.resolve()), "size": list(size) if size else "native",
                         "db": [r.name for r in db_recs]})
    with tempfile.TemporaryDirectory(prefix="reloc-bench-") as tmp:
        path = Path(db_path) if db_path else Path(tmp) / "bench.db"
        with _bench_store(path, scene, source, db_recs, size) as store:
            db_creator = store.metadata.get("creator", "")
            t0 = time.perf_counter()
            index_database(store, backend, **options)
            index_s = time.perf_counter() - t0
            localizer = make_localizer(backend, store, **options)
            per_query = [_run_query(localizer, q, size) for q in queries]
    metrics = score_queries(per_query, np.stack([r.T_world_cam for r in db_recs]))
    t5, r5 = metrics["recall_thresholds"]["5pct_1deg"]
    wrong = [q["name"] for q in per_query if q["status"] == "ok" and (q["t_err_m"] > t5 or q["r_err_deg"] > r5)]
    nees = [q["nees"] for q in per_query if q.get("nees") is not None]
    cpu = [q["cpu_ms"] for q in per_query]
    metrics.update({
        "scene": scene.name, "backend": backend, "options": options,
        "image_size": list(size) if size else "native", "n_db": len(db_recs), "db_creator": db_creator,
        "index_s": index_s,
        "n_ok_but_wrong": len(wrong), "ok_but_wrong": wrong,
        "nees_over_6_median": float(np.median(nees) / 6.0) if nees else None,
        "cpu_ms_p50": float(np.percentile(cpu, 50)), "cpu_ms_p95": float(np.percentile(cpu, 95)),
        "per_query": per_query,
    })
    return metrics


def score_queries(per_query: list[dict[str, Any]], map_T_world_cams: np.ndarray) -> dict[str, Any]:
    """The metrics of per-query rows (``status``, ``t_err_m``, ``r_err_deg``, ``latency_ms``) against
    the map's cameras; a query counts as localized only with status ``ok``."""
    t_err = [q["t_err_m"] if q["status"] == "ok" else np.inf for q in per_query]
    r_err = [q["r_err_deg"] if q["status"] == "ok" else np.inf for q in per_query]
    return summarize_against_map(t_err, r_err, [q["latency_ms"] for q in per_query], map_T_world_cams)


def _size_text(size: tuple[int, int] | None) -> str:
    return "native size" if size is None else f"{size[0]}x{size[1]}"


def _split_differences(store: KeyframeStore, db_recs: list[PosedImage], size: tuple[int, int] | None
                       ) -> list[str]:
    """What keeps ``store`` from holding exactly ``db_recs`` at ``size`` (empty: it does)."""
    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    want = {r.name: r for r in db_recs}
    have: dict[str, tuple[Any, np.ndarray]] = {}
    duplicates = []
    for kf in store.iter_keyframes():
        if kf.name in have:
            duplicates.append(kf.name)
        have[kf.name] = (kf.intrinsics, kf.T_world_cam)
    diffs = []
    if duplicates:
        diffs.append(f"duplicate keyframe names {some(duplicates)}")
    if missing := [n for n in want if n not in have]:
        diffs.append(f"{len(missing)} db image(s) missing: {some(missing)}")
    if extra := [n for n in have if n not in want]:
        diffs.append(f"{len(extra)} keyframe(s) not in the db split: {some(extra)}")
    bad_pose, bad_size, bad_intr = [], [], []
    for name, rec in want.items():
        if name not in have:
            continue
        intr, T = have[name]
        w, h = size or (rec.intrinsics.width, rec.intrinsics.height)
        expected = rec.intrinsics.scaled(w / rec.intrinsics.width, h / rec.intrinsics.height)
        if not np.allclose(T, rec.T_world_cam, rtol=0.0, atol=1e-9):
            bad_pose.append(name)
        if (intr.width, intr.height) != (w, h):
            bad_size.append(f"{name} is {intr.width}x{intr.height}")
        elif not np.allclose(intr.K, expected.K, rtol=1e-6, atol=1e-6):
            bad_intr.append(name)
    if bad_pose:
        diffs.append(f"poses differ for {some(bad_pose)}")
    if bad_size:
        diffs.append(f"image sizes differ ({_size_text(size)} wanted): {some(bad_size)}")
    if bad_intr:
        diffs.append(f"intrinsics differ for {some(bad_intr)}")
    return diffs


def _bench_store(path: Path, scene: Path, source: str, db_recs: list[PosedImage], size: tuple[int, int] | None
                 ) -> KeyframeStore:
    """The database at ``path`` if it holds exactly the db split at ``size`` (its backend blobs are
    reused, only what is missing gets indexed); else a new one. Only a file an earlier bench run
    created (``bench_source`` tag) is replaced; anything else raises DataError and stays as it is."""
    if path.exists():
        with KeyframeStore.open(path, readonly=True) as store:     # a refused file stays byte-identical
            diffs = _split_differences(store, db_recs, size)
            ours = "bench_source" in store.metadata
        if not diffs:
            logger.info("reusing %s (holds %s's db split at %s)", path, scene.name, _size_text(size))
            return KeyframeStore.open(path)
        if not ours:
            raise DataError(
                f"{path} does not hold {scene}'s db split at {_size_text(size)}: {'; '.join(diffs)}. "
                "bench localize did not create it, so it is left untouched: pass another --db path "
                "(bench localize creates the database there), or rebuild this one with "
                f"`reloc-vggt db build --images {scene} --out {path} --split db --overwrite`"
                + ("" if size is None else " (with --max-side if that gives the same size)"))
        logger.info("replacing %s (an earlier bench database; %s)", path, "; ".join(diffs))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = KeyframeStore.create(path, units="m", creator="reloc-vggt bench localize")
    store.add_keyframes([keyframe_at(r, size) for r in db_recs])
    store.set_metadata("bench_source", source)
    return store


def _run_query(localizer: Any, rec: PosedImage, size: tuple[int, int] | None) -> dict[str, Any]:
    img, intr = resized_image(rec, size)
    t0, c0 = time.perf_counter(), time.process_time()
    res = localizer.localize(img, intr)
    latency_ms = 1e3 * (time.perf_counter() - t0)
    cpu_ms = 1e3 * (time.process_time() - c0)    # load-independent: CPU time of all threads
    row: dict[str, Any] = {"name": rec.name, "status": res.status.value, "confidence": res.confidence,
                           "num_inliers": res.num_inliers, "latency_ms": latency_ms, "cpu_ms": cpu_ms,
                           "reason": res.reason,
                           "t_err_m": None, "r_err_deg": None, "nees": None}
    if res.T_world_cam is not None:
        row["t_err_m"], row["r_err_deg"] = pose_error(res.T_world_cam, rec.T_world_cam)
        if res.covariance is not None and np.all(np.isfinite(res.covariance)):
            row["nees"] = _nees(res.T_world_cam, rec.T_world_cam, res.covariance)
    for key in ("feature_ms", "match_ms", "pnp_ms", "lk_ms", "lk_tracked", "lk_attempted", "method",
                "num_matches_2d3d", "inlier_ratio", "inlier_spread", "reproj_rms_px"):
        if key in res.diagnostics:
            row[key] = res.diagnostics[key]
    logger.info("%s: %s t=%.4f m r=%.3f deg conf=%.2f %.0f ms %s", rec.name, row["status"],
                row["t_err_m"] if row["t_err_m"] is not None else float("nan"),
                row["r_err_deg"] if row["r_err_deg"] is not None else float("nan"),
                res.confidence, latency_ms, res.reason)
    return row


def format_report(m: dict[str, Any]) -> str:
    """One scene's metrics as a few readable lines."""
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    rec = m["recall"]
    lines = [
        f"scene {m['scene']} ({m['backend']}, {m['image_size']}, {m['n_db']} db / {m['n_queries']} queries, "
        f"median db baseline {m['scene_scale_m']:.4f})",
        f"  localized {m['n_localized']}/{m['n_queries']} ({m['fraction_localized']:.0%}), "
        f"ok-but-wrong {m['n_ok_but_wrong']}",
        f"  median error {f(m['median_translation_m'] and m['median_translation_m'] * 100, '.3f')} cm / "
        f"{f(m['median_rotation_deg'], '.4f')} deg",
        "  recall " + "  ".join(f"{k} {v:.0%}" for k, v in rec.items()),
        f"  latency p50 {f(m['latency_ms_p50'], '.0f')} ms  p95 {f(m['latency_ms_p95'], '.0f')} ms  "
        f"(CPU time p50 {m['cpu_ms_p50']:.0f} ms  p95 {m['cpu_ms_p95']:.0f} ms)  "
        f"(map indexing {m['index_s']:.1f} s)",
        f"  NEES/6 median {f(m['nees_over_6_median'], '.2f')} (1 = covariance matches the errors)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.localize ARGS`` = ``reloc-vggt bench localize ARGS`` (one argument parser)."""
    from reloc_vggt_ros.cli import main as cli_main

    return cli_main(["bench", "localize", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
