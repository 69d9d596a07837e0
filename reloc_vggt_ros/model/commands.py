"""`reloc-vggt weights info` and `reloc-vggt weights convert` (official .pt -> safetensors)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from reloc_vggt_ros.model.config import PRESETS, VGGTConfig
from reloc_vggt_ros.model.weights import (_match, config_path_for, convert_checkpoint,
                                          read_state_dict)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    weights = subparsers.add_parser("weights", help="VGGT weights: info, convert")
    sub = weights.add_subparsers(dest="weights_command", required=True)

    info = sub.add_parser("info", help="tensor/parameter counts of a weights file and whether "
                                       "it matches a VGGT config")
    info.add_argument("file", help=".safetensors or .pt/.pth (read with weights_only=True)")
    _config_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    convert = sub.add_parser("convert", help="check a checkpoint against a config and write "
                                             ".safetensors plus the config JSON beside it")
    convert.add_argument("src", help="e.g. the official VGGT-1B model.pt")
    convert.add_argument("dst", help="output .safetensors")
    _config_args(convert)
    convert.add_argument("--no-track", action="store_true",
                         help="drop the track head (not needed for relocalization)")
    convert.set_defaults(func=_convert)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="VGGTConfig JSON (default: the JSON beside the file, else "
                                    "--preset)")
    p.add_argument("--preset", default="vggt_1b", choices=sorted(PRESETS),
                   help="architecture when no config JSON is found (default: vggt_1b)")


def _config(args: argparse.Namespace, weights: str) -> VGGTConfig:
    if args.config:
        return VGGTConfig.from_json(args.config)
    beside = config_path_for(weights)
    return VGGTConfig.from_json(beside) if beside.is_file() else PRESETS[args.preset]


def _info(args: argparse.Namespace) -> int:
    from reloc_vggt_ros.model.vggt import VGGT

    sd = read_state_dict(args.file)
    per_module: dict[str, int] = {}
    for key, tensor in sd.items():
        top = key.split(".", 1)[0]
        per_module[top] = per_module.get(top, 0) + tensor.numel()
    config = _config(args, args.file)
    with torch.device("meta"):
        model = VGGT(config)
    report = _match(sd, model, Path(args.file), strict=False)
    summary = {"file": str(args.file), "tensors": len(sd),
               "parameters": sum(t.numel() for t in sd.values()),
               "parameters_per_module": per_module,
               "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in sd.values()}),
               "matches_config": not report.missing and not report.unexpected,
               "missing": list(report.missing), "unexpected": list(report.unexpected),
               "config": config.to_dict()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['file']}: {summary['tensors']} tensors, {summary['parameters']:,} "
          f"parameters ({', '.join(summary['dtypes'])})")
    for name, count in per_module.items():
        print(f"  {name:12s} {count:,}")
    verdict = "matches" if summary["matches_config"] else "does NOT match"
    print(f"{verdict} VGGTConfig(embed_dim={config.embed_dim}, depth={config.depth}, "
          f"patch_embed={config.patch_embed!r}): {len(report.missing)} missing, "
          f"{len(report.unexpected)} unexpected")
    return 0 if summary["matches_config"] else 1


def _convert(args: argparse.Namespace) -> int:
    config = _config(args, args.src)
    if args.no_track:
        config = dataclasses.replace(config, enable_track=False)
    report = convert_checkpoint(args.src, args.dst, config)
    print(report.summary())
    print(f"wrote {args.dst} and {config_path_for(args.dst)}")
    return 0
