"""Keyframe database: SQLite store, retrieval index, and the build stage."""

from .blobs import pack_arrays, unpack_arrays
from .build import build_keyframe_db
from .retrieval import (GlobalIndex, load_global_index, nearest_by_pose, store_global_descriptors,
                        thumbnail_descriptor)
from .store import SCHEMA_VERSION, KeyframeStore
from .types import Keyframe

__all__ = ["Keyframe", "KeyframeStore", "SCHEMA_VERSION", "GlobalIndex", "nearest_by_pose",
           "thumbnail_descriptor", "store_global_descriptors", "load_global_index", "build_keyframe_db",
           "pack_arrays", "unpack_arrays"]
