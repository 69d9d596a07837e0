"""Hostile-input checks without ROS: oversized images refused from their headers, other formats by
magic bytes, zero / far-future stamps, on real photos re-encoded with OpenCV."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.hostile_topics import jpeg_claiming
from reloc_vggt_ros.errors import ConfigError, DataError
from reloc_vggt_ros.session import SessionConfig, check_image_size, check_stamp, compressed_header

TEMPLE = Path(__file__).parents[2] / ".." / "shared" / "data" / "middlebury-temple-ring" / "images"
S = 1_000_000_000
NOW = 1_800_000_000 * S


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    path = sorted(TEMPLE.iterdir())[0]
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def _png_10k() -> bytes:
    """A genuine 10,000 x 10,000 grey PNG (~100 KB compressed, 100 MB decoded), written by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(bytes(10_001) * 10_000, 9)  # filter byte + 10,000 grey pixels per row
    ihdr = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_header_sizes_match_what_opencv_decodes(photo):
    h, w = photo.shape[:2]
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png")):
        data = cv2.imencode(ext, photo)[1].tobytes()
        assert compressed_header(data) == (fmt, w, h)
    progressive = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert compressed_header(progressive) == ("jpeg", w, h)


def test_a_10k_image_is_refused_from_its_header_without_allocating(photo):
    png, jpeg = _png_10k(), jpeg_claiming(photo, 10_000, 10_000)
    tracemalloc.start()
    for data in (png, jpeg):
        fmt, w, h = compressed_header(data)
        with pytest.raises(DataError, match=rf"{fmt} image is 10000x10000 = 100.0 MP, over max_image_pixels"):
            check_image_size(w, h, SessionConfig().max_image_pixels, what=f"{fmt} image")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak  # the header only: nothing near the 100-300 MB a decode allocates


@pytest.mark.parametrize("data, why", [
    (b"GIF89a" + bytes(40), "neither JPEG nor PNG"),
    (b"BM" + bytes(60), "neither JPEG nor PNG"),                      # BMP: cv2.imdecode would take it
    (b"", "neither JPEG nor PNG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(4), "no IHDR header"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(7), "no frame header"),  # APP0 then nothing
])
def test_other_formats_and_truncated_headers_are_refused(data, why):
    with pytest.raises(DataError, match=why):
        compressed_header(data)


def test_tiff_and_webp_encoded_by_opencv_are_refused(photo):
    for ext in (".tiff", ".webp"):
        ok, buf = cv2.imencode(ext, photo)
        if ok:
            with pytest.raises(DataError, match="neither JPEG nor PNG"):
                compressed_header(buf.tobytes())


def test_image_size_limit():
    check_image_size(640, 480, 640 * 480)
    with pytest.raises(DataError, match="over max_image_pixels = 307199"):
        check_image_size(640, 480, 640 * 480 - 1)
    with pytest.raises(DataError, match="has no size"):
        check_image_size(0, 480, 10**9)


def test_stamps_zero_and_far_future_are_refused():
    check_stamp(NOW - 3600 * S, NOW, 5.0)            # old (a bag): fine
    check_stamp(NOW + 4 * S, NOW, 5.0)               # a little ahead (clock skew): fine
    with pytest.raises(DataError, match="stamp is zero"):
        check_stamp(0, NOW, 5.0)
    with pytest.raises(DataError, match=r"image stamp is 3600.0 s in the future \(max_future_stamp_s = 5\)"):
        check_stamp(NOW + 3600 * S, NOW, 5.0)
    check_stamp(NOW + 3600 * S, NOW, 0.0)            # 0 = no future check
    check_stamp(NOW + 3600 * S, 0, 5.0)              # sim time before the first /clock: unknown now


def test_limits_are_validated():
    assert SessionConfig().max_image_pixels < 10_000 * 10_000
    with pytest.raises(ConfigError, match="max_image_pixels must be >= 1"):
        SessionConfig(max_image_pixels=0)
    with pytest.raises(ConfigError, match="max_future_stamp_s must be >= 0"):
        SessionConfig(max_future_stamp_s=-1.0)
