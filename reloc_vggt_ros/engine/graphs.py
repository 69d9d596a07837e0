"""Exportable graphs: a module with named tensor inputs/outputs and a keyframe-count axis.

The same wrapper feeds the torch engine, the ONNX exporter and the TensorRT profiles, so the
input names, dynamic axes and shapes are written down once. A graph's shapes depend on one
integer, the number of keyframes ``K`` (frames of the map in one forward pass); everything
else (batch 1, image size) is fixed at export time.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import TensorSpec

__all__ = ["ExportableGraph", "KEYFRAME_AXIS"]

KEYFRAME_AXIS = "num_keyframes"


class ExportableGraph(nn.Module):
    """Base class: ``forward(*inputs) -> tuple`` in ``input_names`` / ``output_names`` order.

    Subclasses set ``graph_name``, ``input_names``, ``output_names`` and implement
    :meth:`input_shapes` (shapes for ``K`` keyframes) and :meth:`dynamic_axes` (which axes of
    which tensors grow with ``K``; empty when the graph does not depend on ``K``).
    """

    graph_name: str = "graph"
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def input_shapes(self, num_keyframes: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor name: {axis: symbolic name}}`` for inputs and outputs that scale with K."""
        return {}

    def model_config(self) -> dict:
        """JSON-able config of the wrapped model, recorded in the export sidecar."""
        return {}

    def input_dtypes(self) -> Mapping[str, torch.dtype]:
        """Dtype per input; floating inputs follow the module's parameters (fp32 or fp16)."""
        param = next(self.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        return {name: dtype for name in self.input_names}

    def example_inputs(self, num_keyframes: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Deterministic inputs in [0, 1) for ``K`` keyframes (used for tracing and parity)."""
        gen = torch.Generator().manual_seed(seed)
        shapes, dtypes = self.input_shapes(num_keyframes), self.input_dtypes()
        return tuple(torch.rand(shapes[n], generator=gen).to(dtypes[n]) for n in self.input_names)

    def input_specs(self, num_keyframes: int | None = None) -> tuple[TensorSpec, ...]:
        """Specs with the dynamic axes named (``num_keyframes=None``) or fixed at ``K``."""
        shapes = self.input_shapes(num_keyframes or 1)
        dyn = self.dynamic_axes()
        specs = []
        for name in self.input_names:
            shape: list[int | str] = list(shapes[name])
            if num_keyframes is None:
                for axis, sym in dyn.get(name, {}).items():
                    shape[axis] = sym
            dtype = str(self.input_dtypes()[name]).removeprefix("torch.")
            specs.append(TensorSpec(name, tuple(shape), dtype))
        return tuple(specs)
