"""``reloc-vggt train``, ``reloc-vggt dataset convert`` and ``reloc-vggt dataset synth``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    tr = subparsers.add_parser("train", help="train Reloc-VGGT (stage 1 or 2) from a YAML config")
    tr.add_argument("--config", required=True, help="training YAML, e.g. config/train_stage1.yaml")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.out_dir")
    tr.add_argument("--out-dir", default=None, help="override run.out_dir")
    tr.add_argument("--max-steps", type=int, default=None, help="override optim.max_steps")
    tr.add_argument("--init-weights", default=None, help="override model.init_weights")
    tr.add_argument("--mask", default=None, choices=("dense", "sparse", "cached"), help="override model.mask")
    tr.add_argument("--stop-at", type=int, default=None,
                    help="stop (with a checkpoint) after this step, as if interrupted; resume later")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config value, e.g. --set data.num_frames=2 (repeatable)")
    tr.add_argument("--estimate", action="store_true",
                    help="print the analytic memory/time per step for this config and exit (no training)")
    tr.set_defaults(func=_train)

    ds = subparsers.add_parser("dataset", help="training data: convert public layouts, generate synthetic scenes")
    sub = ds.add_subparsers(dest="dataset_command", required=True)
    cv = sub.add_parser("convert", help="7-Scenes / Cambridge Landmarks scene -> posed-image folder")
    cv.add_argument("layout", choices=("7scenes", "cambridge"))
    cv.add_argument("src", help="scene folder (e.g. .../7scenes/chess or .../Cambridge/KingsCollege)")
    cv.add_argument("out", help="posed folder to write")
    cv.add_argument("--focal", type=float, default=None,
                    help="focal length in pixels of the stored images (7-Scenes default 585; Cambridge: from the NVM)")
    cv.add_argument("--every", type=int, default=1, help="7-Scenes: keep every n-th frame")
    cv.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    cv.set_defaults(func=_convert)
    sy = sub.add_parser("synth", help="render synthetic textured scenes as posed-image folders")
    sy.add_argument("out", help="folder to hold scene_XXXX/")
    sy.add_argument("--scenes", type=int, default=10)
    sy.add_argument("--views", type=int, default=32)
    sy.add_argument("--size", type=int, nargs=2, default=(112, 140), metavar=("H", "W"))
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=_synth)


def _train(args: argparse.Namespace) -> int:
    from .config import load_train_config
    from .loop import train

    cfg = load_train_config(args.config, args.set)
    if args.out_dir:
        cfg = cfg.replace(run=dataclasses.replace(cfg.run, out_dir=args.out_dir))
    if args.max_steps:
        cfg = cfg.replace(optim=dataclasses.replace(cfg.optim, max_steps=args.max_steps))
    if args.init_weights or args.mask:
        cfg = cfg.replace(model=dataclasses.replace(cfg.model, init_weights=args.init_weights or cfg.model.init_weights,
                                                    mask=args.mask or cfg.model.mask))
    if args.estimate:
        return _estimate(cfg)
    out = train(cfg, resume=args.resume, stop_at_step=args.stop_at)
    print(f"outputs in {out}")
    return 0


def _estimate(cfg) -> int:
    from .estimate import GPU_PEAK_TFLOPS, estimate_step
    from .loop import model_config

    mcfg = model_config(cfg)
    if cfg.data.image_hw:
        mcfg = dataclasses.replace(mcfg, image_hw=tuple(cfg.data.image_hw))
    e = estimate_step(mcfg, cfg.optim.batch_size, cfg.data.num_frames, cfg.stage,
                      grad_checkpointing=cfg.run.grad_checkpointing != "off")
    print(f"stage {cfg.stage}, mask {mcfg.mask}, batch {cfg.optim.batch_size} x {cfg.data.num_frames} frames at "
          f"{mcfg.image_hw[0]}x{mcfg.image_hw[1]} ({e.tokens_per_frame} tokens/frame)")
    print(f"parameters {e.params_total / 1e6:.1f} M, trainable {e.params_trainable / 1e6:.2f} M")
    print(f"~{e.tflops_per_step:.1f} TFLOP per step, ~{e.memory_gb:.1f} GB GPU memory")
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        print(f"  {gpu:18s} ~{e.seconds(peak):.2f} s/step at 35% MFU")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .converters import convert_7scenes, convert_cambridge

    if args.layout == "7scenes":
        recs = convert_7scenes(Path(args.src), Path(args.out), focal=args.focal or 585.0, link=not args.copy,
                               every=args.every)
    else:
        recs = convert_cambridge(Path(args.src), Path(args.out), focal=args.focal, link=not args.copy)
    n_query = sum(r.split == "query" for r in recs)
    print(f"{args.out}: {len(recs)} images ({len(recs) - n_query} db, {n_query} query)")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .synthetic import SyntheticConfig, generate_scene_folders

    cfg = SyntheticConfig(image_hw=tuple(args.size), num_views=args.views)
    folders = generate_scene_folders(Path(args.out), args.scenes, args.seed, cfg)
    print(f"{len(folders)} scenes in {args.out}")
    return 0
