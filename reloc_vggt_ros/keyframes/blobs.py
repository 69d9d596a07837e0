"""Named numpy arrays <-> bytes for the store's per-backend blobs.

The format is an in-memory ``.npz`` (``numpy.savez``, uncompressed) read back with
``allow_pickle=False``: readable from any numpy without this package, and a blob can never
execute code when loaded.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from ..errors import KeyframeDBError

__all__ = ["pack_arrays", "unpack_arrays"]


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``{name: array}`` (no object dtypes) to ``.npz`` bytes."""
    clean: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"array names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(f"array {name!r} has object dtype; only plain numeric/bytes arrays are stored")
        clean[name] = arr
    buf = io.BytesIO()
    np.savez(buf, **clean)
    return buf.getvalue()


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays`; KeyframeDBError if ``data`` is not such an archive."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise KeyframeDBError(f"blob of {len(data)} bytes is not a packed array archive: {err}") from err
