"""How the three global-attention masks scale with the number of frames N.

Measured: aggregator forward time and peak extra memory for N ∈ {2, 4, …, 64} frames on CPU,
in ``dense``, ``sparse`` (the paper's mask) and ``cached`` mode (per query: the N−1 keyframes
are encoded once beforehand, only the query frame runs, attending to their cached keys/values),
for two model configurations (random weights, conv patch embed):

* ``attention`` (the headline): 224 px, C = 256, depth 8, 4 heads, P = 261 tokens a frame.
  Global attention is a large share of the forward here, so the table shows what the sparse
  mask and the keyframe cache are for.
* ``toy``: 56 px, C = 128, depth 4, 4 heads, P = 21 tokens a frame. Attention is a tiny share;
  the linear layers and CPU cache effects dominate, so dense and sparse cost about the same.

Computed: analytic FLOPs of the full VGGT-1B aggregator at 518 px.

    python -m bench.attention_scaling --json bench/results/attention_scaling.json   # = make bench
    python -m bench.attention_scaling --quick          # toy config, N = 2, 4, one repeat (tests)

Peak memory (one extra run after the timed ones): glibc is told to serve every allocation
≥ 4 KiB by mmap (so freed tensors really leave the process), the kernel's RSS high-water mark is
reset (``/proc/self/clear_refs``), and ``peak_mb`` = high-water mark during the call − resident
size before it: the transient working memory of one forward, weights and inputs excluded.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from reloc_vggt_ros.model.aggregator import Aggregator
from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.kv_cache import build_keyframe_kv, last_layer_tokens, query_forward
from reloc_vggt_ros.model.masks import global_attn_fn, num_blocks

logger = logging.getLogger(__name__)

MODES = ("dense", "sparse", "cached")
FRAMES = (2, 4, 8, 16, 32, 64)
QUICK_FRAMES = (2, 4)


@dataclass(frozen=True)
class BenchModel:
    """One benchmarked aggregator size (conv patches, so no DINO trunk hides the attention)."""

    image_size: int
    embed_dim: int
    depth: int
    num_heads: int
    repeats: int                  # default timed runs (the minimum CPU time is reported)
    about: str

    def config(self, image_size: int | None = None) -> VGGTConfig:
        d = self.depth
        return VGGTConfig(patch_embed="conv", img_size=image_size or self.image_size, embed_dim=self.embed_dim,
                          depth=d, num_heads=self.num_heads, camera_num_heads=self.num_heads,
                          dpt_layers=tuple(d * (i + 1) // 4 - 1 for i in range(4)), enable_camera=False,
                          enable_depth=False, enable_point=False, enable_track=False)


MODELS: dict[str, BenchModel] = {
    "attention": BenchModel(224, 256, 8, 4, 3, "global attention is a large share: what the sparse mask is for"),
    "toy": BenchModel(56, 128, 4, 4, 7, "few tokens: linear layers, per-op overhead and cache effects dominate"),
}
HEADLINE = "attention"


def tokens_per_frame(cfg: VGGTConfig) -> int:
    """Camera + register + patch tokens of one frame."""
    return 1 + cfg.num_register_tokens + (cfg.img_size // cfg.patch_size) ** 2


# -- memory -----------------------------------------------------------------------------------

def _mmap_threshold(nbytes: int) -> bool:
    """glibc: serve allocations >= nbytes by mmap, so they are unmapped (leave RSS) when freed."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(-3, nbytes) == 1   # M_MMAP_THRESHOLD
    except OSError:
        return False


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """CPU ms (minimum and median) and wall ms (median) over ``repeats`` runs after one warm-up,
    and the peak extra MB of one run.

    The minimum CPU time (``time.process_time``; 1 torch thread by default) is the headline
    ``ms``: the machines this runs on are shared, wall time there measures the neighbours as
    well, and interference only ever adds time.
    """
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    _mmap_threshold(4096)             # memory run only: every tensor is its own mapping
    fn()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM") - base
    _mmap_threshold(128 * 1024)       # glibc's default, for the timing runs that follow
    return {"ms": round(min(cpu), 3), "median_ms": round(statistics.median(cpu), 3),
            "wall_ms": round(statistics.median(wall), 3),
            "peak_mb": round(peak / 1024.0, 2)}


# -- timing of the three modes ----------------------------------------------------------------

def bench_modes(cfg: VGGTConfig, frames: tuple[int, ...], repeats: int, seed: int = 0) -> dict[str, list[dict]]:
    torch.manual_seed(seed)
    agg = Aggregator(cfg).eval()
    for p in agg.parameters():
        torch.nn.init.normal_(p, std=0.05)
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    for n in frames:
        images = torch.rand(1, n, 3, cfg.img_size, cfg.img_size)
        with torch.inference_mode():
            for mode in ("dense", "sparse"):
                fn = global_attn_fn(mode)
                timing = measure(lambda: last_layer_tokens(agg, images, global_attn_fn=fn), repeats)
                results[mode].append({"n": n, **timing})
            t0 = time.process_time()
            cache, _ = build_keyframe_kv(agg, images[:, :-1])
            encode_ms = (time.process_time() - t0) * 1e3
            timing = measure(lambda: query_forward(agg, cache, images[:, -1:]), repeats)
            results["cached"].append({"n": n, **timing,
                                      "keyframe_encode_ms": round(encode_ms, 3),
                                      "cache_mb": round(cache.nbytes() / 2**20, 3)})
        logger.info("N=%d: %s", n, {m: results[m][-1]["ms"] for m in MODES})
    return results


# -- analytic FLOPs (VGGT-1B, and the measured configs) ---------------------------------------

def _block_flops(tokens: int, C: int) -> float:
    """Linear layers of one transformer block (qkv 3C², proj C², MLP 8C²), 2 FLOPs per MAC."""
    return 2.0 * tokens * 12 * C * C


def _attn_flops(q_tokens: int, k_tokens: int, C: int) -> float:
    """QKᵀ and AV: 2·2·q·k·C."""
    return 4.0 * q_tokens * k_tokens * C


def vggt_flops(n: int, mode: str, cfg: VGGTConfig = VGGTConfig(), image_hw: tuple[int, int] = (518, 518)
               ) -> dict[str, float]:
    """GFLOPs of the VGGT aggregator (patch embed + DINO + frame + global blocks) for N frames.

    ``cached`` counts one query frame against N−1 cached keyframes. The camera head (< 0.1 %)
    is not counted; a ``conv`` patch embed has no DINO trunk.
    """
    C, p = cfg.embed_dim, cfg.patch_size
    hw = (image_hw[0] // p) * (image_hw[1] // p)
    P = 1 + cfg.num_register_tokens + hw
    T_dino = 1 + cfg.num_register_tokens + hw
    per_frame = (2.0 * hw * C * 3 * p * p
                 + (cfg.dino_depth * (_block_flops(T_dino, C) + _attn_flops(T_dino, T_dino, C))
                    if cfg.patch_embed == "dinov2" else 0.0)
                 + cfg.depth * (_block_flops(P, C) + _attn_flops(P, P, C))     # frame blocks
                 + cfg.depth * _block_flops(P, C))                              # global linear
    if mode == "cached":
        frames_run, blocks = 1, n
    else:
        frames_run, blocks = n, num_blocks(mode, n)
    global_attn = cfg.depth * blocks * _attn_flops(P, P, C)
    return {"gflops": (frames_run * per_frame + global_attn) / 1e9,
            "global_attention_gflops": global_attn / 1e9, "frame_blocks": blocks}


def flops_table(frames: tuple[int, ...], image_hw: tuple[int, int]) -> dict:
    cfg = VGGTConfig()
    out: dict = {"image_hw": list(image_hw),
                 "tokens_per_frame": 1 + cfg.num_register_tokens + (image_hw[0] // 14) * (image_hw[1] // 14)}
    for mode in MODES:
        out[mode] = [{"n": n, **{k: round(v, 1) if isinstance(v, float) else v
                                 for k, v in vggt_flops(n, mode, cfg, image_hw).items()}} for n in frames]
    return out


# -- report -----------------------------------------------------------------------------------

def ratios(results: dict[str, list[dict]], lo: int, hi: int) -> dict[str, float]:
    """Time at N = ``hi`` over time at N = ``lo`` per mode."""
    out = {}
    for mode, rows in results.items():
        by_n = {r["n"]: r["ms"] for r in rows}
        if lo in by_n and hi in by_n:
            out[mode] = round(by_n[hi] / by_n[lo], 2)
    return out


def run_model(name: str, frames: tuple[int, ...], repeats: int | None, image_size: int | None) -> dict:
    """Measure one configuration of :data:`MODELS`; the JSON block of ``configs[name]``."""
    model = MODELS[name]
    cfg = model.config(image_size)
    repeats = repeats or model.repeats
    logger.info("config %s: %d px, C=%d, depth %d, %d tokens/frame, %d repeats", name, cfg.img_size,
                cfg.embed_dim, cfg.depth, tokens_per_frame(cfg), repeats)
    modes = bench_modes(cfg, frames, repeats)
    lo, hi = (8 if 8 in frames else min(frames)), max(frames)
    for sparse, cached in zip(modes["sparse"], modes["cached"]):
        cached["sparse_over_cached"] = round(sparse["ms"] / cached["ms"], 2)   # per-query speed-up
    return {"about": model.about, "config": asdict(cfg), "image_hw": [cfg.img_size, cfg.img_size],
            "tokens_per_frame": tokens_per_frame(cfg), "repeats": repeats, "modes": modes,
            "ratio": {"from_n": lo, "to_n": hi, **ratios(modes, lo, hi)},
            "flops": analytic_scaling(cfg, lo, hi)}


def analytic_scaling(cfg: VGGTConfig, lo: int, hi: int) -> dict[str, float]:
    """What FLOPs alone predict for a measured config: the time ratio N = ``hi`` / ``lo`` per mode
    and the global-attention share of the dense forward at both N (measured ratios far from these
    mean memory traffic and per-op overhead, not arithmetic, set the time)."""
    hw = (cfg.img_size, cfg.img_size)
    f = {m: {n: vggt_flops(n, m, cfg, hw) for n in (lo, hi)} for m in MODES}
    out = {f"{m}_ratio": round(f[m][hi]["gflops"] / f[m][lo]["gflops"], 2) for m in MODES}
    for n in (lo, hi):
        out[f"dense_attention_share_n{n}"] = round(f["dense"][n]["global_attention_gflops"] / f["dense"][n]["gflops"], 3)
    return out


def print_model(name: str, block: dict, threads: int, headline: bool) -> None:
    cfg, (h, w), modes = block["config"], block["image_hw"], block["modes"]
    title = "HEADLINE: " if headline else ""
    print(f"{title}{name} config: {h}x{w} px, {cfg['embed_dim']}-d, depth {cfg['depth']}, {cfg['num_heads']} heads, "
          f"P = {block['tokens_per_frame']} tokens/frame ({block['about']})")
    print(f"  aggregator forward, {threads} thread(s), min CPU ms of {block['repeats']}; cached = per query")
    print(f"{'N':>4} | " + " | ".join(f"{m + ' ms':>12} {'MB':>7}" for m in MODES) + " | sparse/cached")
    for i, n in enumerate(r["n"] for r in modes["dense"]):
        cells = " | ".join(f"{modes[m][i]['ms']:>12.1f} {modes[m][i]['peak_mb']:>7.1f}" for m in MODES)
        print(f"{n:>4} | {cells} | {modes['cached'][i]['sparse_over_cached']:>12.1f}x")
    r = block["ratio"]
    print(f"  time ratio N={r['to_n']} / N={r['from_n']}: "
          + ", ".join(f"{m} {r[m]:.1f}x" for m in MODES if m in r)
          + f"; per query at N={r['to_n']}: sparse {modes['sparse'][-1]['ms'] / 1e3:.3f} s, "
          f"cached {modes['cached'][-1]['ms'] / 1e3:.3f} s")
    fl = block["flops"]
    share_lo, share_hi = (fl[f"dense_attention_share_n{r[k]}"] for k in ("from_n", "to_n"))
    print("  FLOPs alone predict: " + ", ".join(f"{m} {fl[m + '_ratio']:.1f}x" for m in MODES)
          + f" (global attention {share_lo:.0%} -> {share_hi:.0%} of the dense forward)")


def print_flops(flops: dict) -> None:
    h, w = flops["image_hw"]
    print(f"analytic VGGT-1B aggregator at {h}x{w} px (P = {flops['tokens_per_frame']}), GFLOP "
          "(cached = per query)")
    print(f"{'N':>4} | " + " | ".join(f"{m:>10}" for m in MODES))
    for i, n in enumerate(r["n"] for r in flops["dense"]):
        print(f"{n:>4} | " + " | ".join(f"{flops[m][i]['gflops']:>10.0f}" for m in MODES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--config", nargs="+", choices=list(MODELS), default=None,
                        help=f"configurations to measure, the first is the headline (default: {' '.join(MODELS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"toy config, N = {' '.join(map(str, QUICK_FRAMES))}, one repeat (unless given)")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help=f"default: {' '.join(map(str, FRAMES))}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per point (default: " + ", ".join(f"{k} {m.repeats}" for k, m in MODELS.items()) + ")")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input of every measured config (x14; default: each config's own)")
    parser.add_argument("--flops-hw", type=int, nargs=2, default=[518, 518], metavar=("H", "W"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if not _mmap_threshold(128 * 1024):
        logger.warning("mallopt unavailable: peak_mb may under-count (allocator reuses freed memory)")
    names = args.config or (["toy"] if args.quick else list(MODELS))
    frames = tuple(args.frames or (QUICK_FRAMES if args.quick else FRAMES))
    repeats = args.repeats or (1 if args.quick else None)
    configs = {name: run_model(name, frames, repeats, args.image_size) for name in names}
    report = {"headline": names[0], "configs": configs, "flops_1b": flops_table(frames, tuple(args.flops_hw)),
              "threads": args.threads, "torch": torch.__version__}
    for name, block in configs.items():
        print_model(name, block, args.threads, headline=name == names[0])
        print()
    print_flops(report["flops_1b"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
