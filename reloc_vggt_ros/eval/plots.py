"""Evaluation figure: trajectory top view (ground truth vs estimate) and error over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["top_view_axes", "plot_evaluation"]


def top_view_axes(points: np.ndarray) -> np.ndarray:
    """3x2 projection onto the two directions of largest spread (scene frames are arbitrary)."""
    P = np.asarray(points, float)
    if len(P) < 3:
        return np.eye(3)[:, :2]
    _, _, Vt = np.linalg.svd(P - P.mean(0), full_matrices=False)
    return Vt[:2].T


def plot_evaluation(gt: dict[int, np.ndarray], est: dict[int, np.ndarray], metrics: dict[str, Any],
                    path: Path | str) -> Path:
    """Write a PNG with the top view (lines join each estimate to its ground truth) and errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stamps = sorted(gt)
    G = np.array([gt[s][:3, 3] for s in stamps])
    A = top_view_axes(G)
    g2 = G @ A
    t0 = stamps[0]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(12, 5))
    ax.plot(g2[:, 0], g2[:, 1], "o-", color="tab:green", label="ground truth", ms=5)
    loc = [s for s in stamps if s in est]
    if loc:
        e2 = np.array([est[s][:3, 3] for s in loc]) @ A
        ax.plot(e2[:, 0], e2[:, 1], "x", color="tab:red", label="estimate", ms=8, mew=2)
        for s, p in zip(loc, e2):
            q = g2[stamps.index(s)]
            ax.plot([p[0], q[0]], [p[1], q[1]], "-", color="tab:red", lw=0.8, alpha=0.6)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"top view: {len(loc)}/{len(stamps)} localized")
    ax.set_xlabel("principal axis 1 [m]")
    ax.set_ylabel("principal axis 2 [m]")
    ax.legend(loc="best")
    per_query = {q["stamp_ns"]: q for q in metrics.get("per_query", [])}
    t = np.array([(s - t0) / 1e9 for s in stamps])
    te = np.array([per_query.get(s, {}).get("t_err_m") or np.nan for s in stamps], float)
    re = np.array([per_query.get(s, {}).get("r_err_deg") or np.nan for s in stamps], float)
    ax_t.plot(t, te * 100, "o-", color="tab:blue", label="translation [cm]")
    ax_t.set_xlabel("time in bag [s]")
    ax_t.set_ylabel("translation error [cm]", color="tab:blue")
    ax_r = ax_t.twinx()
    ax_r.plot(t, re, "s--", color="tab:orange", label="rotation [deg]")
    ax_r.set_ylabel("rotation error [deg]", color="tab:orange")
    missing = t[~np.isfinite(te)]
    if missing.size:
        ax_t.plot(missing, np.zeros_like(missing), "k|", ms=20, label="not localized")
    med_t, med_r = (_num(metrics.get(k)) for k in ("median_translation_m", "median_rotation_deg"))
    ax_t.set_title(f"median error {med_t * 100:.1f} cm / {med_r:.2f} deg")
    ax_t.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)
