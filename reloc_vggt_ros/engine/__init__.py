"""Inference engines behind one interface (torch, onnxruntime, tensorrt), ONNX export, TensorRT build.

``base`` is the interface (a leaf), ``factory.make_engine(kind, source, fallback=...)`` the entry
point, ``reloc_graphs`` the Reloc-VGGT graph contract (export and runtime); see
``docs/deployment.md``. Importing this package needs only numpy: torch, onnxruntime and tensorrt
load with their backend.
"""

from .base import ENGINE_KINDS, InferenceEngine, TensorSpec
from .factory import make_engine

__all__ = ["ENGINE_KINDS", "InferenceEngine", "TensorSpec", "make_engine"]
