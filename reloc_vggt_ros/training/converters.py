"""Converters from public relocalization layouts to posed-image folders.

Both write ``<out>/images/<name>``, ``poses.txt`` (world-to-camera, w-first quaternion) and
``split.txt`` (the dataset's train split -> ``db``, test split -> ``query``), then read the result
back with :func:`read_posed_folder` so a bad conversion fails here, not in training.

* **7-Scenes** (Shotton et al. 2013): ``<scene>/seq-XX/frame-NNNNNN.color.png`` with
  ``frame-NNNNNN.pose.txt`` = 4x4 camera-to-world matrix, ``TrainSplit.txt`` / ``TestSplit.txt``
  listing ``sequenceN``. The dataset publishes one pinhole for all frames: principal point
  (320, 240), focal length 585 px (640x480); override ``focal`` if you calibrate the RGB camera
  differently (e.g. 525). Invalid frames (non-finite or ``inf`` poses) are skipped.
* **Cambridge Landmarks** (Kendall et al. 2015): ``dataset_train.txt`` / ``dataset_test.txt`` with
  three header lines, then ``seqN/frameNNNNN.png X Y Z W P Q R``: camera centre in the world and the
  world-to-camera rotation as a w-first quaternion. Focal lengths come from ``reconstruction.nvm``
  (``<file> <focal> <qw qx qy qz> <cx cy cz> <radial> 0`` per camera, pixels of the
  ``nvm_width``-wide originals), scaled to the stored image width; principal point at the centre.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from ..data.posed_folder import PosedImage, read_posed_folder
from ..errors import DataError
from ..geometry import invert_T, is_valid_T, make_T, project_to_SO3, quat_to_R, T_to_quat_t

__all__ = ["convert_7scenes", "convert_cambridge", "read_nvm_focals"]

logger = logging.getLogger(__name__)


def _write_folder(out: Path, rows: list[tuple[str, Path, tuple[float, float, float, float], np.ndarray, str]],
                  link: bool) -> list[PosedImage]:
    """rows: (name, source image, (fx, fy, cx, cy), T_world_cam, split)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    poses = ["# name fx fy cx cy qw qx qy qz tx ty tz (world-to-camera)"]
    split = []
    for name, src, (fx, fy, cx, cy), T_world_cam, which in rows:
        dst = out / "images" / name
        if not dst.exists():
            if link:
                dst.symlink_to(src.resolve())
            else:
                shutil.copyfile(src, dst)
        q, t = T_to_quat_t(invert_T(T_world_cam))
        poses.append(" ".join([name, *(f"{v:.10g}" for v in (fx, fy, cx, cy, *q, *t))]))
        split.append(f"{which} {name}")
    (out / "poses.txt").write_text("\n".join(poses) + "\n")
    (out / "split.txt").write_text("\n".join(split) + "\n")
    return read_posed_folder(out)


def _read_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"7-Scenes split file not found: {path}")
    seqs = []
    for line in path.read_text().split():
        digits = "".join(c for c in line if c.isdigit())
        if not digits:
            raise DataError(f"{path}: cannot read a sequence number from {line!r}")
        seqs.append(f"seq-{int(digits):02d}")
    return seqs


def convert_7scenes(scene_dir: Path, out: Path, focal: float = 585.0, link: bool = True,
                    every: int = 1) -> list[PosedImage]:
    """One 7-Scenes scene -> posed folder; ``every`` keeps every n-th frame of each sequence."""
    scene_dir, out = Path(scene_dir), Path(out)
    rows = []
    for split_file, which in (("TrainSplit.txt", "db"), ("TestSplit.txt", "query")):
        for seq in _read_split_file(scene_dir / split_file):
            colour = sorted((scene_dir / seq).glob("frame-*.color.png"))
            if not colour:
                raise DataError(f"no frame-*.color.png in {scene_dir / seq}")
            for img in colour[::every]:
                pose_path = img.with_name(img.name.replace(".color.png", ".pose.txt"))
                try:
                    T = np.loadtxt(pose_path).reshape(4, 4)
                except (OSError, ValueError) as err:
                    raise DataError(f"cannot read 4x4 pose {pose_path}: {err}") from err
                if not np.all(np.isfinite(T)) or abs(T[3, 3] - 1) > 1e-6:
                    logger.warning("skipping %s: invalid pose", img)
                    continue
                T = make_T(project_to_SO3(T[:3, :3]), T[:3, 3])
                h, w = _image_hw(img)
                name = f"{seq}_{img.name.replace('.color.png', '.png')}"
                rows.append((name, img, (focal, focal, w / 2, h / 2), T, which))
    if not rows:
        raise DataError(f"no frames converted from {scene_dir}")
    records = _write_folder(out, rows, link)
    logger.info("7-Scenes %s -> %s: %d frames", scene_dir.name, out, len(records))
    return records


def read_nvm_focals(nvm: Path) -> dict[str, float]:
    """Per-image focal length (pixels of the original images) from an NVM_V3 file, by file name."""
    try:
        lines = Path(nvm).read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read {nvm}: {err}") from err
    if not lines or not lines[0].startswith("NVM_V3"):
        raise DataError(f"{nvm}: not an NVM_V3 file")
    i = 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    try:
        n = int(lines[i].split()[0])
        focals = {}
        for line in lines[i + 1: i + 1 + n]:
            parts = line.split()
            focals[parts[0]] = float(parts[1])
    except (IndexError, ValueError) as err:
        raise DataError(f"{nvm}: malformed camera block near line {i + 1}: {err}") from err
    return focals


def _nvm_key(name: str) -> str:
    """Cambridge lists ``seq1/frame00001.png``; the NVM names ``seq1/frame00001.jpg``."""
    return str(Path(name).with_suffix(""))


def convert_cambridge(scene_dir: Path, out: Path, nvm_width: int = 1920, focal: float | None = None,
                      link: bool = True) -> list[PosedImage]:
    """One Cambridge Landmarks scene -> posed folder. ``focal`` (stored-image pixels) overrides the NVM."""
    scene_dir, out = Path(scene_dir), Path(out)
    focals: dict[str, float] = {}
    if focal is None:
        nvm = scene_dir / "reconstruction.nvm"
        if not nvm.is_file():
            raise DataError(f"{nvm} not found; pass focal= (pixels of the stored images) instead")
        focals = {_nvm_key(k): v for k, v in read_nvm_focals(nvm).items()}
    rows = []
    for list_file, which in (("dataset_train.txt", "db"), ("dataset_test.txt", "query")):
        path = scene_dir / list_file
        if not path.is_file():
            raise DataError(f"Cambridge list not found: {path}")
        for lineno, line in enumerate(path.read_text().splitlines()[3:], 4):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 8:
                raise DataError(f"{path}:{lineno}: expected 'file X Y Z W P Q R', got {line!r}")
            rel = parts[0]
            C = np.array([float(v) for v in parts[1:4]])
            q = np.array([float(v) for v in parts[4:8]])
            img = scene_dir / rel
            if not img.is_file():
                raise DataError(f"{path}:{lineno}: image {img} not found")
            h, w = _image_hw(img)
            if focal is not None:
                f = focal
            elif _nvm_key(rel) in focals:
                f = focals[_nvm_key(rel)] * w / nvm_width
            else:
                raise DataError(f"{path}:{lineno}: {rel} has no camera in reconstruction.nvm")
            R_cam_world = quat_to_R(q)
            T = make_T(R_cam_world.T, C)                  # camera-to-world: rotation^T, centre
            if not is_valid_T(T) or not math.isfinite(f):
                raise DataError(f"{path}:{lineno}: invalid pose")
            rows.append((rel.replace("/", "_"), img, (f, f, (w - 1) / 2, (h - 1) / 2), T, which))
    records = _write_folder(out, rows, link)
    logger.info("Cambridge %s -> %s: %d frames", scene_dir.name, out, len(records))
    return records


def _image_hw(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot decode image {path}")
    return img.shape[0], img.shape[1]
