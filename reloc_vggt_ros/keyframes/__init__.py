"""Keyframe database: SQLite store, and the build stage."""

from .blobs import pack_arrays, unpack_arrays
from .build import build_keyframe_db
from .store import SCHEMA_VERSION, KeyframeStore
from .types import Keyframe

__all__ = ["Keyframe", "KeyframeStore", "SCHEMA_VERSION", "build_keyframe_db", "pack_arrays", "unpack_arrays"]
