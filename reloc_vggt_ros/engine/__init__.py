"""Inference engines behind one interface (torch, onnxruntime, tensorrt), ONNX export, TensorRT build.

``make_engine(kind, source, fallback=...)`` is the entry point; see ``docs/deployment.md``.
Importing this package needs only numpy: torch, onnxruntime and tensorrt load with their backend.
"""

from .base import ENGINE_KINDS, InferenceEngine, TensorSpec, make_engine

__all__ = ["ENGINE_KINDS", "InferenceEngine", "TensorSpec", "make_engine"]
