"""One inference interface, three backends (torch, onnxruntime, tensorrt), one factory.

Every backend takes and returns named numpy arrays, so the localizer does not care which one
runs. :func:`make_engine` picks a backend by name; when it cannot run here it raises
:class:`EngineUnavailableError` naming what is missing, or tries the ``fallback`` kinds in
order when the caller asked for that (the node's ``engine_fallback`` parameter).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, EngineUnavailableError

__all__ = ["ENGINE_KINDS", "TensorSpec", "InferenceEngine", "make_engine", "prepare_inputs",
           "read_sidecar", "sidecar_path"]

log = logging.getLogger(__name__)

ENGINE_KINDS = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one graph input or output.

    ``shape`` holds ints for fixed dimensions and strings for dynamic ones (e.g. ``"num_frames"``).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))


@runtime_checkable
class InferenceEngine(Protocol):
    """A compiled or eager graph: named numpy arrays in, named numpy arrays out."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one forward pass; ``inputs`` must hold exactly the names of ``self.inputs``."""
        ...

    def close(self) -> None:
        """Free the session / GPU memory; the engine is unusable afterwards."""
        ...


def prepare_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray],
                   engine: str) -> list[np.ndarray]:
    """Arrays in ``specs`` order, C-contiguous and cast to each spec's dtype.

    Raises ValueError naming the input on a missing/unexpected name or a wrong fixed dimension.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        raise ValueError(f"{engine}: expected inputs {names}, missing {missing}, unexpected {extra}")
    out = []
    for spec in specs:
        arr = np.ascontiguousarray(inputs[spec.name], dtype=np.dtype(spec.dtype))
        if arr.ndim != len(spec.shape):
            raise ValueError(f"{engine}: input {spec.name!r} must have rank {len(spec.shape)} "
                             f"{list(spec.shape)}, got shape {list(arr.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, int) and want >= 0 and want != got:
                raise ValueError(f"{engine}: input {spec.name!r} axis {axis} must be {want}, "
                                 f"got shape {list(arr.shape)}")
        out.append(arr)
    return out


def sidecar_path(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``; ``engine.plan`` -> ``engine.plan.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The JSON written beside an exported graph or a built plan (ConfigError if unreadable)."""
    path = sidecar_path(artifact)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"sidecar {path} not found: export/build writes it beside {Path(artifact).name}"
                          ) from err
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read sidecar {path}: {err}") from err


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
    if path.suffix in (".plan", ".engine"):
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
