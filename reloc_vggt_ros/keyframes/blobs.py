"""Named numpy arrays <-> bytes for the store's per-backend blobs.

The format is an in-memory ``.npz`` (``numpy.savez``, uncompressed) read back with
``allow_pickle=False``: readable from any numpy without this package, and a blob can never
execute code when loaded. Before any array is read, each member's ``.npy`` header (dtype,
shape) must account for exactly the bytes its zip entry holds, so a lying size or shape field
is a KeyframeDBError, never a huge allocation or a silently short array.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

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


_LOCAL_HEADER = struct.Struct("<4s22xHH")      # zip local file header: signature ... name and extra lengths


def _member(data: bytes, info: zipfile.ZipInfo) -> memoryview:
    """The stored bytes of one member of an uncompressed zip, without copying them."""
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise KeyframeDBError(f"array {info.filename!r} is compressed: not written by pack_arrays")
    sig, n_name, n_extra = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    if sig != b"PK\x03\x04":
        raise KeyframeDBError(f"array {info.filename!r}: no zip entry at its offset")
    start = info.header_offset + _LOCAL_HEADER.size + n_name + n_extra
    member = memoryview(data)[start:start + info.file_size]
    if len(member) != info.file_size or zlib.crc32(member) != info.CRC:
        raise KeyframeDBError(f"array {info.filename!r}: its bytes do not match the zip entry's size and CRC")
    return member


def _array(name: str, member: memoryview, copy: bool) -> np.ndarray:
    """One ``.npy`` member as an array (a writable copy, or a read-only view of ``member``), once
    its header (dtype, shape) is seen to account for exactly the bytes the member holds."""
    f = io.BytesIO(member[:min(len(member), 65536)])
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    header = f.tell()
    if dtype.hasobject:
        raise KeyframeDBError(f"array {name!r} has object dtype {dtype}")
    count = int(np.prod(shape, dtype=np.int64))
    want = count * dtype.itemsize
    if header + want != len(member):
        raise KeyframeDBError(f"array {name!r}: its header says shape {shape} of {dtype} "
                              f"({want} bytes) but its entry holds {len(member) - header} bytes")
    flat = np.frombuffer(member, dtype, count, header)
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return array.copy(order="K") if copy else array


def unpack_arrays(data: bytes, copy: bool = True) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays`; KeyframeDBError if ``data`` is not such an archive or a
    size/shape field in it lies. Each array is read straight from its place in ``data``: copied
    once, or with ``copy=False`` a read-only view of ``data`` (large maps read a ~100 MB global
    index at start-up)."""
    data = bytes(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
        out = {}
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            out[name] = _array(info.filename, _member(data, info), copy)
        return out
    except KeyframeDBError as err:
        raise KeyframeDBError(f"blob of {len(data)} bytes is inconsistent: {err}") from err
    except Exception as err:  # noqa: BLE001 - any parse failure of stored bytes means a damaged blob
        raise KeyframeDBError(f"blob of {len(data)} bytes is not a packed array archive: "
                              f"{type(err).__name__}: {err}") from err
