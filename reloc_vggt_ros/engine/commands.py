"""``reloc-vggt export onnx`` and ``reloc-vggt engine {build,check,info}``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)


def _load_model(args: argparse.Namespace):
    import torch

    from ..model.reloc_vggt import RelocVGGT
    from .reloc_graphs import preset_config

    if args.weights:
        model = RelocVGGT.load(args.weights)
        if args.mask and args.mask != model.config.mask:
            raise ConfigError(f"{args.weights} was trained with mask {model.config.mask!r}, "
                              f"not {args.mask!r}")
        return model
    log.warning("no --weights: exporting preset %r with random weights (for shape/op checks)",
                args.preset)
    torch.manual_seed(args.seed)
    return RelocVGGT(preset_config(args.preset, args.mask or "sparse"))


def _export_onnx(args: argparse.Namespace) -> int:
    import torch

    from .export import ExportConfig, KeyframeRange, check_parity
    from .op_coverage import check_tensorrt_coverage
    from .reloc_graphs import export_reloc_vggt, graphs_for

    torch.set_num_threads(args.threads) if args.threads else None
    cfg = ExportConfig(opset=args.opset, precision=args.precision,
                       keyframes=KeyframeRange.parse(args.keyframes),
                       external_data=True if args.external_data else None)
    model = _load_model(args).eval()
    paths = export_reloc_vggt(model, args.out, cfg, prefix=args.prefix, overwrite=args.overwrite)
    status = 0
    for graph, path in zip(graphs_for(model), paths):
        report = check_tensorrt_coverage(path)
        print(f"{path}: {report.summary()}")
        status |= 0 if report.ok else 1
        if args.parity:
            err = check_parity(graph, path, cfg.keyframes.opt)
            print(f"{path}: onnxruntime vs torch max abs diff {max(err.values()):.3g} {err}")
    return status


def _engine_build(args: argparse.Namespace) -> int:
    from .trt_build import BuildConfig, build_engine

    cfg = BuildConfig(precision=args.precision, workspace_gib=args.workspace_gib,
                      timing_cache=Path(args.timing_cache) if args.timing_cache else None,
                      builder_optimization_level=args.opt_level)
    keyframes = None
    if args.keyframes:
        parts = [int(p) for p in args.keyframes.split(":")]
        if len(parts) != 3:
            raise ConfigError(f"--keyframes must be min:opt:max, got {args.keyframes!r}")
        keyframes = (parts[0], parts[1], parts[2])
    plan = Path(args.plan) if args.plan else Path(args.onnx).with_suffix(".plan")
    build_engine(args.onnx, plan, cfg, keyframes=keyframes, overwrite=args.overwrite)
    print(plan)
    return 0


def _engine_check(args: argparse.Namespace) -> int:
    import onnx

    from .op_coverage import check_tensorrt_coverage

    status = 0
    for path in args.onnx:
        onnx.checker.check_model(str(path))
        report = check_tensorrt_coverage(path)
        print(f"{path}: {report.summary()}")
        if args.verbose_ops:
            print("  " + ", ".join(f"{op} x{n}" for op, n in sorted(report.op_counts.items())))
        status |= 0 if report.ok else 1
    return status


def _engine_info(args: argparse.Namespace) -> int:
    from .base import read_sidecar

    print(json.dumps(read_sidecar(args.artifact), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="export models for deployment")
    export_sub = export.add_subparsers(dest="export_command", required=True)
    p = export_sub.add_parser("onnx", help="export Reloc-VGGT to ONNX (+ sidecar JSON)")
    p.add_argument("--weights", help="Reloc-VGGT .safetensors with its .json config beside it")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "vggt_1b"],
                   help="architecture when no --weights are given (random weights)")
    p.add_argument("--mask", choices=["dense", "sparse", "cached"],
                   help="mask mode of the preset (must equal the weights' mask if given)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--prefix", default="", help="file name prefix")
    p.add_argument("--keyframes", default="8", help="'K' (fixed) or 'min:opt:max' (dynamic)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--external-data", action="store_true",
                   help="always write weights to <name>.onnx.data (automatic above ~1.8 GB)")
    p.add_argument("--parity", action="store_true", help="compare onnxruntime with torch after export")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export_onnx)

    engine = subparsers.add_parser("engine", help="TensorRT engines")
    engine_sub = engine.add_subparsers(dest="engine_command", required=True)
    b = engine_sub.add_parser("build", help="build a TensorRT plan from an exported ONNX graph")
    b.add_argument("onnx", type=Path)
    b.add_argument("--plan", help="output plan path (default: <onnx stem>.plan)")
    b.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16", "strongly_typed"])
    b.add_argument("--workspace-gib", type=float, default=4.0)
    b.add_argument("--timing-cache", help="timing cache file, read if present and updated")
    b.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5")
    b.add_argument("--keyframes", help="narrow the exported profile: min:opt:max")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=_engine_build)

    c = engine_sub.add_parser("check", help="onnx.checker + TensorRT operator coverage")
    c.add_argument("onnx", nargs="+", type=Path)
    c.add_argument("--verbose-ops", action="store_true", help="list op types and counts")
    c.set_defaults(func=_engine_check)

    i = engine_sub.add_parser("info", help="print the sidecar of an .onnx or .plan")
    i.add_argument("artifact", type=Path)
    i.set_defaults(func=_engine_info)
