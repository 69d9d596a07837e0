"""ONNX export of an :class:`ExportableGraph`, with a sidecar JSON the TensorRT builder reads.

The legacy TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it
works here without onnxscript and produces plain opset-17+ graphs that TensorRT parses. The
number of keyframes is fixed (``min == max``) or dynamic with explicit min/opt/max, recorded
as TensorRT optimisation profiles in the sidecar. Graphs above ~1.8 GB are written with one
external data file ``<name>.onnx.data`` (protobuf's 2 GB limit).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..errors import ConfigError
from .base import sidecar_path
from .graphs import ExportableGraph

__all__ = ["KeyframeRange", "ExportConfig", "export_onnx", "check_parity", "EXTERNAL_DATA_THRESHOLD"]

log = logging.getLogger(__name__)

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # bytes of parameters; protobuf refuses > 2 GiB
SIDECAR_FORMAT = "reloc_vggt_ros.onnx/1"


@dataclass(frozen=True)
class KeyframeRange:
    """Keyframes per forward pass: fixed when ``min == max``, else a TensorRT profile min/opt/max."""

    min: int = 8
    opt: int = 8
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"keyframes need 1 <= min <= opt <= max, got "
                              f"min={self.min} opt={self.opt} max={self.max}")

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    @classmethod
    def parse(cls, text: str) -> KeyframeRange:
        """``"8"`` (fixed) or ``"2:8:16"`` (min:opt:max)."""
        try:
            parts = [int(p) for p in str(text).split(":")]
        except ValueError as err:
            raise ConfigError(f"keyframes must be 'K' or 'min:opt:max', got {text!r}") from err
        if len(parts) == 1:
            return cls(parts[0], parts[0], parts[0])
        if len(parts) == 3:
            return cls(*parts)
        raise ConfigError(f"keyframes must be 'K' or 'min:opt:max', got {text!r}")


@dataclass(frozen=True)
class ExportConfig:
    """What to export: opset (>= 17), precision, keyframe range, external data policy."""

    opset: int = 17
    precision: str = "fp32"
    keyframes: KeyframeRange = field(default_factory=KeyframeRange)
    external_data: bool | None = None   # None: only when the weights exceed ~1.8 GB

    def __post_init__(self) -> None:
        if not 17 <= self.opset <= 20:
            raise ConfigError(f"opset must be in 17..20 (LayerNormalization needs 17; the "
                              f"legacy exporter stops at 20), got {self.opset}")
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")


def _exporter_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "exporter": "torchscript"}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _shape_json(shape: tuple[int, ...]) -> list[int]:
    return [int(d) for d in shape]


def _build_sidecar(graph: ExportableGraph, cfg: ExportConfig, path: Path, external: str | None,
                   module: torch.nn.Module, extra: dict[str, Any] | None) -> dict[str, Any]:
    kf = cfg.keyframes
    dyn = graph.dynamic_axes() if kf.dynamic else {}
    profiles = {}
    for name in graph.input_names:
        if name in dyn:
            profiles[name] = {k: _shape_json(graph.input_shapes(v)[name])
                              for k, v in (("min", kf.min), ("opt", kf.opt), ("max", kf.max))}
    fixed_k = None if kf.dynamic else kf.opt
    return {
        "format": SIDECAR_FORMAT,
        "graph": graph.graph_name,
        "onnx": path.name,
        "external_data": external,
        "model": graph.model_config(),
        "precision": cfg.precision,
        "opset": cfg.opset,
        "keyframes": {"min": kf.min, "opt": kf.opt, "max": kf.max, "dynamic": kf.dynamic},
        "inputs": [s.to_json() for s in graph.input_specs(fixed_k)],
        "outputs": list(graph.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in dyn.items()},
        "profiles": profiles,
        "parameters": sum(p.numel() for p in module.parameters()),
        "parameter_bytes": _param_bytes(module),
        "exporter": _exporter_versions(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def export_onnx(graph: ExportableGraph, path: str | Path, cfg: ExportConfig = ExportConfig(), *,
                overwrite: bool = False, extra_sidecar: dict[str, Any] | None = None,
                verify_dynamic: bool = True) -> Path:
    """Export ``graph`` to ``path`` (+ ``path.json`` sidecar); returns ``path``.

    Skips the export when both files exist unless ``overwrite``. The graph is traced at the
    ``opt`` keyframe count; ``onnx.checker`` runs on the result (by path, so external data works).
    A dynamic export is run by onnxruntime at ``min`` and ``max`` keyframes and compared with
    torch (``verify_dynamic``): a model whose Python code turned the frame count into a trace
    constant would otherwise give a graph that only works at ``opt``. Such an export is deleted
    and reported as a ConfigError.
    """
    path = Path(path)
    side = sidecar_path(path)
    if path.exists() and side.exists() and not overwrite:
        log.info("%s exists, skipping export (overwrite=False)", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    module = graph.eval()
    if cfg.precision == "fp16":
        module = copy.deepcopy(graph).half().eval()
    external = cfg.external_data
    if external is None:
        external = _param_bytes(module) > EXTERNAL_DATA_THRESHOLD
    kf = cfg.keyframes
    args = module.example_inputs(kf.opt)
    dynamic_axes = module.dynamic_axes() if kf.dynamic else None
    log.info("exporting %s to %s: opset %d, %s, keyframes %s, external data %s", graph.graph_name,
             path, cfg.opset, cfg.precision, f"{kf.min}:{kf.opt}:{kf.max}", external)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(module, args, str(raw), input_names=list(module.input_names),
                              output_names=list(module.output_names), dynamic_axes=dynamic_axes,
                              opset_version=cfg.opset, do_constant_folding=True, dynamo=False)
        data_name = None
        if external:
            data_name = path.name + ".data"
            final = Path(tmp) / "final"
            final.mkdir()
            model = onnx.load(str(raw))           # gathers whatever files the exporter wrote
            # onnx appends to an existing data file, so write into an empty folder, then move
            onnx.save_model(model, str(final / path.name), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
            del model
            os.replace(final / data_name, path.parent / data_name)
            os.replace(final / path.name, path)
        else:
            (path.parent / (path.name + ".data")).unlink(missing_ok=True)   # stale from before
            os.replace(raw, path)
    onnx.checker.check_model(str(path))
    sidecar = _build_sidecar(graph, cfg, path, data_name, module, extra_sidecar)
    sidecar["onnx_bytes"] = path.stat().st_size
    if data_name:
        sidecar["external_data_bytes"] = (path.parent / data_name).stat().st_size
    side.write_text(json.dumps(sidecar, indent=2) + "\n")
    if kf.dynamic and verify_dynamic:
        _verify_dynamic(graph, path, cfg, [path, side] + ([path.parent / data_name] if data_name else []))
    log.info("wrote %s (%.1f MB%s)", path, path.stat().st_size / 1e6,
             f" + {sidecar['external_data_bytes'] / 1e9:.2f} GB external data" if data_name else "")
    return path


def _verify_dynamic(graph: ExportableGraph, path: Path, cfg: ExportConfig, files: list[Path]) -> None:
    tol = 1e-3 if cfg.precision == "fp32" else 1e-1
    for k in sorted({cfg.keyframes.min, cfg.keyframes.max}):
        try:
            worst = max(check_parity(graph, path, k).values())
            failure = None if worst <= tol else f"max |onnx - torch| = {worst:.3g} > {tol}"
        except Exception as err:  # onnxruntime reports shape clashes with its own types
            failure = str(err).splitlines()[0][:300]
        if failure:
            for f in files:
                f.unlink(missing_ok=True)
            raise ConfigError(
                f"{graph.graph_name}: the exported graph does not work at {k} keyframes ({failure}); "
                "the model code turns the frame count into a trace-time constant. Export a fixed "
                "keyframe count instead (--keyframes K), one graph per K")


def check_parity(graph: ExportableGraph, onnx_path: str | Path, num_keyframes: int, *,
                 seed: int = 0) -> dict[str, float]:
    """Max absolute difference per output between torch (eager) and onnxruntime (CPU).

    Both run the same deterministic inputs; the torch side runs ``graph`` as given (fp32), the
    ONNX side runs whatever precision was exported (inputs are cast to its dtype).
    """
    from .ort_backend import OrtEngine

    args = graph.example_inputs(num_keyframes, seed=seed)
    with torch.no_grad():
        ref = graph.eval()(*args)
    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
    engine = OrtEngine(onnx_path, providers=["CPUExecutionProvider"])
    try:
        got = engine.run({n: a.float().numpy() for n, a in zip(graph.input_names, args)})
    finally:
        engine.close()
    return {n: float(np.max(np.abs(got[n].astype(np.float64) - r.double().numpy())))
            for n, r in zip(graph.output_names, ref)}

