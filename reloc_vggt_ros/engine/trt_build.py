"""Build a TensorRT plan from an exported ONNX graph (TensorRT Python API) with a sidecar.

The builder reads the ONNX sidecar for the optimisation profile (min/opt/max keyframes),
sets precision flags, the workspace limit and an optional timing cache, serialises the plan
and records what the plan is tied to: TensorRT version, CUDA version, GPU name and compute
capability. :func:`check_plan_compat` compares that record with the running machine; the
tensorrt backend refuses a plan built elsewhere before TensorRT does so less clearly.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineUnavailableError, ModelLoadError
from .base import read_sidecar, sidecar_path

__all__ = ["BuildConfig", "build_engine", "check_plan_compat", "profile_shapes", "runtime_identity",
           "import_tensorrt"]

log = logging.getLogger(__name__)

PLAN_SIDECAR_FORMAT = "reloc_vggt_ros.plan/1"


@dataclass(frozen=True)
class BuildConfig:
    """TensorRT builder settings.

    ``precision``: ``fp32`` (TF32 allowed), ``fp16`` or ``bf16`` builder flags on a weakly typed
    network, or ``strongly_typed`` (precision taken from the ONNX tensor types, e.g. an fp16
    export; the only mode TensorRT versions without the FP16/BF16 flags accept).
    """

    precision: str = "fp16"
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    builder_optimization_level: int = 3

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "bf16", "strongly_typed"):
            raise ConfigError("precision must be fp32, fp16, bf16 or strongly_typed, "
                              f"got {self.precision!r}")
        if not 0 < self.workspace_gib <= 256:
            raise ConfigError(f"workspace_gib must be in (0, 256], got {self.workspace_gib}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError("builder_optimization_level must be 0..5, got "
                              f"{self.builder_optimization_level}")


def import_tensorrt():
    """``tensorrt`` or EngineUnavailableError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineUnavailableError(
            "the tensorrt Python package is not importable (install TensorRT >= 10 from JetPack "
            "or NVIDIA's package index; see docs/deployment.md)") from err
    return trt


def runtime_identity() -> dict[str, Any]:
    """TensorRT/CUDA versions and the GPU of this machine (needs tensorrt and a CUDA GPU)."""
    trt = import_tensorrt()
    try:
        import torch
    except ImportError as err:  # pragma: no cover
        raise EngineUnavailableError("torch (CUDA build) is needed for GPU buffers") from err
    if not torch.cuda.is_available():
        raise EngineUnavailableError("no CUDA GPU visible (torch.cuda.is_available() is False; "
                                     f"torch {torch.__version__})")
    major, minor = torch.cuda.get_device_capability(0)
    return {"tensorrt_version": trt.__version__, "cuda_version": torch.version.cuda,
            "gpu_name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def check_plan_compat(plan_sidecar: dict[str, Any], here: dict[str, Any], plan: Path | str) -> None:
    """Raise ModelLoadError if the plan was built for another TensorRT version or GPU."""
    built = {k: plan_sidecar.get(k) for k in ("tensorrt_version", "gpu_name", "compute_capability")}
    diffs = [f"{k}: plan {built[k]!r}, here {here.get(k)!r}" for k in built
             if built[k] is not None and built[k] != here.get(k)]
    missing = [k for k, v in built.items() if v is None]
    if missing:
        raise ModelLoadError(f"plan sidecar of {plan} lacks {missing}; rebuild the plan with "
                             "`reloc-vggt engine build`")
    if diffs:
        raise ModelLoadError(f"TensorRT plan {plan} was built for another machine ("
                             + "; ".join(diffs) + "); rebuild it here with `reloc-vggt engine build`")


def profile_shapes(onnx_sidecar: dict[str, Any],
                   keyframes: tuple[int, int, int] | None = None) -> dict[str, tuple[list, list, list]]:
    """``{input: (min, opt, max)}`` from the export sidecar; ``keyframes`` narrows a dynamic range."""
    profiles = onnx_sidecar.get("profiles") or {}
    if keyframes is None:
        return {n: (p["min"], p["opt"], p["max"]) for n, p in profiles.items()}
    kf = onnx_sidecar["keyframes"]
    lo, opt, hi = keyframes
    if not (kf["min"] <= lo <= opt <= hi <= kf["max"]):
        raise ConfigError(f"keyframes {lo}:{opt}:{hi} outside the exported range "
                          f"{kf['min']}:{kf['opt']}:{kf['max']}")
    out = {}
    axes = onnx_sidecar.get("dynamic_axes", {})
    for name, p in profiles.items():
        shapes = []
        for k in (lo, opt, hi):
            # each dynamic axis is an affine function of K: recover it from the exported min/max
            shape = list(p["min"])
            for axis in axes.get(name, {}):
                a = int(axis)
                span = kf["max"] - kf["min"]
                slope = (p["max"][a] - p["min"][a]) // span if span else 0
                shape[a] = p["min"][a] + slope * (k - kf["min"])
            shapes.append(shape)
        out[name] = tuple(shapes)
    return out


def build_engine(onnx_path: str | Path, plan_path: str | Path, cfg: BuildConfig = BuildConfig(), *,
                 keyframes: tuple[int, int, int] | None = None, overwrite: bool = False) -> Path:
    """Parse ``onnx_path``, build and serialise a plan to ``plan_path`` (+ ``.json``)."""
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if plan_path.exists() and sidecar_path(plan_path).exists() and not overwrite:
        log.info("%s exists, skipping build (overwrite=False)", plan_path)
        return plan_path
    trt = import_tensorrt()
    here = runtime_identity()
    onnx_side = read_sidecar(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if cfg.precision == "strongly_typed":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):    # resolves external data beside the file
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: " + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    config.builder_optimization_level = cfg.builder_optimization_level
    if cfg.precision in ("fp16", "bf16"):
        flag = getattr(trt.BuilderFlag, cfg.precision.upper(), None)
        if flag is None:
            raise ConfigError(f"TensorRT {trt.__version__} has no BuilderFlag.{cfg.precision.upper()}:"
                              f" export the ONNX in {cfg.precision} and build with "
                              "precision=strongly_typed")
        config.set_flag(flag)
    cache_bytes = b""
    if cfg.timing_cache and Path(cfg.timing_cache).is_file():
        cache_bytes = Path(cfg.timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    shapes = profile_shapes(onnx_side, keyframes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    log.info("building TensorRT %s plan from %s: %s, workspace %.1f GiB, profiles %s",
             trt.__version__, onnx_path.name, cfg.precision, cfg.workspace_gib, shapes or "static")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT failed to build a plan from {onnx_path} (see log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(memoryview(serialized))
    if cfg.timing_cache:
        Path(cfg.timing_cache).write_bytes(memoryview(config.get_timing_cache().serialize()))
    side = {
        "format": PLAN_SIDECAR_FORMAT,
        **here,
        "onnx": str(Path(onnx_path).resolve().relative_to(plan_path.parent.resolve()))
        if onnx_path.resolve().is_relative_to(plan_path.parent.resolve()) else str(onnx_path.resolve()),
        # what consumers of an exported graph read, also at the top of the plan's sidecar
        **{k: onnx_side[k] for k in ("graph", "mask", "model", "keyframes", "inputs", "outputs")
           if k in onnx_side},
        "onnx_sidecar": onnx_side,
        "precision": cfg.precision,
        "workspace_gib": cfg.workspace_gib,
        "profiles": {n: {"min": s[0], "opt": s[1], "max": s[2]} for n, s in shapes.items()},
        "plan_bytes": plan_path.stat().st_size,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if keyframes is not None:
        side["keyframes"] = {"min": keyframes[0], "opt": keyframes[1], "max": keyframes[2],
                             "dynamic": keyframes[0] != keyframes[2]}
    sidecar_path(plan_path).write_text(json.dumps(side, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) for %s", plan_path, side["plan_bytes"] / 1e6, here["gpu_name"])
    return plan_path
