"""Per-query latency: torch eager vs onnxruntime (CPU), sparse and cached masks, K keyframes.

For ``sparse`` one query is a full forward over ``[anchor, db…, query]`` (K+1 frames). For
``cached`` one query is the query graph against cached keyframe keys/values; the keyframe
encoder's one-off cost per keyframe set is reported beside it. Same weights, same inputs,
one thread each by default (the machine is shared), fixed-K ONNX graphs exported on the fly.

    python -m bench.engines --preset small --keyframes 4 8 16 --json /tmp/engines.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reloc_vggt_ros.engine.factory import make_engine
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange
from reloc_vggt_ros.engine.reloc_graphs import export_reloc_vggt, graphs_for, preset_config
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT

log = logging.getLogger("bench.engines")


def _time(fn, repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": min(times)}


def bench_mask(preset: str, mask: str, k: int, workdir: Path, repeats: int, warmup: int,
               threads: int) -> dict:
    torch.manual_seed(0)
    model = RelocVGGT(preset_config(preset, mask)).eval()
    paths = export_reloc_vggt(model, workdir / f"{mask}_k{k}", ExportConfig(keyframes=KeyframeRange(k, k, k)))
    graphs = graphs_for(model)
    ort_opts = {"onnxruntime": {"providers": ["CPUExecutionProvider"], "num_threads": threads}}
    row = {"preset": preset, "mask": mask, "K": k}
    if mask == "cached":
        enc_graph, query_graph = graphs
        feed = dict(zip(query_graph.input_names, (t.numpy() for t in query_graph.example_inputs(k))))
        enc_feed = dict(zip(enc_graph.input_names, (t.numpy() for t in enc_graph.example_inputs(k))))
        torch_q, ort_q = make_engine("torch", query_graph), make_engine("onnxruntime", paths[1], options=ort_opts)
        torch_e, ort_e = make_engine("torch", enc_graph), make_engine("onnxruntime", paths[0], options=ort_opts)
        row["torch"] = _time(lambda: torch_q.run(feed), repeats, warmup)
        row["onnxruntime"] = _time(lambda: ort_q.run(feed), repeats, warmup)
        row["keyframe_encode_torch"] = _time(lambda: torch_e.run(enc_feed), max(3, repeats // 3), 1)
        row["keyframe_encode_onnxruntime"] = _time(lambda: ort_e.run(enc_feed), max(3, repeats // 3), 1)
        engines = (torch_q, ort_q, torch_e, ort_e)
    else:
        (graph,) = graphs
        feed = dict(zip(graph.input_names, (t.numpy() for t in graph.example_inputs(k))))
        torch_f, ort_f = make_engine("torch", graph), make_engine("onnxruntime", paths[0], options=ort_opts)
        row["torch"] = _time(lambda: torch_f.run(feed), repeats, warmup)
        row["onnxruntime"] = _time(lambda: ort_f.run(feed), repeats, warmup)
        engines = (torch_f, ort_f)
    row["ort_speedup"] = row["torch"]["median_ms"] / row["onnxruntime"]["median_ms"]
    for e in engines:
        e.close()
    return row


def table(rows: list[dict]) -> str:
    by = {(r["mask"], r["K"]): r for r in rows}
    lines = ["| mask | K | torch eager ms/query, median (min) | onnxruntime CPU ms/query, median (min) "
             "| torch / ort | cached vs sparse (ort) | keyframe encode ms (torch / ort) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = enc = "-"
        if r["mask"] == "cached" and ("sparse", r["K"]) in by:
            vs = f"{by[('sparse', r['K'])]['onnxruntime']['median_ms'] / r['onnxruntime']['median_ms']:.2f}x"
        if r["mask"] == "cached":
            enc = (f"{r['keyframe_encode_torch']['median_ms']:.1f} / "
                   f"{r['keyframe_encode_onnxruntime']['median_ms']:.1f}")
        t, o = r["torch"], r["onnxruntime"]
        lines.append(f"| {r['mask']} | {r['K']} | {t['median_ms']:.1f} ({t['min_ms']:.1f}) | "
                     f"{o['median_ms']:.1f} ({o['min_ms']:.1f}) | {r['ort_speedup']:.2f} | {vs} | {enc} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "vggt_1b"])
    ap.add_argument("--masks", nargs="+", default=["sparse", "cached"])
    ap.add_argument("--keyframes", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime CPU threads")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        for k in args.keyframes:
            for mask in args.masks:
                row = bench_mask(args.preset, mask, k, Path(tmp), args.repeats, args.warmup, args.threads)
                print(f"{mask:6s} K={k:2d}: torch {row['torch']['median_ms']:.1f} ms, "
                      f"onnxruntime {row['onnxruntime']['median_ms']:.1f} ms", flush=True)
                rows.append(row)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python -m bench.engines " + " ".join(argv or []), "threads": args.threads,
                "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                "cpu": platform.processor() or platform.machine(), "repeats": args.repeats}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
