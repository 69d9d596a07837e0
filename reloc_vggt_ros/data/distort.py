"""Images as a distorted lens would have taken them: the pinhole image warped through a camera model.

For tests and benchmarks of the camera models (real scenes of known pose seen through a known
lens) and for writing robot-style recordings: each raw pixel of the distorted image takes the
pinhole image's value at the ideal pixel its ray hits (:meth:`Intrinsics.undistort_px`, OpenCV
``remap``), so the distorted image and the pinhole one share ``K`` and the pose. Rays that fall
outside the pinhole image are black (a wider lens sees more than the source image holds).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from ..geometry import Distortion, Intrinsics
from .posed_folder import load_image, read_posed_folder

__all__ = ["distort_image", "write_distorted_folder"]

logger = logging.getLogger(__name__)


def distort_image(pinhole_bgr: np.ndarray, camera: Intrinsics, supersample: int = 3) -> np.ndarray:
    """The image ``camera`` (K + distortion) takes of what the pinhole image of ``camera.pinhole`` shows.

    Each raw pixel averages ``supersample`` x ``supersample`` samples over its footprint (rendered
    at that factor, then area-downsampled): where the lens compresses the scene, single bilinear
    samples would alias, which a real lens's optics never do.
    """
    h, w = pinhole_bgr.shape[:2]
    if (w, h) != (camera.width, camera.height):
        raise DataError(f"image is {w}x{h} but the camera is {camera.width}x{camera.height}")
    if camera.distortion is None:
        return pinhole_bgr.copy()
    s = max(int(supersample), 1)
    map_x, map_y = _maps(camera, s)
    out = cv2.remap(pinhole_bgr, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA) if s > 1 else out


_STEP = 8


@functools.lru_cache(maxsize=4)
def _maps(camera: Intrinsics, s: int) -> tuple[np.ndarray, np.ndarray]:
    """remap tables: for each raw pixel of ``camera`` at ``s`` x resolution, its ideal pixel in the
    pinhole image (one per camera: a stream or a folder warps every frame with the same tables)."""
    fine = camera.scaled(s)
    # the lens is smooth: undistort grid nodes every _STEP fine pixels (covering the image),
    # interpolate bilinearly between them (< 0.01 px from the exact map)
    nx, ny = (fine.width - 1) // _STEP + 2, (fine.height - 1) // _STEP + 2
    u, v = np.meshgrid(np.arange(nx, dtype=np.float64) * _STEP, np.arange(ny, dtype=np.float64) * _STEP)
    nodes = fine.undistort_px(np.stack([u.ravel(), v.ravel()], axis=1)).reshape(ny, nx, 2).astype(np.float32)
    gx, gy = np.meshgrid(np.arange(fine.width, dtype=np.float32) / _STEP, np.arange(fine.height, dtype=np.float32) / _STEP)
    ideal = cv2.remap(nodes, gx, gy, cv2.INTER_LINEAR).astype(np.float64)
    ideal = ((ideal + 0.5) / s - 0.5).astype(np.float32)          # ideal pixels of the pinhole image
    return np.ascontiguousarray(ideal[..., 0]), np.ascontiguousarray(ideal[..., 1])


def write_distorted_folder(src: Path | str, dst: Path | str, distortion: Distortion | None,
                           size: tuple[int, int] | None = None, write_distortion: bool = True) -> Path:
    """A posed folder at ``dst`` with every image of the (pinhole) folder ``src`` seen through
    ``distortion`` (optionally resized to ``size`` (w, h) first, intrinsics scaled), its
    ``poses.txt`` / ``split.txt`` and a ``distortion.txt`` (left out with ``write_distortion``
    False: the same raw images, the lens unknown to a reader). Images are written as PNG
    (lossless: the warp is the only change)."""
    src, dst = Path(src), Path(dst)
    recs = read_posed_folder(src)
    if any(r.intrinsics.distortion is not None for r in recs):
        raise DataError(f"{src} is already distorted (it has a distortion.txt)")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    lines = ["# name fx fy cx cy qw qx qy qz tx ty tz (raw camera: distortion.txt)"]
    for line in (src / "poses.txt").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        rec = next(r for r in recs if r.name == parts[0])
        img, intr = load_image(rec.path), rec.intrinsics
        if size is not None and size != (intr.width, intr.height):
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            intr = intr.scaled(size[0] / intr.width, size[1] / intr.height)
        name = str(Path(rec.name).with_suffix(".png"))
        camera = Intrinsics(intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height, distortion)
        if not cv2.imwrite(str(dst / "images" / name), distort_image(img, camera)):
            raise DataError(f"cannot write {dst / 'images' / name}")
        lines.append(" ".join([name, *(repr(v) for v in (intr.fx, intr.fy, intr.cx, intr.cy)), *parts[5:]]))
    (dst / "poses.txt").write_text("\n".join(lines) + "\n")
    if (src / "split.txt").is_file():
        split = [" ".join([p[0], str(Path(p[1]).with_suffix(".png"))]) if len(p := ln.split()) == 2 else ln
                 for ln in (src / "split.txt").read_text().splitlines()]
        (dst / "split.txt").write_text("\n".join(split) + "\n")
    dist_file = dst / "distortion.txt"
    if distortion is not None and write_distortion:
        dist_file.write_text(f"{distortion}\n")
    else:
        dist_file.unlink(missing_ok=True)
    logger.info("wrote %d images of %s through %s to %s", len(recs), src, distortion or "a pinhole lens", dst)
    return dst
