"""Keyframe database: SQLite store, retrieval index, and the build stage."""

from .blobs import pack_arrays, unpack_arrays
from .store import SCHEMA_VERSION, KeyframeStore
from .types import Keyframe

__all__ = ["Keyframe", "KeyframeStore", "SCHEMA_VERSION", "pack_arrays", "unpack_arrays"]
