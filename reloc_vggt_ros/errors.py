"""Error types shared by the whole package.

Errors are raised at boundaries (files, parameters, weights) with the offending path or value
in the message. A weak localization is *not* an error: it is a ``RelocResult`` with a status.
"""


class RelocError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RelocError, ValueError):
    """A configuration value or parameter is invalid; the message names it and why."""


class DataError(RelocError):
    """A posed-image folder, bag or image is malformed or missing."""


class KeyframeDBError(RelocError):
    """The keyframe database is missing, corrupt, of another schema version, or misused."""


class ModelLoadError(RelocError):
    """Weights or a model config cannot be loaded (missing file, wrong architecture, shapes)."""


class EngineUnavailableError(RelocError):
    """An inference backend cannot run here (e.g. TensorRT or onnxruntime not importable)."""
