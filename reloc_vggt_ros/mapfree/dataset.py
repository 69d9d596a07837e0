"""Reader and writer of map-free relocalization scenes (Niantic's layout; docs/mapfree.md).

A scene folder holds ``seq0/frame_00000.jpg`` (the reference), ``seq1/frame_*.jpg`` (queries),
``intrinsics.txt`` (``name fx fy cx cy W H``), ``poses.txt`` (``name qw qx qy qz tx ty tz``,
world-to-camera, the reference at identity), optionally ``poses_device.txt`` (Track 2 device
tracking, same format) and per-frame depth ``frame_XXXXX.<suffix>.png`` (uint16 millimetres).
Records carry the package convention, camera-to-world ``T_world_cam`` with world = reference
camera, converted here once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data.posed_folder import parse_named_numbers
from ..errors import DataError
from ..geometry import Intrinsics, invert_T, T_from_quat_t, T_to_quat_t

__all__ = ["REFERENCE", "MapfreeFrame", "MapfreeScene", "read_scene", "read_dataset",
           "read_pose_file", "write_pose_file", "write_intrinsics", "load_depth", "frame_name", "frame_number",
           "INFO_FILE", "read_info"]


REFERENCE = "seq0/frame_00000.jpg"
INFO_FILE = "mapfree.json"         # written by `reloc-vggt mapfree convert` beside its scenes
_IDENTITY_TOL = 1e-6


def frame_name(seq: int, index: int) -> str:
    return f"seq{seq}/frame_{index:05d}.jpg"


def frame_number(name: str) -> int | None:
    """5-digit frame number before the extension (the benchmark's ``int(name[-9:-4])``)."""
    digits = name[-9:-4]
    return int(digits) if len(digits) == 5 and digits.isdigit() else None


@dataclass(frozen=True)
class MapfreeFrame:
    """One image; ``T_world_cam`` is None where the file hides it (test set: all-zero lines)."""

    name: str
    path: Path
    intrinsics: Intrinsics
    T_world_cam: np.ndarray | None


@dataclass(frozen=True)
class MapfreeScene:
    name: str
    root: Path
    reference: MapfreeFrame
    queries: tuple[MapfreeFrame, ...]           # poses.txt order (the benchmark subsamples it)
    device_poses: dict[str, np.ndarray] = field(default_factory=dict)  # Track 2, T_world_cam

    def query(self, name: str) -> MapfreeFrame:
        for q in self.queries:
            if q.name == name:
                return q
        raise KeyError(f"{self.root}: no query frame {name!r}")


def _fields(path: Path, spec: str) -> list[tuple[str, list[float]]]:
    """(name, numbers) of every non-comment line of ``path`` laid out as ``spec`` (field names);
    DataError naming file and line for a wrong count, a non-number or a non-finite value."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        out.append(parse_named_numbers(line, f"{path}:{lineno}", spec))
    return out


def read_pose_file(path: Path) -> list[tuple[str, np.ndarray | None]]:
    """``name qw qx qy qz tx ty tz`` lines -> (name, T_world_cam), None for a zero quaternion
    (the hidden test-set ground truth)."""
    out = []
    for name, vals in _fields(path, "name qw qx qy qz tx ty tz"):
        q = np.array(vals[:4])
        out.append((name, None if np.linalg.norm(q) < 1e-12 else invert_T(T_from_quat_t(q, vals[4:7]))))
    return out


def _fmt_pose(T_world_cam: np.ndarray) -> str:
    q, t = T_to_quat_t(invert_T(T_world_cam))
    return " ".join(f"{v:.12g}" for v in (*q, *t))


def write_pose_file(path: Path, poses: list[tuple[str, np.ndarray]]) -> None:
    """Write (name, T_world_cam) as world-to-camera ``name qw qx qy qz tx ty tz`` lines."""
    path.write_text("".join(f"{name} {_fmt_pose(T)}\n" for name, T in poses), encoding="utf-8")


def write_intrinsics(path: Path, frames: list[tuple[str, Intrinsics]]) -> None:
    path.write_text("".join(f"{n} {k.fx:.12g} {k.fy:.12g} {k.cx:.12g} {k.cy:.12g} {k.width} {k.height}\n"
                            for n, k in frames), encoding="utf-8")


def _read_intrinsics(path: Path) -> dict[str, Intrinsics]:
    if not path.is_file():
        raise DataError(f"no intrinsics.txt in {path.parent}")
    out: dict[str, Intrinsics] = {}
    for name, (fx, fy, cx, cy, w, h) in _fields(path, "name fx fy cx cy width height"):
        try:
            out[name] = Intrinsics(fx, fy, cx, cy, int(round(w)), int(round(h)))
        except ValueError as err:
            raise DataError(f"{path}: frame {name}: {err}") from err
    return out


def read_scene(root: Path | str, check_images: bool = True) -> MapfreeScene:
    """One scene folder; raises DataError naming the file for anything malformed or missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"map-free scene folder not found: {root}")
    intr = _read_intrinsics(root / "intrinsics.txt")
    poses_path = root / "poses.txt"
    if not poses_path.is_file():
        raise DataError(f"no poses.txt in {root}")
    frames: list[MapfreeFrame] = []
    seen: set[str] = set()
    for name, T in read_pose_file(poses_path):
        if name in seen:
            raise DataError(f"{poses_path}: duplicate frame {name!r}")
        seen.add(name)
        if name not in intr:
            raise DataError(f"{poses_path}: frame {name!r} has no line in intrinsics.txt")
        path = root / name
        if check_images and not path.is_file():
            raise DataError(f"{poses_path}: image {path} not found")
        frames.append(MapfreeFrame(name, path, intr[name], T))
    refs = [f for f in frames if f.name == REFERENCE]
    if not refs:
        raise DataError(f"{poses_path}: no line for the reference {REFERENCE}")
    ref = refs[0]
    if ref.T_world_cam is not None and not np.allclose(ref.T_world_cam, np.eye(4), atol=_IDENTITY_TOL):
        raise DataError(f"{poses_path}: the reference {REFERENCE} must have the identity pose "
                        "(query poses are relative to it)")
    ref = MapfreeFrame(ref.name, ref.path, ref.intrinsics, np.eye(4))
    queries = tuple(f for f in frames if not f.name.startswith("seq0/"))
    numbers = [frame_number(q.name) for q in queries]
    if None in numbers or len(set(numbers)) != len(numbers):
        raise DataError(f"{poses_path}: query frames must be named like seq1/frame_00000.jpg with "
                        "distinct numbers (submissions are matched by frame number)")
    device: dict[str, np.ndarray] = {}
    if (root / "poses_device.txt").is_file():
        device = {n: T for n, T in read_pose_file(root / "poses_device.txt") if T is not None}
    return MapfreeScene(root.name, root, ref, queries, device)


def read_dataset(root: Path | str, check_images: bool = True) -> list[MapfreeScene]:
    """Every scene (sub-folder with a poses.txt) of a split folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"map-free dataset folder not found: {root}")
    scenes = [read_scene(d, check_images) for d in sorted(root.iterdir())
              if d.is_dir() and (d / "poses.txt").is_file()]
    if not scenes:
        raise DataError(f"{root} holds no map-free scene (no sub-folder with poses.txt)")
    return scenes


def read_info(root: Path | str) -> dict:
    """The converter's ``mapfree.json`` of a dataset folder, or {} for an official split."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from err


def load_depth(frame: MapfreeFrame, suffix: str) -> np.ndarray:
    """Depth image ``frame_XXXXX.<suffix>.png`` beside the frame, uint16 mm -> float metres
    (0 = no depth), e.g. suffix ``dptnyu`` / ``dptkitti`` for the challenge's estimated depth."""
    path = frame.path.with_name(frame.path.stem + f".{suffix}.png")
    if not path.is_file():
        raise DataError(f"depth image not found: {path}")
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2:
        raise DataError(f"{path}: not a single-channel depth PNG")
    return depth.astype(np.float64) / 1000.0
