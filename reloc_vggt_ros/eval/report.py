"""What a replay produced, scored and reported: ROS-free, so it is testable without a node.

:class:`EvalRun` holds the estimates a replay recorded per header stamp (``ros/evaluate.py``
fills it); :func:`score` turns it into the ``metrics.json`` dict through
:func:`~reloc_vggt_ros.eval.metrics.summarize_against_map` (the same metric definitions as
``reloc-vggt bench localize``); :func:`write_outputs` writes ``metrics.json``, ``poses.csv`` and
``evaluation.png``; :func:`format_table` is the table ``reloc-vggt evaluate`` and ``demo`` print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import pose_error
from .metrics import summarize_against_map, write_metrics_json

__all__ = ["EvalRun", "map_poses", "score", "write_outputs", "format_table"]


@dataclass
class EvalRun:
    """What one replay produced: per-stamp estimates and latencies, plus the node's last diagnostics."""

    gt: dict[int, np.ndarray]
    estimates: dict[int, np.ndarray] = field(default_factory=dict)
    covariances: dict[int, np.ndarray] = field(default_factory=dict)
    latency_ms: dict[int, float] = field(default_factory=dict)
    published_at: dict[int, float] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)


def map_poses(db: Path | str) -> np.ndarray:
    """Camera-to-world poses [N,4,4] of the keyframes in database ``db`` (the map scored against)."""
    from ..keyframes import KeyframeStore

    with KeyframeStore.open(db, readonly=True) as store:
        return store.poses()[1]


def score(run: EvalRun, map_T_world_cams: np.ndarray) -> dict[str, Any]:
    """Errors per ground-truth stamp (unlocalized = inf), summarized against the map's cameras."""
    stamps = sorted(run.gt)
    t_err = np.full(len(stamps), np.inf)
    r_err = np.full(len(stamps), np.inf)
    for i, s in enumerate(stamps):
        if s in run.estimates:
            t_err[i], r_err[i] = pose_error(run.estimates[s], run.gt[s])
    latencies = np.array([run.latency_ms[s] for s in stamps if s in run.latency_ms], float)
    metrics = summarize_against_map(t_err, r_err, latencies, map_T_world_cams)
    metrics["per_query"] = [
        {"stamp_ns": s, "t_err_m": None if not np.isfinite(t) else float(t),
         "r_err_deg": None if not np.isfinite(r) else float(r), "latency_ms": run.latency_ms.get(s)}
        for s, t, r in zip(stamps, t_err, r_err)]
    metrics["node_diagnostics"] = run.diagnostics
    return metrics


def write_outputs(run: EvalRun, metrics: dict[str, Any], out_dir: Path) -> None:
    """metrics.json, poses.csv (stamp, est and GT camera centres) and evaluation.png."""
    write_metrics_json(metrics, out_dir / "metrics.json")
    with open(out_dir / "poses.csv", "w") as f:
        f.write("stamp_ns,gt_x,gt_y,gt_z,est_x,est_y,est_z\n")
        for s in sorted(run.gt):
            g = run.gt[s][:3, 3]
            e = run.estimates[s][:3, 3] if s in run.estimates else (np.nan,) * 3
            f.write(f"{s},{g[0]:.6f},{g[1]:.6f},{g[2]:.6f},{e[0]:.6f},{e[1]:.6f},{e[2]:.6f}\n")
    from .plots import plot_evaluation

    plot_evaluation(run.gt, run.estimates, metrics, out_dir / "evaluation.png")


def format_table(metrics: dict[str, Any]) -> str:
    """The evaluation as a small text table (what `reloc-vggt evaluate` and `demo` print)."""
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    rec = metrics.get("recall", {})
    rows = [
        ("queries", str(metrics["n_queries"])),
        ("localized", f"{metrics['n_localized']} ({f(metrics['n_localized'] / max(metrics['n_queries'], 1), '.0%')})"),
        ("median translation error", f"{f(metrics.get('median_translation_m'), '.4f')} m"),
        ("mean translation error", f"{f(metrics.get('mean_translation_m'), '.4f')} m"),
        ("median rotation error", f"{f(metrics.get('median_rotation_deg'), '.2f')} deg"),
        ("mean rotation error", f"{f(metrics.get('mean_rotation_deg'), '.2f')} deg"),
        ("recall (5 cm, 5 deg)", f(rec.get("5cm_5deg"), ".0%")),
        ("recall (25 cm, 2 deg)", f(rec.get("25cm_2deg"), ".0%")),
        (f"recall (1% of median db baseline {f(metrics.get('scene_scale_m'), '.3g')} m, 1 deg)",
         f(rec.get("1pct_1deg"), ".0%")),
        ("latency p50 / p95", f"{f(metrics.get('latency_ms_p50'), '.0f')} / {f(metrics.get('latency_ms_p95'), '.0f')} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
