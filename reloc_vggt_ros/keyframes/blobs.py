"""Named numpy arrays <-> bytes for the store's per-backend blobs.

The format is an in-memory ``.npz`` (``numpy.savez``, uncompressed) read back with
``allow_pickle=False``: readable from any numpy without this package, and a blob can never
execute code when loaded. Before any array is read, each member's ``.npy`` header (dtype,
shape) must account for exactly the bytes its zip entry holds, so a lying size or shape field
is a KeyframeDBError, never a huge allocation or a silently short array.
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


def _check_sizes(data: bytes) -> None:
    """KeyframeDBError unless every member's header shape x itemsize equals its stored data size."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                header = f.tell()
            if dtype.hasobject:
                raise KeyframeDBError(f"array {info.filename!r} has object dtype {dtype}")
            want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if header + want != info.file_size:
                raise KeyframeDBError(f"array {info.filename!r}: its header says shape {shape} of {dtype} "
                                      f"({want} bytes) but its entry holds {info.file_size - header} bytes")


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays`; KeyframeDBError if ``data`` is not such an archive or a
    size/shape field in it lies."""
    try:
        _check_sizes(data)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except KeyframeDBError as err:
        raise KeyframeDBError(f"blob of {len(data)} bytes is inconsistent: {err}") from err
    except Exception as err:  # noqa: BLE001 - any parse failure of stored bytes means a damaged blob
        raise KeyframeDBError(f"blob of {len(data)} bytes is not a packed array archive: "
                              f"{type(err).__name__}: {err}") from err
