"""Map-free submissions: one ``pose_<scene>.txt`` per scene, in a folder or a ZIP (flat).

Each line ``frame_path qw qx qy qz tx ty tz confidence``: world-to-camera with the world = the
reference camera (like poses.txt) and a non-negative confidence (higher = surer; it ranks the
frames for the AUCs). Records hold ``T_world_cam`` (package convention), converted here once.

Reading follows the benchmark: a line with the wrong number of fields, a '#' in the name, a
non-finite value or a zero quaternion is skipped with a warning (its frame then counts as
missing); a negative confidence rejects the file. Estimates are matched to ground truth by
frame number (``frame_00005.jpg`` -> 5), as the benchmark does.
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..geometry import invert_T, T_from_quat_t, T_to_quat_t
from .dataset import frame_number

__all__ = ["Estimate", "write_submission", "read_submission", "submission_file"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estimate:
    name: str
    T_world_cam: np.ndarray
    confidence: float


def submission_file(scene: str) -> str:
    return f"pose_{scene}.txt"


def _format(estimates: list[Estimate]) -> str:
    lines = []
    for e in estimates:
        if not (math.isfinite(e.confidence) and e.confidence >= 0):
            raise DataError(f"estimate for {e.name}: confidence must be finite and >= 0, got {e.confidence}")
        q, t = T_to_quat_t(invert_T(e.T_world_cam))
        lines.append(f"{e.name} " + " ".join(f"{v:.12g}" for v in (*q, *t)) + f" {e.confidence:.9g}\n")
    return "".join(lines)


def write_submission(out: Path | str, estimates: dict[str, list[Estimate]]) -> Path:
    """Write ``{scene: estimates}`` into folder ``out`` or, if it ends in .zip, a ZIP file
    (what the challenge's server takes)."""
    out = Path(out)
    if out.suffix == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for scene, est in estimates.items():
                zf.writestr(submission_file(scene), _format(est).encode("utf-8"))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for scene, est in estimates.items():
            (out / submission_file(scene)).write_text(_format(est), encoding="utf-8")
    return out


def _parse(text: str, where: str) -> dict[str, Estimate]:
    out: dict[str, Estimate] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        at = f"{where}:{lineno}"
        if len(parts) != 9:
            logger.warning("%s: expected 9 fields, got %d; line ignored", at, len(parts))
            continue
        if "#" in parts[0]:
            continue
        if frame_number(parts[0]) is None:
            logger.warning("%s: frame name %r does not end in a 5-digit number like "
                           "'seq1/frame_00000.jpg'; line ignored", at, parts[0])
            continue
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            logger.warning("%s: non-numeric field; line ignored", at)
            continue
        if not all(math.isfinite(v) for v in vals):
            logger.warning("%s: non-finite value; line ignored", at)
            continue
        if np.isclose(np.linalg.norm(vals[:4]), 0.0):
            logger.warning("%s: zero quaternion; line ignored", at)
            continue
        if vals[7] < 0:
            raise DataError(f"{at}: confidence {vals[7]} is negative (the benchmark rejects it)")
        T_world_cam = invert_T(T_from_quat_t(np.array(vals[:4]), vals[4:7]))
        out[parts[0]] = Estimate(parts[0], T_world_cam, vals[7])
    return out


def read_submission(path: Path | str) -> dict[str, dict[str, Estimate]]:
    """``{scene: {frame name: Estimate}}`` from a submission folder or ZIP."""
    path = Path(path)
    texts: dict[str, tuple[str, str]] = {}
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if name.startswith("pose_") and name.endswith(".txt") and "/" not in name:
                        texts[name[5:-4]] = (zf.read(name).decode("utf-8"), f"{path}!{name}")
        elif path.is_dir():
            for f in sorted(path.glob("pose_*.txt")):
                texts[f.name[5:-4]] = (f.read_text(encoding="utf-8"), str(f))
        else:
            raise DataError(f"submission not found (a folder or .zip of pose_<scene>.txt): {path}")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: submission files must be UTF-8 ({err})") from err
    return {scene: _parse(text, where) for scene, (text, where) in texts.items()}
