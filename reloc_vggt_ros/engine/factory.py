"""Build an engine by kind: the one place that imports the backends.

:func:`make_engine` picks a backend by name; when it cannot run here it raises
:class:`EngineUnavailableError` naming what is missing, or tries the ``fallback`` kinds in
order when the caller asked for that (the node's ``engine_fallback`` parameter).
:func:`resolve_engine_kind` turns ``engine_kind: auto`` and a weights path into a kind, and
:func:`engine_sources` says which file each kind runs for an exported graph.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineUnavailableError
from .base import ENGINE_KINDS, InferenceEngine, read_sidecar

__all__ = ["make_engine", "resolve_engine_kind", "engine_sources", "check_engine_choice",
           "ENGINE_SUFFIXES", "PLAN_SUFFIXES"]

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".onnx", ".plan", ".engine")   # exported graphs; anything else is a checkpoint
PLAN_SUFFIXES = (".plan", ".engine")


def check_engine_choice(engine_kind: str, engine_fallback: Sequence[str]) -> tuple[str, ...]:
    """ConfigError unless ``engine_kind`` is ``auto`` or a kind and the fallbacks are kinds;
    returns the fallbacks as a tuple."""
    if engine_kind not in ("auto", *ENGINE_KINDS):
        raise ConfigError(f"engine_kind must be one of {('auto', *ENGINE_KINDS)}, got {engine_kind!r}")
    if isinstance(engine_fallback, str):
        raise ConfigError(f"engine_fallback must be a list of engine kinds, got the string {engine_fallback!r}")
    for kind in engine_fallback:
        if kind not in ENGINE_KINDS:
            raise ConfigError(f"engine_fallback entries must be in {ENGINE_KINDS}, got {kind!r}")
    return tuple(engine_fallback)


def resolve_engine_kind(engine_kind: str, path: Path) -> str:
    """``auto`` -> by suffix (``.onnx`` onnxruntime, ``.plan``/``.engine`` tensorrt, else torch);
    an explicit kind must fit the file: torch runs checkpoints, the others exported graphs."""
    exported = path.suffix in ENGINE_SUFFIXES
    if engine_kind == "auto":
        if not exported:
            return "torch"
        return "tensorrt" if path.suffix in PLAN_SUFFIXES else "onnxruntime"
    if engine_kind == "torch" and exported:
        raise ConfigError(f"engine_kind 'torch' runs a .safetensors/.pt checkpoint, but weights {path.name} "
                          "is an exported graph: use engine_kind auto, onnxruntime or tensorrt")
    if engine_kind != "torch" and not exported:
        raise ConfigError(f"engine_kind {engine_kind!r} needs an exported graph (.onnx, or a TensorRT .plan), "
                          f"but weights {path.name} is a checkpoint: export it with `reloc-vggt export onnx`")
    return engine_kind


def engine_sources(path: Path) -> dict[str, Path]:
    """Which file each engine kind runs for the exported graph ``path`` (no torch: no checkpoint).

    onnxruntime takes a plan too (its sidecar names the ONNX it was built from); tensorrt on an
    ``.onnx`` takes the plan ``engine build`` writes beside it by default.
    """
    plan = path if path.suffix in PLAN_SUFFIXES else path.with_suffix(".plan")
    return {"onnxruntime": path, "tensorrt": plan}


def _make_one(kind: str, source: Any, options: Mapping[str, Any]) -> InferenceEngine:
    if kind == "torch":
        from .torch_backend import TorchEngine

        return TorchEngine(source, **options)
    if kind == "onnxruntime":
        from .ort_backend import OrtEngine

        return OrtEngine(_as_onnx_path(source), **options)
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTEngine

        return TensorRTEngine(source, **options)
    raise ConfigError(f"engine kind must be one of {ENGINE_KINDS}, got {kind!r}")


def _as_onnx_path(source: Any) -> Path:
    """An ONNX path for onnxruntime; a TensorRT plan resolves to the ONNX it was built from."""
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"onnxruntime needs an .onnx path, got {type(source).__name__}")
    path = Path(source)
    if path.suffix in PLAN_SUFFIXES:
        onnx = read_sidecar(path).get("onnx")
        if not onnx:
            raise ConfigError(f"plan sidecar of {path} does not name its ONNX source")
        path = (path.parent / onnx) if not Path(onnx).is_absolute() else Path(onnx)
    return path


def make_engine(kind: str, source: Any, *, fallback: Sequence[str] = (),
                options: Mapping[str, Mapping[str, Any]] | None = None) -> InferenceEngine:
    """Build the ``kind`` engine, else the first ``fallback`` kind that can run here.

    ``source`` is an ``nn.Module`` (torch), an ``.onnx`` path (onnxruntime), a ``.plan`` path
    (tensorrt; onnxruntime can fall back to the plan's ONNX via its sidecar), or a mapping
    ``{kind: source}`` when the kinds need different artifacts. ``options[kind]`` are keyword
    arguments of that backend. Only EngineUnavailableError triggers a fallback; a broken file
    or a mismatched plan is an error whatever ``fallback`` says.
    """
    kinds = [kind, *[k for k in fallback if k != kind]]
    for k in kinds:
        if k not in ENGINE_KINDS:
            raise ConfigError(f"engine kind must be one of {ENGINE_KINDS}, got {k!r}")
    reasons = []
    for k in kinds:
        src = source.get(k) if isinstance(source, Mapping) else source
        if src is None:
            reasons.append(f"{k}: no source given")
            continue
        try:
            engine = _make_one(k, src, (options or {}).get(k, {}))
        except EngineUnavailableError as err:
            reasons.append(f"{k}: {err}")
            log.warning("engine %s unavailable (%s)%s", k, err,
                        "; trying the next fallback" if k != kinds[-1] else "")
            continue
        if k != kind:
            log.warning("using fallback engine %s instead of %s", k, kind)
        return engine
    raise EngineUnavailableError("no usable inference engine: " + "; ".join(reasons))
