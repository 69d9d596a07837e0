"""Score a submission against a map-free dataset folder the way the challenge's server does.

Which query frames count: Track 1 every 5th line of a scene's poses.txt (queries only,
from the first), Track 2 every 10th from the 10th (the query after its 9-frame window); a
converted dataset's ``mapfree.json`` states its own (``eval_offset``, ``eval_step``).
A missing frame is one failure; a scene without a ``pose_<scene>.txt`` counts all its query
frames as failures, before subsampling, as ``benchmark/mapfree.py`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..eval.mapfree_metrics import (SCANNET_AUC_THRESHOLDS_DEG, FrameErrors, aggregate,
                                    frame_errors, pose_auc, relative_pose_errors)
from .dataset import MapfreeFrame, MapfreeScene, frame_number, read_dataset, read_info
from .submission import read_submission

__all__ = ["TRACK_FRAMES", "evaluated_frames", "evaluate", "EvalResult"]

logger = logging.getLogger(__name__)

TRACK_FRAMES = {1: (0, 5), 2: (9, 10)}   # (offset, step) over the query lines of poses.txt


def evaluated_frames(scene: MapfreeScene, offset: int, step: int) -> list[MapfreeFrame]:
    return list(scene.queries[offset::step])


@dataclass
class EvalResult:
    summary: dict[str, float]
    scannet_auc: dict[float, float]
    per_scene: dict[str, dict]
    failures: int
    offset: int
    step: int

    def to_json(self) -> dict:
        return {"summary": self.summary,
                "scannet_pose_auc": {f"auc@{t:g}deg": v for t, v in self.scannet_auc.items()},
                "failures": self.failures, "eval_offset": self.offset, "eval_step": self.step,
                "scenes": self.per_scene}


def evaluate(dataset: Path | str, submission: Path | str, track: int = 1,
             offset: int | None = None, step: int | None = None) -> EvalResult:
    """Score ``submission`` (folder or ZIP) on every scene of ``dataset``."""
    info = read_info(dataset)
    if track not in TRACK_FRAMES:
        raise DataError(f"unknown track {track}; expected 1 or 2")
    default = (info.get("eval_offset"), info.get("eval_step")) if "eval_step" in info else TRACK_FRAMES[track]
    offset = default[0] if offset is None else offset
    step = default[1] if step is None else step
    if step < 1 or offset < 0:
        raise DataError(f"eval offset {offset} / step {step}: need offset >= 0 and step >= 1")
    scenes = read_dataset(dataset, check_images=False)
    est = read_submission(submission)
    extra = sorted(set(est) - {s.name for s in scenes})
    if extra:
        logger.warning("submission has %d scene(s) outside %s: %s", len(extra), dataset, extra[:5])
    per_scene_errors: dict[str, list[FrameErrors]] = {}
    per_scene: dict[str, dict] = {}
    pair_errors: list[float] = []
    failures = 0
    for scene in scenes:
        frames = evaluated_frames(scene, offset, step)
        hidden = [f.name for f in frames if f.T_world_cam is None]
        if hidden:
            raise DataError(f"{scene.root}/poses.txt hides the ground truth of {hidden[0]} "
                            "(test split); evaluate on a split with poses")
        if scene.name not in est:
            logger.warning("submission has no %s: all %d query frames count as failures",
                           f"pose_{scene.name}.txt", len(scene.queries))
            failures += len(scene.queries)
            pair_errors += [np.inf] * len(frames)
            per_scene[scene.name] = {"frames": len(frames), "estimates": 0, "missing_scene": True}
            continue
        by_number = {frame_number(n): e for n, e in est[scene.name].items()}
        errs: list[FrameErrors] = []
        missing = 0
        for f in frames:
            e = by_number.get(frame_number(f.name))
            if e is None:
                missing += 1
                pair_errors.append(np.inf)
                continue
            errs.append(frame_errors(e.T_world_cam, f.T_world_cam, f.intrinsics, e.confidence))
            pair_errors.append(max(relative_pose_errors(e.T_world_cam, f.T_world_cam)))
        failures += missing
        per_scene_errors[scene.name] = errs
        per_scene[scene.name] = {
            "frames": len(frames), "estimates": len(errs),
            "median_trans_err_m": float(np.median([x.trans_err for x in errs])) if errs else None,
            "median_rot_err_deg": float(np.median([x.rot_err for x in errs])) if errs else None,
            "median_vcre_px": float(np.median([x.reproj_err for x in errs])) if errs else None,
        }
    if not any(per_scene_errors.values()):
        raise DataError(f"submission {submission} has no valid estimate for any evaluated frame of {dataset}")
    return EvalResult(aggregate(per_scene_errors, failures),
                      pose_auc(pair_errors, SCANNET_AUC_THRESHOLDS_DEG) if pair_errors else {},
                      per_scene, failures, offset, step)
