"""TensorRT engine: deserialise a plan, bind inputs/outputs by name, run on one CUDA stream.

GPU buffers are torch CUDA tensors (the deployment images ship GPU torch anyway), so no extra
CUDA binding package is needed. The plan's sidecar is checked against this machine first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from .base import TensorSpec, prepare_inputs, read_sidecar
from .trt_build import check_plan_compat, import_tensorrt, runtime_identity

__all__ = ["TensorRTEngine"]

log = logging.getLogger(__name__)


class TensorRTEngine:
    """A deserialised TensorRT plan behind the engine interface (one execution context)."""

    def __init__(self, plan_path: str | Path, *, device: int = 0) -> None:
        trt = import_tensorrt()
        here = runtime_identity()            # EngineUnavailableError without a CUDA GPU
        import torch

        plan_path = Path(plan_path)
        if not plan_path.is_file():
            raise ModelLoadError(f"TensorRT plan {plan_path} not found")
        check_plan_compat(read_sidecar(plan_path), here, plan_path)
        self._torch, self._trt = torch, trt
        self._device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self._engine is None:
            raise ModelLoadError(f"TensorRT {trt.__version__} could not deserialise {plan_path}")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self._device)
        specs_in, specs_out = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
            shape = tuple(int(d) if d >= 0 else "dynamic" for d in self._engine.get_tensor_shape(name))
            spec = TensorSpec(name, shape, dtype)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (specs_in if is_input else specs_out).append(spec)
        self.inputs, self.outputs = tuple(specs_in), tuple(specs_out)
        self.name = "tensorrt"
        log.info("TensorRT %s plan %s on %s: inputs %s", trt.__version__, plan_path.name,
                 here["gpu_name"], [s.name for s in self.inputs])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        arrays = prepare_inputs(self.inputs, inputs, self.name)
        keep = []
        with torch.cuda.stream(self._stream):
            for spec, arr in zip(self.inputs, arrays):
                t = torch.from_numpy(arr).to(self._device, non_blocking=False)
                keep.append(t)
                if not self._context.set_input_shape(spec.name, tuple(arr.shape)):
                    raise ValueError(f"tensorrt: input {spec.name!r} shape {list(arr.shape)} is "
                                     "outside the plan's optimisation profile")
                self._context.set_tensor_address(spec.name, t.data_ptr())
            outs = {}
            for spec in self.outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                t = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self._device)
                outs[spec.name] = t
                self._context.set_tensor_address(spec.name, t.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self._stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outs.items()}

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
