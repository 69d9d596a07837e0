"""Checks on hostile or broken input, before anything big is allocated (ROS-free).

The node runs them on message fields: an image's claimed size against ``max_image_pixels``
(before a raw buffer is converted or a compressed one decoded; a compressed image's size is
read from its JPEG SOF / PNG IHDR header), the compressed format by its magic bytes, and the
header stamp against the node clock (zero, or further ahead than ``max_future_stamp_s``). Each
failure is a DataError whose text is the reason shown in /diagnostics.
"""

from __future__ import annotations

import struct

from ..errors import DataError

__all__ = ["check_image_size", "check_stamp", "compressed_header", "JPEG_MAGIC", "PNG_MAGIC"]

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def check_image_size(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """DataError if ``width x height`` is empty or over ``max_pixels`` (checked before decoding)."""
    if width <= 0 or height <= 0:
        raise DataError(f"{what} has no size ({width}x{height})")
    if width * height > max_pixels:
        raise DataError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, over max_image_pixels "
                        f"= {max_pixels} ({max_pixels / 1e6:.1f} MP): not decoded; downscale the camera "
                        "output or raise max_image_pixels")


def check_stamp(stamp_ns: int, now_ns: int, max_future_s: float, what: str = "image") -> None:
    """DataError for a zero stamp, or one more than ``max_future_s`` ahead of ``now_ns``.

    ``now_ns <= 0`` (a simulated clock before its first /clock) and ``max_future_s == 0`` skip the
    future check; old stamps are fine (bags, recorded data).
    """
    if stamp_ns == 0:
        raise DataError(f"{what} stamp is zero (header.stamp unset): cannot pair it with camera_info or TF; "
                        "stamp messages with the capture time")
    if max_future_s > 0 and now_ns > 0 and stamp_ns - now_ns > max_future_s * 1e9:
        raise DataError(f"{what} stamp is {(stamp_ns - now_ns) / 1e9:.1f} s in the future (max_future_stamp_s "
                        f"= {max_future_s:g}): is the publisher's clock (or use_sim_time) right?")


def compressed_header(data: bytes | bytearray | memoryview) -> tuple[str, int, int]:
    """``(format, width, height)`` of a JPEG or PNG from its header only; DataError otherwise."""
    head = bytes(data[:32])
    if head.startswith(PNG_MAGIC):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise DataError(f"PNG image ({len(data)} bytes) has no IHDR header: truncated or corrupt")
        width, height = struct.unpack(">II", head[16:24])
        return "png", int(width), int(height)
    if head.startswith(JPEG_MAGIC):
        return ("jpeg", *_jpeg_size(bytes(data)))
    raise DataError(f"compressed image does not decode: neither JPEG nor PNG (first bytes {head[:8].hex(' ')}, {len(data)} "
                    "bytes): publish jpeg or png")


def _jpeg_size(buf: bytes) -> tuple[int, int]:
    """Width, height from the first SOF segment; walks the marker segments, no pixel data."""
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            break
        marker = buf[i + 1]
        if marker == 0xFF:            # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", buf[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > n or length < 7:
                break
            height, width = struct.unpack(">HH", buf[i + 5:i + 9])
            return int(width), int(height)
        if marker == 0xDA or length < 2:  # scan data before any SOF: not a valid JPEG
            break
        i += 2 + length
    raise DataError(f"JPEG image ({n} bytes) has no frame header (SOF) before its data: truncated or corrupt")
