"""Reader for posed-image folders (``images/``, ``poses.txt``, ``split.txt``, optional
``distortion.txt``; format in docs/database.md).

``poses.txt`` stores world-to-camera ``T_cam_world``; records carry camera-to-world
``T_world_cam`` (the package convention, README "Conventions"), converted here once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from ..geometry import Distortion, Intrinsics, invert_T, T_from_quat_t

__all__ = ["PosedImage", "read_posed_folder", "read_distortion", "load_image"]

logger = logging.getLogger(__name__)

_QUAT_NORM_TOL = 1e-3
SPLITS = ("db", "query")


@dataclass(frozen=True)
class PosedImage:
    """One image of a posed folder: pose is camera-to-world, intrinsics of the stored image."""

    name: str
    path: Path
    intrinsics: Intrinsics
    T_world_cam: np.ndarray
    split: str


def load_image(path: Path) -> np.ndarray:
    """BGR uint8 image [H,W,3]; raises DataError naming the file if it is missing or unreadable."""
    if not Path(path).is_file():
        raise DataError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image: {path}")
    return img


def parse_named_numbers(line: str, where: str, spec: str) -> tuple[str, list[float]]:
    """``(name, numbers)`` of a text line laid out as ``spec`` (field names, the first a name);
    DataError naming ``where`` for a wrong field count, a non-number or a non-finite value."""
    parts = line.split()
    n = len(spec.split())
    if len(parts) != n:
        raise DataError(f"{where}: expected {n} fields '{spec}', got {len(parts)}")
    try:
        vals = [float(v) for v in parts[1:]]
    except ValueError as err:
        raise DataError(f"{where}: non-numeric field: {err}") from err
    if not all(math.isfinite(v) for v in vals):
        raise DataError(f"{where}: non-finite value")
    return parts[0], vals


def _parse_pose_line(line: str, where: str) -> tuple[str, list[float]]:
    return parse_named_numbers(line, where, "name fx fy cx cy qw qx qy qz tx ty tz")


def _read_split(folder: Path) -> dict[str, str]:
    path = folder / "split.txt"
    if not path.is_file():
        return {}
    split: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SPLITS:
            raise DataError(f"{path}:{lineno}: expected 'db <name>' or 'query <name>', got {line!r}")
        split[parts[1]] = parts[0]
    return split


def read_distortion(folder: Path) -> Distortion | None:
    """The lens model of every image of ``folder`` from its ``distortion.txt`` (one line
    ``<model> <coefficients...>`` in ROS CameraInfo terms); None without the file or with zero
    coefficients; DataError naming the file for anything malformed."""
    path = folder / "distortion.txt"
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise DataError(f"{path}: expected one line '<model> <coefficients...>', got {len(lines)}")
    try:
        return Distortion.parse(lines[0])
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


def read_posed_folder(folder: Path | str, split: str | None = None,
                      check_images: bool = True) -> list[PosedImage]:
    """All posed images of ``folder`` in sorted name order, optionally only one split.

    Raises DataError for a missing folder/file/image, a malformed line, a non-unit quaternion,
    a non-positive focal length or a malformed ``distortion.txt``, naming the file and line.
    With ``distortion.txt`` the intrinsics of ``poses.txt`` are the raw camera's and every
    record carries the distortion.
    """
    folder = Path(folder)
    poses_path = folder / "poses.txt"
    if not poses_path.is_file():
        raise DataError(f"no poses.txt in {folder}")
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    splits = _read_split(folder)
    distortion = read_distortion(folder)
    if split is not None and not splits:
        raise DataError(f"split {split!r} requested but {folder / 'split.txt'} is missing or empty")
    records: list[PosedImage] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(poses_path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{poses_path}:{lineno}"
        name, (fx, fy, cx, cy, qw, qx, qy, qz, tx, ty, tz) = _parse_pose_line(line, where)
        if name in first_line:
            raise DataError(f"{where}: duplicate image name {name!r} (first on line {first_line[name]})")
        first_line[name] = lineno
        q = np.array([qw, qx, qy, qz])
        if abs(np.linalg.norm(q) - 1.0) > _QUAT_NORM_TOL:
            raise DataError(f"{where}: quaternion norm {np.linalg.norm(q):.6f} is not 1")
        if fx <= 0 or fy <= 0:
            raise DataError(f"{where}: non-positive focal length fx={fx} fy={fy}")
        img_split = splits.get(name, "db")
        if split is not None and img_split != split:
            continue
        path = folder / "images" / name
        if check_images and not path.is_file():
            raise DataError(f"{where}: image {path} not found")
        width, height = _image_size(path) if check_images else (1, 1)
        T_cam_world = T_from_quat_t(q, [tx, ty, tz])
        records.append(PosedImage(name, path, Intrinsics(fx, fy, cx, cy, width, height, distortion),
                                  invert_T(T_cam_world), img_split))
    records.sort(key=lambda r: r.name)
    logger.info("read %d posed images from %s (split=%s)", len(records), folder, split or "all")
    return records


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the stored image (decodes it: also proves the file is readable)."""
    img = load_image(path)
    return img.shape[1], img.shape[0]
