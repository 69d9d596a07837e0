"""What is in a keyframe database: counts, image sizes, map extent, backends (for `db info`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..eval.metrics import median_baseline
from .store import KeyframeStore

__all__ = ["summarize", "median_nn_baseline", "format_summary"]


def median_nn_baseline(centres: np.ndarray) -> float:
    """The scene scale of ``eval.metrics.median_baseline`` (NaN where it has none: < 2 distinct cameras)."""
    return median_baseline(np.asarray(centres, dtype=float).reshape(-1, 3), default=float("nan"))


def summarize(store: KeyframeStore) -> dict[str, Any]:
    """A JSON-able description of ``store`` (metres for the extent, as stored)."""
    ids, Ts = store.poses()
    centres = Ts[:, :3, 3]
    sizes = Counter(f"{i.width}x{i.height}" for i in store.intrinsics().values())
    meta = store.metadata
    out: dict[str, Any] = {
        "path": str(store.path),
        "schema_version": int(meta["schema_version"]),
        "units": meta.get("units", ""),
        "created_utc": meta.get("created_utc", ""),
        "creator": meta.get("creator", ""),
        "revision": store.revision,
        "keyframes": int(len(ids)),
        "damaged_keyframes": store.damaged_keyframes(),   # left out of the count above (`db check`)
        "image_sizes": dict(sorted(sizes.items())),
        "extent": None,
        "backends": {b: {fp: store.blob_counts().get((b, fp), 0) for fp in sorted(fps)}
                     for b, fps in sorted(store.backends().items())},
        "metadata": meta,
    }
    if len(ids):
        lo, hi = centres.min(axis=0), centres.max(axis=0)
        out["extent"] = {"min": lo.tolist(), "max": hi.tolist(), "size": (hi - lo).tolist(),
                         "median_nn_baseline": median_nn_baseline(centres)}
    return out


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable lines for ``db info``."""
    u = s["units"]
    lines = [f"database:       {s['path']}",
             f"schema version: {s['schema_version']}   revision: {s['revision']}",
             f"created:        {s['created_utc']} by {s['creator'] or '?'}",
             f"units:          {u}",
             f"keyframes:      {s['keyframes']}" + (f" (+{len(s['damaged_keyframes'])} damaged, left out: "
                                                    f"run `reloc-vggt db check`)" if s["damaged_keyframes"] else ""),
             "image sizes:    " + (", ".join(f"{k} ({n})" for k, n in s["image_sizes"].items()) or "-")]
    ext = s["extent"]
    if ext is None:
        lines.append("map extent:     - (empty)")
    else:
        fmt = lambda v: "(" + ", ".join(f"{x:.3f}" for x in v) + ")"  # noqa: E731
        lines += [f"map extent:     camera centres in {fmt(ext['min'])} .. {fmt(ext['max'])} {u}",
                  f"                size {fmt(ext['size'])} {u}, median nearest-neighbour baseline "
                  f"{ext['median_nn_baseline']:.3f} {u}"]
    if not s["backends"]:
        lines.append("backends:       none (no precomputed blobs)")
    for b, fps in s["backends"].items():
        for fp, n in fps.items():
            lines.append(f"backend:        {b}  fingerprint {fp}  ({n} keyframes with blobs)")
    return "\n".join(lines)
