"""Escalation cascade on the shared scenes: cheap-only, full-only and cascade, leave-one-scene-out.

    .venv/bin/python -m bench.cascade --json out/bench/cascade.json

For each scene and size (320x240, 640x480 and native by default: at 320x240 the cheap pass gives
OK answers that are not accurate, the case the cascade is for), the db split becomes a database
(cached in ``out/bench/cascade/``), and every query is localized by the cheap pass (``realtime`` preset, top-k 8, what the node ships) and
by the fuller pass (``tracking.cascade`` defaults: the ``default`` preset's query settings, top-k
16, over the same map). The cascade escalates a cheap OK answer when either rule calls it weak:
``weak_below_inliers`` (fewer inliers) or ``weak_above_expected_error`` (expected position error,
1 px per inlier, above that fraction of the map's keyframe spacing). Each is picked
leave-one-scene-out, on its own: for each scene, the first value of its grid (``--grid``,
``--error-grid``, ordered from fewest escalations) whose cascade with that rule alone keeps the
fuller pass's recall and median error (within ``--error-slack``) on the *other* scenes at every
size, simulated from their recorded answers (the cascade answers the full result where it
escalates). Then the real :class:`~reloc_vggt_ros.localizer.tracking.cascade.Cascade` with both
values runs on the held-out scene; its rows are what the table shows (latency measured, not
summed); the inlier rule alone is shown simulated beside it.
Recall is the fraction within 1 % of the median db baseline and 1 deg (``1pct_1deg``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.localize import _bench_store, _run_query, score_queries
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.localizer.registry import index_database, make_localizer
from reloc_vggt_ros.localizer.tracking.cascade import Cascade, expected_error, full_pass
from reloc_vggt_ros.localizer.tracking.config import CascadeSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SCENES = ("fountain-P11", "Herz-Jesus-P8", "entry-P10", "middlebury-temple-ring")
RECALL = "1pct_1deg"


def _size(text: str) -> tuple[int, int] | None:
    return None if text == "native" else tuple(int(v) for v in text.split("x"))  # type: ignore[return-value]


def _metrics(rows: list[dict[str, Any]], map_T: np.ndarray) -> dict[str, Any]:
    m = score_queries(rows, map_T)
    return {"recall": m["recall"][RECALL], "n_localized": m["n_localized"], "n_queries": m["n_queries"],
            "median_translation_m": m["median_translation_m"], "median_rotation_deg": m["median_rotation_deg"],
            "latency_ms_p50": m["latency_ms_p50"], "latency_ms_p95": m["latency_ms_p95"],
            "escalated": sum(1 for r in rows if r.get("escalated"))}


def _weak(row: dict, inliers: float, error: float) -> bool:
    """The cascade's rule on a recorded cheap answer (CascadeSettings.weak_below_inliers /
    weak_above_expected_error; 0 turns a rule off)."""
    if row["status"] != "ok" or row["num_inliers"] < inliers:
        return True
    return bool(error) and row.get("expected_error") is not None and row["expected_error"] > error


def _simulate(cheap: list[dict], full: list[dict], inliers: float, error: float) -> list[dict]:
    """The cascade's answers from the recorded ones (latency = cheap + full where escalated)."""
    out = []
    for c, f in zip(cheap, full):
        if not _weak(c, inliers, error):
            out.append(c)
        elif f["status"] != "ok" and c["status"] == "ok":
            out.append({**c, "latency_ms": c["latency_ms"] + f["latency_ms"], "escalated": True})
        else:
            out.append({**f, "latency_ms": c["latency_ms"] + f["latency_ms"], "escalated": True})
    return out


def _keeps_full(sim: dict, full: dict, slack: float) -> bool:
    if sim["recall"] < full["recall"] - 1e-9:
        return False
    if full["median_translation_m"] is None:
        return True
    return sim["median_translation_m"] is not None and sim["median_translation_m"] <= slack * full["median_translation_m"]


def choose(runs: dict[Any, dict], train: list[Any], grid: list[float], slack: float, rule: str) -> float:
    """The first value of ``grid`` (ordered from fewest escalations) whose simulated cascade, with
    ``rule`` alone ("inliers" or "error"), keeps full-pass recall and median error on every training
    scene/size (the last value if none does)."""
    for value in grid:
        inl, err = (value, 0.0) if rule == "inliers" else (0.0, value)
        if all(_keeps_full(_metrics(_simulate(runs[s]["cheap"], runs[s]["full"], inl, err), runs[s]["map_T"]),
                           _metrics(runs[s]["full"], runs[s]["map_T"]), slack) for s in train):
            return value
    return grid[-1]


class _Last:
    """A localizer that keeps its last result and intrinsics, for the signal ``_run_query`` does not record."""

    def __init__(self, localizer: Any) -> None:
        self.localizer, self.last, self.intrinsics = localizer, None, None

    def localize(self, image: Any, intrinsics: Any, *args: Any, **kwargs: Any) -> Any:
        self.intrinsics = intrinsics
        self.last = self.localizer.localize(image, intrinsics, *args, **kwargs)
        return self.last


def _query(localizer: Any, rec: Any, size: tuple[int, int] | None, baseline_m: float) -> dict[str, Any]:
    """``_run_query`` plus the answer's expected error (the cascade's second escalation signal)."""
    wrapped = _Last(localizer)
    row = _run_query(wrapped, rec, size)
    row["expected_error"] = expected_error(wrapped.last, wrapped.intrinsics, baseline_m)
    return row


def _record(name: str, size_text: str, top_k: int, out_dir: Path) -> dict[str, Any]:
    """Every query of one scene at one size by the cheap and by the fuller pass."""
    size = _size(size_text)
    scene = DATA / name
    db_recs, queries = read_posed_folder(scene, "db"), read_posed_folder(scene, "query")
    source = json.dumps({"scene": str(scene.resolve()), "size": list(size) if size else "native",
                         "db": [r.name for r in db_recs]})
    store = _bench_store(out_dir / f"{name}-{size_text}.db", scene, source, db_recs, size)
    index_database(store, "geometric", preset="realtime", top_k=top_k)
    cheap = make_localizer("geometric", store, preset="realtime", top_k=top_k)
    full = full_pass(cheap, CascadeSettings())
    baseline = cheap.keyframe_spacing_m                 # what the Cascade measures the expected error in
    for q in queries[:1]:                   # warm-up (first-use costs)
        _run_query(cheap, q, size), _run_query(full, q, size)
    return {"store": store, "cheap_loc": cheap, "full_loc": full, "queries": queries, "size": size,
            "map_T": np.stack([r.T_world_cam for r in db_recs]),
            "cheap": [_query(cheap, q, size, baseline) for q in queries],
            "full": [_query(full, q, size, baseline) for q in queries]}


def run(scenes: list[str], sizes: list[str], grid: list[int], error_grid: list[float], slack: float, top_k: int,
        out_dir: Path) -> dict[str, Any]:
    """Record every scene at every size, then per held-out scene: choose on the other scenes (all
    sizes pooled, one value as the node has one setting), run the real cascade on the held-out one."""
    result: dict[str, Any] = {"recall_threshold": RECALL, "grid": grid, "error_grid": error_grid,
                              "error_slack": slack, "sizes": {}}
    runs = {(name, size): _record(name, size, top_k, out_dir) for size in sizes for name in scenes}
    for name in scenes:
        train = [k for k in runs if k[0] != name]
        inl, err = choose(runs, train, grid, slack, "inliers"), choose(runs, train, error_grid, slack, "error")
        for size in sizes:
            r = runs[(name, size)]
            settings = CascadeSettings(weak_below_inliers=int(inl), weak_above_expected_error=err, budget_ms=0)
            cascade = Cascade(r["cheap_loc"], r["full_loc"], settings)
            rows = [_run_query(cascade, q, r["size"]) for q in r["queries"]]
            for row, c in zip(rows, r["cheap"]):   # _run_query keeps a few diagnostics only
                row["escalated"] = _weak(c, inl, err)
            entry = {"weak_below_inliers": int(inl), "weak_above_expected_error": err,
                     "cheap": _metrics(r["cheap"], r["map_T"]), "full": _metrics(r["full"], r["map_T"]),
                     "cascade": _metrics(rows, r["map_T"]),
                     "cascade_inliers_rule_only": _metrics(_simulate(r["cheap"], r["full"], inl, 0.0), r["map_T"]),
                     "per_query": {"cheap": r["cheap"], "full": r["full"], "cascade": rows}}
            result["sizes"].setdefault(size, {})[name] = entry
            print(_fmt(name, size, entry), flush=True)
    everything = list(runs)
    result["weak_below_inliers_all_scenes"] = int(choose(runs, everything, grid, slack, "inliers"))
    result["weak_above_expected_error_all_scenes"] = choose(runs, everything, error_grid, slack, "error")
    print(f"chosen on all scenes: weak_below_inliers {result['weak_below_inliers_all_scenes']}, "
          f"weak_above_expected_error {result['weak_above_expected_error_all_scenes']}")
    for r in runs.values():
        r["store"].close()
    result.update(load_average_1min=os.getloadavg()[0], cpu_count=os.cpu_count())
    return result


def _fmt(name: str, size: str, t: dict) -> str:
    def cell(m: dict) -> str:
        med = "n/a" if m["median_translation_m"] is None else f"{m['median_translation_m'] * 100:.3f} cm"
        return (f"{m['n_localized']:2d}/{m['n_queries']:<2d} {m['recall']:4.0%} {med:>10} "
                f"{m['latency_ms_p50']:5.0f}/{m['latency_ms_p95']:5.0f} ms")
    return (f"{name:24s} {size:8s} cheap {cell(t['cheap'])} | full {cell(t['full'])} | cascade "
            f"(inliers<{t['weak_below_inliers']} or expected error>{t['weak_above_expected_error']:g}, "
            f"{t['cascade']['escalated']} escalated) {cell(t['cascade'])} | inlier rule alone: "
            f"recall {t['cascade_inliers_rule_only']['recall']:.0%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=list(SCENES))
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480", "native"], help="WxH or native")
    ap.add_argument("--grid", type=int, nargs="+", default=[0, 40, 60, 80, 100, 150, 200, 300],
                    help="weak_below_inliers values, fewest escalations first")
    ap.add_argument("--error-grid", type=float, nargs="+", default=[0, 0.003, 0.002, 0.0015, 0.001, 0.00075, 0.0005],
                    help="weak_above_expected_error values, fewest escalations first (0 = off)")
    ap.add_argument("--error-slack", type=float, default=2.0, help="median error allowed vs the full pass (x)")
    ap.add_argument("--top-k", type=int, default=8, help="cheap pass keyframes (the full pass takes twice)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out_dir = ROOT / "out" / "bench" / "cascade"
    out_dir.mkdir(parents=True, exist_ok=True)
    print("scene                    size     answered/recall/median t/latency p50/p95 per mode")
    result = run(args.scenes, args.sizes, args.grid, args.error_grid, args.error_slack, args.top_k, out_dir)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
