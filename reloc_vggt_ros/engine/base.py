"""The inference interface every backend implements: named numpy arrays in and out.

A leaf module (numpy, json and the package errors only): the backends import it, and the
factory that builds them (:mod:`.factory`) imports them, never the other way round. The
sidecar JSON beside an exported graph or a built plan is part of the interface because the
TensorRT backend and builder read it as well as the factory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError

__all__ = ["ENGINE_KINDS", "TensorSpec", "InferenceEngine", "prepare_inputs", "read_sidecar", "sidecar_path"]

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
