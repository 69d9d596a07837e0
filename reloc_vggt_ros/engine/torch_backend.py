"""Eager PyTorch engine (optionally ``torch.compile``d): the reference every export is checked against."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, EngineUnavailableError
from .base import TensorSpec, prepare_inputs

__all__ = ["TorchEngine"]

log = logging.getLogger(__name__)


class TorchEngine:
    """Runs an :class:`~reloc_vggt_ros.engine.graphs.ExportableGraph` in eval mode without grad.

    ``device`` is ``"cpu"`` or ``"cuda[:i]"``; ``compile=True`` wraps the module in
    ``torch.compile`` (needs a C++ compiler on CPU; the first run is slow while it compiles).
    """

    def __init__(self, module, *, device: str = "cpu", compile: bool = False,
                 num_threads: int | None = None) -> None:
        try:
            import torch
        except ImportError as err:  # pragma: no cover - torch is a hard dependency here
            raise EngineUnavailableError("torch is not importable (pip install torch)") from err
        if not hasattr(module, "input_names") or not hasattr(module, "output_names"):
            raise ConfigError("the torch engine needs an ExportableGraph (input_names/output_names)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(f"torch device {device!r} requested but "
                                         "torch.cuda.is_available() is False")
        if num_threads:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self._device = torch.device(device)
        self._module = module.eval().to(self._device)
        self._call = torch.compile(self._module) if compile else self._module
        self.name = "torch-compile" if compile else "torch"
        self.inputs: tuple[TensorSpec, ...] = tuple(module.input_specs())
        # eager modules do not declare output shapes: names only, shape () = unknown until run
        self.outputs: tuple[TensorSpec, ...] = tuple(TensorSpec(n, (), "float32")
                                                     for n in module.output_names)
        log.info("torch engine on %s (compile=%s), inputs %s", device, compile,
                 [s.name for s in self.inputs])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        arrays = prepare_inputs(self.inputs, inputs, self.name)
        tensors = [torch.from_numpy(a).to(self._device) for a in arrays]
        with torch.inference_mode():
            out = self._call(*tensors)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return {name: t.detach().float().cpu().numpy() if t.dtype == torch.bfloat16
                else t.detach().cpu().numpy() for name, t in zip(self._module.output_names, out)}

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]
        self._call = None
