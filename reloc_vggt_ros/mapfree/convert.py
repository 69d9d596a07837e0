"""Map-free test scenes from a posed-image folder (``../shared/data/<scene>``).

Every (reference, query) pair of the folder falls in a bucket of relative viewing angle
(geodesic angle between the two cameras' rotations); per bucket the reference with the most
queries in it makes one scene. Track 1: those queries, one evaluated frame each. Track 2: each
query preceded by the ``window - 1`` images before it in capture (name) order, with device poses
relative to the query (exact here: taken from the ground truth). The buckets, angles and
baselines go to ``mapfree.json`` beside the scenes, which also states the evaluated frames.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import read_posed_folder
from ..data.posed_folder import PosedImage
from ..errors import DataError
from ..geometry import invert_T, pose_error
from .dataset import INFO_FILE, REFERENCE, frame_name, read_info, write_intrinsics, write_pose_file

__all__ = ["DEFAULT_ANGLE_EDGES_DEG", "convert_posed_folder"]

logger = logging.getLogger(__name__)

DEFAULT_ANGLE_EDGES_DEG = (0.0, 10.0, 20.0, 40.0, 180.0)


def _rel(T_world_a: np.ndarray, T_world_b: np.ndarray) -> np.ndarray:
    return invert_T(T_world_a) @ T_world_b


def _bucket_of(angle: float, edges: Sequence[float]) -> int | None:
    for k in range(len(edges) - 1):
        if edges[k] <= angle < edges[k + 1] or (k == len(edges) - 2 and angle == edges[-1]):
            return k
    return None


def _write_scene(root: Path, ref: PosedImage, frames: list[PosedImage],
                 device: list[tuple[str, np.ndarray]] | None) -> list[str]:
    if root.exists():
        shutil.rmtree(root)
    (root / "seq0").mkdir(parents=True)
    (root / "seq1").mkdir()
    shutil.copyfile(ref.path, root / REFERENCE)
    names = [frame_name(1, i) for i in range(len(frames))]
    for name, f in zip(names, frames):
        shutil.copyfile(f.path, root / name)
    write_intrinsics(root / "intrinsics.txt",
                     [(REFERENCE, ref.intrinsics)] + [(n, f.intrinsics) for n, f in zip(names, frames)])
    write_pose_file(root / "poses.txt", [(REFERENCE, np.eye(4))] +
                    [(n, _rel(ref.T_world_cam, f.T_world_cam)) for n, f in zip(names, frames)])
    if device is not None:
        write_pose_file(root / "poses_device.txt", device)
    return names


def _update_info(out: Path, track: int, offset: int, step: int, edges: Sequence[float],
                 source: str, scenes: dict[str, dict]) -> None:
    info = read_info(out)
    if info and (info.get("eval_offset"), info.get("eval_step")) != (offset, step):
        raise DataError(f"{out / INFO_FILE} evaluates frames {info.get('eval_offset')}::{info.get('eval_step')}, "
                        f"this conversion {offset}::{step}; use another --out")
    kept = {k: v for k, v in info.get("scenes", {}).items() if v.get("source") != source}
    kept.update(scenes)
    info = {"track": track, "eval_offset": offset, "eval_step": step,
            "angle_edges_deg": list(edges), "scenes": dict(sorted(kept.items()))}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def convert_posed_folder(src: Path | str, out: Path | str,
                         angle_edges_deg: Sequence[float] = DEFAULT_ANGLE_EDGES_DEG,
                         window: int = 3) -> dict[str, list[str]]:
    """Write ``out/track1/<src>_b<k>`` and ``out/track2/<src>_b<k>`` scenes; returns the scene
    names per track. Re-running replaces this source's scenes and keeps other sources'."""
    src, out = Path(src), Path(out)
    edges = [float(e) for e in angle_edges_deg]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise DataError(f"angle bucket edges must increase from >= 0, got {edges}")
    if window < 2:
        raise DataError(f"Track 2 window must hold the query and at least one frame before it, got {window}")
    if (src / "distortion.txt").is_file():
        raise DataError(f"{src / 'distortion.txt'}: map-free scenes are undistorted pinhole images; "
                        "undistort the folder first")
    images = read_posed_folder(src)            # sorted by name = capture order
    if len(images) < 2:
        raise DataError(f"{src}: need at least 2 posed images, found {len(images)}")
    n = len(images)
    angle = np.zeros((n, n))
    base = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            base[i, j], angle[i, j] = pose_error(images[j].T_world_cam, images[i].T_world_cam)
    for track in ("track1", "track2"):          # drop this source's scenes of an earlier run
        for old, meta in read_info(out / track).get("scenes", {}).items():
            if meta.get("source") == src.name and (out / track / old).is_dir():
                shutil.rmtree(out / track / old)
    made: dict[str, list[str]] = {"track1": [], "track2": []}
    info1: dict[str, dict] = {}
    info2: dict[str, dict] = {}
    for k in range(len(edges) - 1):
        members = [[j for j in range(n) if j != i and _bucket_of(angle[i, j], edges) == k] for i in range(n)]
        r = max(range(n), key=lambda i: (len(members[i]), -i))
        qs = members[r]
        if not qs:
            logger.info("%s: no pair in angle bucket [%g, %g) deg", src.name, edges[k], edges[k + 1])
            continue
        name = f"{src.name}_b{k}"
        meta = {"source": src.name, "bucket": k, "angle_range_deg": [edges[k], edges[k + 1]],
                "reference": images[r].name}

        def query_meta(frame: str, j: int) -> dict:
            return {"name": frame, "source": images[j].name, "angle_deg": float(angle[r, j]),
                    "baseline": float(base[r, j])}

        names = _write_scene(out / "track1" / name, images[r], [images[j] for j in qs], None)
        info1[name] = {**meta, "queries": [query_meta(f, j) for f, j in zip(names, qs)]}
        made["track1"].append(name)
        others = [j for j in range(n) if j != r]      # the sequence never shows the reference
        frames: list[PosedImage] = []
        device: list[tuple[str, np.ndarray]] = []
        evaluated = []
        for j in qs:
            pos = others.index(j)
            if pos < window - 1:
                continue
            win = others[pos - window + 1:pos + 1]
            start = len(frames)
            frames += [images[w] for w in win]
            device += [(frame_name(1, start + i), _rel(images[j].T_world_cam, images[w].T_world_cam))
                       for i, w in enumerate(win)]
            evaluated.append((frame_name(1, start + window - 1), j))
        if not evaluated:
            logger.info("%s: bucket %d has no query with %d frames before it", src.name, k, window - 1)
            continue
        _write_scene(out / "track2" / name, images[r], frames, device)
        info2[name] = {**meta, "window": window, "queries": [query_meta(f, j) for f, j in evaluated]}
        made["track2"].append(name)
    if not made["track1"]:
        raise DataError(f"{src}: no image pair falls in any angle bucket {edges}")
    _update_info(out / "track1", 1, 0, 1, edges, src.name, info1)
    if made["track2"] or (out / "track2" / INFO_FILE).is_file():
        (out / "track2").mkdir(parents=True, exist_ok=True)
        _update_info(out / "track2", 2, window - 1, window, edges, src.name, info2)
    return made
