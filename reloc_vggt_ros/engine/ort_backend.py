"""onnxruntime engine: CPU here; TensorRT / CUDA execution providers wherever they are built in.

Providers are chosen by availability in the order TensorRT EP > CUDA EP > CPU unless the
caller names them; a requested provider that this onnxruntime build lacks is an
EngineUnavailableError naming it (the fallback decision belongs to :func:`make_engine`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineUnavailableError, ModelLoadError
from .base import TensorSpec, prepare_inputs

__all__ = ["OrtEngine", "PROVIDER_PREFERENCE", "choose_providers"]

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
              "tensor(uint8)": "uint8", "tensor(bfloat16)": "bfloat16"}


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first; CPU is always last as onnxruntime's own fallback."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise EngineUnavailableError(f"onnxruntime execution provider(s) {missing} not in this "
                                         f"build (available: {list(available)})")
        chosen = list(requested)
    else:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    if "CPUExecutionProvider" in available and "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OrtEngine:
    """An ``onnxruntime.InferenceSession`` behind the engine interface.

    ``provider_options`` maps a provider name to its options, e.g.
    ``{"TensorrtExecutionProvider": {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
    "trt_engine_cache_path": "/var/cache/reloc"}}``.
    """

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None,
                 provider_options: Mapping[str, Mapping[str, Any]] | None = None,
                 num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise EngineUnavailableError("onnxruntime is not importable "
                                         "(pip install onnxruntime, or onnxruntime-gpu)") from err
        chosen = choose_providers(ort.get_available_providers(), providers)
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX file {path} not found")
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        popts = [dict((provider_options or {}).get(p, {})) for p in chosen]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen,
                                                 provider_options=popts)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load {path}: {err}") from err
        self.providers = list(self._session.get_providers())
        self.name = "onnxruntime-" + self.providers[0].removesuffix("ExecutionProvider").lower()
        self.inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._session.get_outputs())
        log.info("onnxruntime %s on %s: providers %s", ort.__version__, path.name, self.providers)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = prepare_inputs(self.inputs, inputs, self.name)
        feed = {spec.name: arr for spec, arr in zip(self.inputs, arrays)}
        values = self._session.run(None, feed)
        return {spec.name: np.asarray(v) for spec, v in zip(self.outputs, values)}

    def close(self) -> None:
        self._session = None
