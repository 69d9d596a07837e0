"""Map-free relocalization metrics, as Niantic's benchmark (``nianticlabs/map-free-reloc``,
``benchmark/``) defines them, plus the ScanNet-1500 relative-pose AUC (SuperGlue / LoFTR).

Poses are camera-to-world ``T_world_cam`` with the world = the reference camera (the map-free
ground truth puts the reference at identity). Formulas and thresholds: docs/mapfree.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..geometry import Intrinsics, invert_T, pose_error, rotation_error_deg

__all__ = [
    "T_THRESHOLD_M", "R_THRESHOLD_DEG", "VCRE_THRESHOLD_PX", "SCANNET_AUC_THRESHOLDS_DEG",
    "virtual_points", "project_clipped", "vcre_px", "FrameErrors", "frame_errors",
    "precision_recall", "aggregate", "relative_pose_errors", "pose_auc",
]

T_THRESHOLD_M = 0.25        # benchmark/config.py: t_threshold
R_THRESHOLD_DEG = 5.0       # benchmark/config.py: R_threshold
VCRE_THRESHOLD_PX = 90.0    # benchmark/config.py: vcre_threshold
SCANNET_AUC_THRESHOLDS_DEG = (5.0, 10.0, 20.0)


def virtual_points() -> np.ndarray:
    """The 196 virtual points [196, 3] in the ground-truth query camera frame (metres).

    A 7 x 4 x 7 grid with 0.3 m spacing, centred on the optical axis in x (-0.9..0.9) and
    y (-0.45..0.45), from z = 1.8 to 3.6 m in front of the camera (an AR object's extent).
    """
    step = 0.3
    x = (np.arange(7) - 3.0) * step
    y = (np.arange(4) - 1.5) * step
    z = 1.8 + np.arange(7) * step
    xx, yy, zz = np.meshgrid(x, y, z)  # same ordering as the benchmark (irrelevant to the mean)
    return np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)


_VIRTUAL = virtual_points()


def project_clipped(X_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Pinhole projection [N, 2] clamped to [0, W] x [0, H], exactly as the benchmark does.

    No cheirality test: a point behind the camera divides by its negative depth and is then
    clamped, so a wildly wrong pose saturates at the image border instead of growing unbounded.
    """
    uvw = np.asarray(X_cam, float) @ intr.K.T
    uv = uvw[:, :2] / uvw[:, 2:3]
    uv[:, 0] = np.clip(uv[:, 0], 0.0, intr.width)
    uv[:, 1] = np.clip(uv[:, 1], 0.0, intr.height)
    return uv


def vcre_px(T_world_cam_est: np.ndarray, T_world_cam_gt: np.ndarray, intr: Intrinsics) -> float:
    """Virtual correspondence reprojection error: mean pixel distance between the virtual points
    projected with the true pose and the same world points projected with the estimate."""
    T_est_gt = invert_T(T_world_cam_est) @ T_world_cam_gt       # gt camera -> est camera
    X_est = _VIRTUAL @ T_est_gt[:3, :3].T + T_est_gt[:3, 3]
    err = np.linalg.norm(project_clipped(_VIRTUAL, intr) - project_clipped(X_est, intr), axis=1)
    return float(err.mean())


@dataclass(frozen=True)
class FrameErrors:
    """The benchmark's per-frame metrics (``MetricManager``)."""

    trans_err: float      # camera-centre distance, metres
    rot_err: float        # geodesic rotation angle, degrees
    reproj_err: float     # VCRE, pixels
    confidence: float


def frame_errors(T_world_cam_est: np.ndarray, T_world_cam_gt: np.ndarray, intr: Intrinsics,
                 confidence: float) -> FrameErrors:
    t_err, r_err = pose_error(T_world_cam_est, T_world_cam_gt)
    return FrameErrors(t_err, r_err, vcre_px(T_world_cam_est, T_world_cam_gt, intr), float(confidence))


def precision_recall(confidence: Sequence[float], tp: Sequence[bool],
                     failures: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Confidence-ranked precision/recall curve and its area, as ``benchmark/utils.py``.

    Frames sorted by decreasing confidence; at each distinct confidence threshold c,
    precision = (# accepted with conf >= c) / (# with conf >= c) and
    recall = (# with conf >= c) / (N + failures). AUC = sum_k (r_k - r_{k-1}) p_k with r_0 = 0,
    so missing frames (failures) cap the reachable recall below 1.
    Returns (precision, recall) from recall 0 upwards (first point (1, 0)) and the AUC.
    """
    conf = np.asarray(confidence, float).reshape(-1)
    tp_arr = np.asarray(tp, bool).reshape(-1)
    if conf.shape != tp_arr.shape:
        raise ValueError(f"{conf.size} confidences but {tp_arr.size} accept flags")
    if conf.size == 0:
        return np.array([1.0]), np.array([0.0]), 0.0
    order = np.argsort(-conf, kind="stable")
    conf, tp_arr = conf[order], tp_arr[order]
    last_of_value = np.r_[np.nonzero(np.diff(conf))[0], conf.size - 1]
    count = last_of_value + 1.0
    prec = np.cumsum(tp_arr)[last_of_value] / count
    rec = count / (conf.size + failures)
    auc = float(np.sum(np.diff(np.r_[0.0, rec]) * prec))
    return np.r_[1.0, prec], np.r_[0.0, rec], auc


def aggregate(per_scene: Mapping[str, Iterable[FrameErrors]], failures: int,
              t_threshold_m: float = T_THRESHOLD_M, r_threshold_deg: float = R_THRESHOLD_DEG,
              vcre_threshold_px: float = VCRE_THRESHOLD_PX) -> dict[str, float]:
    """The benchmark's summary (``aggregate_results``), keys as it prints them.

    Medians are taken per scene (scenes without estimates contribute none) and averaged over
    scenes; precisions and AUCs pool every frame, each missing frame counting as a failure.
    Accepted: t < 25 cm and R < 5 deg (strict), VCRE < 90 px.
    """
    scenes = {s: list(v) for s, v in per_scene.items()}
    frames = [f for v in scenes.values() for f in v]
    total = len(frames) + failures
    if total == 0:
        raise ValueError("no ground-truth frames to evaluate")
    t = np.array([f.trans_err for f in frames])
    r = np.array([f.rot_err for f in frames])
    e = np.array([f.reproj_err for f in frames])
    conf = np.array([f.confidence for f in frames])
    ok_pose = (t < t_threshold_m) & (r < r_threshold_deg)
    ok_vcre = e < vcre_threshold_px

    def avg_median(attr: str) -> float:
        meds = [np.median([getattr(f, attr) for f in v]) for v in scenes.values() if v]
        return float(np.mean(meds)) if meds else float("nan")

    pose_tag = f"({t_threshold_m * 100:g}cm, {r_threshold_deg:g}deg)"
    return {
        "Average Median Translation Error": avg_median("trans_err"),
        "Average Median Rotation Error": avg_median("rot_err"),
        "Average Median Reprojection Error": avg_median("reproj_err"),
        f"Precision @ Pose Error < {pose_tag}": float(ok_pose.sum() / total),
        f"AUC @ Pose Error < {pose_tag}": precision_recall(conf, ok_pose, failures)[2],
        f"Precision @ VCRE < {vcre_threshold_px:g}px": float(ok_vcre.sum() / total),
        f"AUC @ VCRE < {vcre_threshold_px:g}px": precision_recall(conf, ok_vcre, failures)[2],
        "Estimates for % of frames": float(len(frames) / total),
    }


def relative_pose_errors(T_world_cam_est: np.ndarray | None,
                         T_world_cam_gt: np.ndarray) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees of a relative pose, as in
    SuperGlue's ``compute_pose_error`` (ScanNet-1500).

    The translation compared is that of the motion ``T_cam_world`` (what an essential matrix
    gives, up to scale and sign): the angle between directions, folded to min(a, 180 - a).
    A missing estimate or a zero-length translation gives ``inf`` (a failure).
    """
    if T_world_cam_est is None:
        return float("inf"), float("inf")
    T_est, T_gt = invert_T(T_world_cam_est), invert_T(T_world_cam_gt)
    r_err = rotation_error_deg(T_est[:3, :3], T_gt[:3, :3])
    n = np.linalg.norm(T_est[:3, 3]) * np.linalg.norm(T_gt[:3, 3])
    if not np.isfinite(n) or n == 0.0:
        return r_err, float("inf")
    a = float(np.degrees(np.arccos(np.clip(T_est[:3, 3] @ T_gt[:3, 3] / n, -1.0, 1.0))))
    return r_err, min(a, 180.0 - a)


def pose_auc(errors: Sequence[float],
             thresholds: Sequence[float] = SCANNET_AUC_THRESHOLDS_DEG) -> dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, divided by it (SuperGlue).

    ``errors`` are per-pair max(rotation error, translation-direction error); NaN counts as inf.
    The recall curve is the empirical CDF starting at (0, 0), integrated with the trapezoid
    rule up to the threshold.
    """
    err = np.sort(np.nan_to_num(np.asarray(errors, float), nan=np.inf))
    if err.size == 0:
        raise ValueError("no pose errors to integrate")
    err = np.r_[0.0, err]
    recall = np.arange(err.size) / (err.size - 1.0)
    out = {}
    for thr in thresholds:
        last = int(np.searchsorted(err, thr))
        x = np.r_[err[:last], thr]
        y = np.r_[recall[:last], recall[last - 1]]
        out[float(thr)] = float(np.trapezoid(y, x) / thr)
    return out
