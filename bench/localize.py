"""Localization benchmark over a posed scene folder: db split -> database, every query localized.

:func:`bench_localize` is a function over paths returning the metrics dict (keys of
``metrics.json``, see :func:`reloc_vggt_ros.eval.metrics.summarize`) plus per-query details.
Relative recall thresholds (``1pct``/``5pct``) are fractions of the median db baseline (median
distance from a db camera to its nearest other db camera).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reloc_vggt_ros.data import PosedImage, load_image, read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.eval.metrics import median_baseline, summarize, write_metrics_json as write_json
from reloc_vggt_ros.geometry import pose_error, so3_log
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer.registry import index_database, make_localizer

__all__ = ["bench_localize", "format_report", "write_json"]

logger = logging.getLogger(__name__)


def _resized(rec: PosedImage, size: tuple[int, int] | None) -> tuple[np.ndarray, Any]:
    """Image and intrinsics of ``rec`` at ``size`` (w, h) (native if None)."""
    img = load_image(rec.path)
    if size is None or (img.shape[1], img.shape[0]) == size:
        return img, rec.intrinsics
    w, h = img.shape[1], img.shape[0]
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return out, rec.intrinsics.scaled(size[0] / w, size[1] / h)


def _keyframe(rec: PosedImage, size: tuple[int, int] | None) -> Keyframe:
    if size is None:
        return keyframe_from_posed(rec)
    img, intr = _resized(rec, size)
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
    ``db_path``: where to keep the database (a temporary file if None). A database an earlier run
    wrote there for the same scene, split and size is reused (only missing blobs are indexed,
    e.g. when another preset's map settings differ); anything else there is replaced.
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
        with _bench_store(path, source, db_recs, size) as store:
            t0 = time.perf_counter()
            index_database(store, backend, **options)
            index_s = time.perf_counter() - t0
            localizer = make_localizer(backend, store, **options)
            per_query = [_run_query(localizer, q, size) for q in queries]
    scale = median_baseline(np.stack([r.T_world_cam for r in db_recs]))
    t_err = [q["t_err_m"] if q["status"] == "ok" else np.inf for q in per_query]
    r_err = [q["r_err_deg"] if q["status"] == "ok" else np.inf for q in per_query]
    metrics = summarize(t_err, r_err, [q["latency_ms"] for q in per_query], scene_scale=scale)
    t5, r5 = metrics["recall_thresholds"]["5pct_1deg"]
    wrong = [q["name"] for q in per_query if q["status"] == "ok" and (q["t_err_m"] > t5 or q["r_err_deg"] > r5)]
    nees = [q["nees"] for q in per_query if q.get("nees") is not None]
    cpu = [q["cpu_ms"] for q in per_query]
    metrics.update({
        "scene": scene.name, "backend": backend, "options": options,
        "image_size": list(size) if size else "native", "scene_scale_m": scale,
        "scene_scale_kind": "median nearest-neighbour db baseline",
        "n_db": len(db_recs), "index_s": index_s,
        "n_ok_but_wrong": len(wrong), "ok_but_wrong": wrong,
        "nees_over_6_median": float(np.median(nees) / 6.0) if nees else None,
        "cpu_ms_p50": float(np.percentile(cpu, 50)), "cpu_ms_p95": float(np.percentile(cpu, 95)),
        "per_query": per_query,
    })
    return metrics


def _bench_store(path: Path, source: str, db_recs: list[PosedImage], size: tuple[int, int] | None
                 ) -> KeyframeStore:
    """The database of an earlier run on the same scene, split and size (its backend blobs are
    reused, only what is missing gets indexed), else a new one replacing whatever is at ``path``."""
    if path.exists():
        store = KeyframeStore.open(path)
        if store.metadata.get("bench_source") == source and len(store) == len(db_recs):
            logger.info("reusing %s (same scene, split and size)", path)
            return store
        store.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = KeyframeStore.create(path, units="m", creator="reloc-vggt bench localize")
    store.add_keyframes([_keyframe(r, size) for r in db_recs])
    store.set_metadata("bench_source", source)
    return store


def _run_query(localizer: Any, rec: PosedImage, size: tuple[int, int] | None) -> dict[str, Any]:
    img, intr = _resized(rec, size)
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
