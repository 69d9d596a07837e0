"""Export the full VGGT-1B-sized Reloc-VGGT (random weights) and check it: size, TensorRT op
coverage, and onnxruntime vs torch on one K-keyframe query. Too slow for the test suite (about
13 min wall and 9.5 GB peak RSS on the shared 2-core machine), so it is a script.

Memory stays bounded by running torch first, freeing the model, then onnxruntime.

    python -m bench.vggt_1b_export --out /tmp/vggt_1b --mask sparse --keyframes 2 --json /tmp/vggt_1b.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import time
from pathlib import Path

import numpy as np
import torch

from reloc_vggt_ros.engine.base import read_sidecar
from reloc_vggt_ros.engine.factory import make_engine
from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange
from reloc_vggt_ros.engine.op_coverage import check_tensorrt_coverage
from reloc_vggt_ros.engine.reloc_graphs import export_reloc_vggt, graphs_for, preset_config
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mask", default="sparse", choices=["dense", "sparse"])
    ap.add_argument("--keyframes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    k = args.keyframes
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = RelocVGGT(preset_config("vggt_1b", args.mask)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    # always re-export: the comparison below needs exactly these weights in the graph
    (path,) = export_reloc_vggt(model, args.out, ExportConfig(keyframes=KeyframeRange(k, k, k)),
                                overwrite=True)
    t_export = time.perf_counter() - t0
    graph = graphs_for(model)[0]
    inputs = graph.example_inputs(k, seed=args.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():   # runtime bicubic pos-embed resample; the ONNX has it as a constant
        ref = graph(*inputs).numpy()
    t_torch = time.perf_counter() - t0
    feed = {n: t.numpy() for n, t in zip(graph.input_names, inputs)}
    del model, graph, inputs
    gc.collect()
    engine = make_engine("onnxruntime", path, options={"onnxruntime": {
        "providers": ["CPUExecutionProvider"], "num_threads": args.threads}})
    t0 = time.perf_counter()
    got = engine.run(feed)["pose_enc"]
    t_ort = time.perf_counter() - t0
    engine.close()
    side = read_sidecar(path)
    report = check_tensorrt_coverage(path)
    result = {
        "mask": args.mask, "keyframes": k, "parameters": n_params,
        "onnx_bytes": side["onnx_bytes"], "external_data_bytes": side.get("external_data_bytes"),
        "nodes": sum(report.op_counts.values()), "op_types": sorted(report.op_counts),
        "tensorrt_coverage": report.summary(), "coverage_ok": report.ok,
        "max_abs_diff_ort_vs_torch": float(np.max(np.abs(got - ref))),
        "max_abs_torch_output": float(np.max(np.abs(ref))),
        "pose_enc_torch": ref.tolist(), "pose_enc_onnxruntime": got.tolist(),
        "seconds": {"build_model": t_build, "export": t_export, "torch_forward": t_torch,
                    "onnxruntime_forward": t_ort},
        "peak_rss_gb": _peak_rss_gb(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
