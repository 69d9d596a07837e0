"""Relocalization metrics over a set of queries: medians, recalls at thresholds, latency.

One definition of each metric, used by ``reloc-vggt bench localize`` and ``reloc-vggt evaluate``
so that both write the same JSON keys and the same numbers for the same poses:
:func:`summarize` (medians, recalls, latency) and :func:`median_baseline` (the scene scale of the
relative thresholds); :func:`summarize_against_map` combines them. Unlocalized queries carry
``inf`` errors: they count in ``n_queries`` and against every recall, never in the medians.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ..errors import ConfigError
from ..geometry import recall_at

__all__ = ["Threshold", "DEFAULT_THRESHOLDS", "SCENE_SCALE_KIND", "summarize", "median_baseline",
           "summarize_against_map", "write_metrics_json"]

# (name, max translation: metres or "<p>pct" of scene_scale, max rotation in degrees)
Threshold = tuple[str, Union[float, str], float]

DEFAULT_THRESHOLDS: tuple[Threshold, ...] = (
    ("5cm_1deg", 0.05, 1.0),
    ("10cm_1deg", 0.10, 1.0),
    ("25cm_2deg", 0.25, 2.0),
    ("5cm_5deg", 0.05, 5.0),
    ("1pct_1deg", "1pct", 1.0),
    ("5pct_1deg", "5pct", 1.0),
)

SCENE_SCALE_KIND = "median nearest-neighbour db baseline"


def _t_max(spec: float | str, scene_scale: float) -> float:
    if isinstance(spec, str):
        if not spec.endswith("pct"):
            raise ConfigError(f"relative threshold must look like '1pct', got {spec!r}")
        try:
            return float(spec[:-3]) / 100.0 * scene_scale
        except ValueError as err:
            raise ConfigError(f"relative threshold must look like '1pct', got {spec!r}") from err
    return float(spec)


def _finite_stat(values: np.ndarray, fn: Any) -> float | None:
    return float(fn(values)) if values.size else None


def summarize(t_err: Sequence[float] | np.ndarray, r_err_deg: Sequence[float] | np.ndarray,
              latencies_ms: Sequence[float] | np.ndarray, scene_scale: float = 1.0,
              thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """Metrics dict with the keys of ``metrics.json``.

    ``t_err`` [N] metres and ``r_err_deg`` [N] degrees per query (``inf`` = not localized);
    ``latencies_ms`` of the answered queries; ``scene_scale`` (same units as ``t_err``) turns
    relative thresholds such as ``"1pct"`` into metres. Medians/means are over localized queries
    and None when there are none.
    """
    t = np.asarray(t_err, float).reshape(-1)
    r = np.asarray(r_err_deg, float).reshape(-1)
    if t.shape != r.shape:
        raise ConfigError(f"{t.size} translation errors but {r.size} rotation errors")
    if not (math.isfinite(scene_scale) and scene_scale > 0):
        raise ConfigError(f"scene_scale must be finite and > 0, got {scene_scale}")
    lat = np.asarray(latencies_ms, float).reshape(-1)
    lat = lat[np.isfinite(lat)]
    localized = np.isfinite(t) & np.isfinite(r)
    recall: dict[str, float] = {}
    thresholds_m: dict[str, list[float]] = {}
    for name, t_spec, r_max in thresholds:
        t_max = _t_max(t_spec, scene_scale)
        recall[name] = recall_at(t, r, t_max, r_max)
        thresholds_m[name] = [t_max, float(r_max)]
    return {
        "n_queries": int(t.size),
        "n_localized": int(localized.sum()),
        "fraction_localized": float(localized.mean()) if t.size else 0.0,
        "median_translation_m": _finite_stat(t[localized], np.median),
        "median_rotation_deg": _finite_stat(r[localized], np.median),
        "mean_translation_m": _finite_stat(t[localized], np.mean),
        "mean_rotation_deg": _finite_stat(r[localized], np.mean),
        "recall": recall,
        "recall_thresholds": thresholds_m,
        "latency_ms_p50": _finite_stat(lat, lambda v: np.percentile(v, 50)),
        "latency_ms_p95": _finite_stat(lat, lambda v: np.percentile(v, 95)),
    }


def median_baseline(T_world_cams: np.ndarray, chunk: int = 256, default: float | None = None) -> float:
    """The scene scale: median distance from each map camera to its nearest other (distinct) one.

    Relative thresholds (``1pct``, ``5pct``) are fractions of this. It is the map's camera
    spacing, i.e. how far a query can be from the keyframe it is localized against, so "1 % of
    the baseline" means the same accuracy on a 3-view desk scene and a 300-view building; the
    map extent (largest camera distance) instead grows with every keyframe added, making the
    same pose error pass on a big map and fail on a small one. The README tables use it too, and
    so does ``db info``. ``T_world_cams`` [N,4,4] camera-to-world of the map (db) cameras (or
    camera centres [N,3]); coincident cameras (distance 0) are ignored; distances are computed
    ``chunk`` rows at a time for the cameras a k-d tree cannot settle (a 100k-keyframe map needs
    no N x N matrix, nor N x N time: 10k keyframes take milliseconds). With fewer than
    two distinct cameras: ``default`` if given, else a ConfigError.
    """
    from scipy.spatial import cKDTree

    T = np.asarray(T_world_cams, float)
    C = T[:, :3, 3] if T.ndim == 3 else T.reshape(-1, 3)
    if len(C) < 2:
        if default is not None:
            return default
        raise ConfigError("need at least two cameras for a baseline")
    # the nearest distinct camera among the 2 (then 8) nearest (distances recomputed as below: same bits)
    tree = cKDTree(C)
    nearest = np.full(len(C), np.inf)
    rows = np.arange(len(C))
    for k in (2, 8):
        _, cand = tree.query(C[rows], min(k, len(C)))
        d = np.linalg.norm(C[rows, None, :] - C[cand], axis=2)
        d[d <= 1e-12] = np.inf
        nearest[rows] = d.min(axis=1)
        rows = rows[~np.isfinite(nearest[rows])]
    for i in rows:                                            # 8+ cameras at one place: all of them
        row = np.linalg.norm(C[i:i + 1, None, :] - C[None, :, :], axis=2)[0]
        row[row <= 1e-12] = np.inf
        nearest[i] = row.min()
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        if default is not None:
            return default
        raise ConfigError("all cameras coincide; no baseline")
    return float(np.median(nearest))


def summarize_against_map(t_err: Sequence[float] | np.ndarray, r_err_deg: Sequence[float] | np.ndarray,
                          latencies_ms: Sequence[float] | np.ndarray, map_T_world_cams: np.ndarray,
                          thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """:func:`summarize` with the scene scale of the map whose cameras are ``map_T_world_cams``
    [N,4,4]; adds ``scene_scale_m`` and ``scene_scale_kind``. Every caller scoring queries against
    a map goes through here, so relative recalls agree across tools."""
    scale = median_baseline(map_T_world_cams)
    metrics = summarize(t_err, r_err_deg, latencies_ms, scene_scale=scale, thresholds=thresholds)
    metrics.update(scene_scale_m=scale, scene_scale_kind=SCENE_SCALE_KIND)
    return metrics


def write_metrics_json(metrics: dict[str, Any], path: Path | str) -> Path:
    """Write a metrics dict (numpy scalars and arrays allowed) as indented JSON; makes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return path


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
