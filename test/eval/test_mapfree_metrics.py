"""eval.mapfree_metrics against hand-computed cases (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest
import transforms3d.quaternions as tq

from reloc_vggt_ros.eval.mapfree_metrics import (R_THRESHOLD_DEG, T_THRESHOLD_M, VCRE_THRESHOLD_PX,
                                                 FrameErrors, aggregate, frame_errors, pose_auc,
                                                 precision_recall, project_clipped,
                                                 relative_pose_errors, vcre_px, virtual_points)
from reloc_vggt_ros.geometry import Intrinsics, make_T, R_to_quat, so3_exp

# fx = fy = 100, principal point (500, 400) in a 1000 x 800 image: no virtual point clips
# (|x/z| <= 0.9/1.8 = 0.5 -> |u - cx| <= 50 px).
K_WIDE = Intrinsics(100.0, 100.0, 500.0, 400.0, 1000, 800)


def Rz(deg: float) -> np.ndarray:
    return so3_exp(np.array([0.0, 0.0, np.radians(deg)]))


def test_thresholds_are_the_benchmarks() -> None:
    assert (T_THRESHOLD_M, R_THRESHOLD_DEG, VCRE_THRESHOLD_PX) == (0.25, 5.0, 90.0)


def test_virtual_points_grid() -> None:
    P = virtual_points()
    # 7 (x) * 4 (y) * 7 (z) = 196 points, 0.3 m apart
    assert P.shape == (196, 3)
    assert sorted(set(np.round(P[:, 0], 9))) == pytest.approx([-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9])
    assert sorted(set(np.round(P[:, 1], 9))) == pytest.approx([-0.45, -0.15, 0.15, 0.45])
    assert sorted(set(np.round(P[:, 2], 9))) == pytest.approx([1.8, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6])
    assert P.mean(axis=0) == pytest.approx([0.0, 0.0, 2.7])


def test_project_clipped() -> None:
    K = Intrinsics(100.0, 100.0, 50.0, 40.0, 100, 80)
    X = np.array([[0.5, 0.2, 1.0],    # (100*0.5 + 50, 100*0.2 + 40) = (100, 60): on the border
                  [2.0, -1.0, 1.0],   # (250, -60) -> clamped to (100, 0)
                  [0.1, 0.0, -1.0]])  # behind: K X = (10 - 50, -40, -1) -> (40, 40), no cheirality test
    assert project_clipped(X, K) == pytest.approx(np.array([[100.0, 60.0], [100.0, 0.0], [40.0, 40.0]]))


def test_vcre_identity_translation_and_saturation() -> None:
    gt = make_T(Rz(30.0), [1.0, 2.0, 3.0])
    assert vcre_px(gt, gt, K_WIDE) == pytest.approx(0.0, abs=1e-9)
    # Estimate 0.1 m to the right of the truth (in the camera frame): every point at depth z moves
    # by f * 0.1 / z px. Mean over the 7 depths of 1/z:
    # (1/1.8 + 1/2.1 + 1/2.4 + 1/2.7 + 1/3.0 + 1/3.3 + 1/3.6) / 7
    # = (0.555556 + 0.476190 + 0.416667 + 0.370370 + 0.333333 + 0.303030 + 0.277778) / 7
    # = 2.732924 / 7 = 0.390418  ->  100 * 0.1 * 0.390418 = 3.90418 px
    est = gt @ make_T(np.eye(3), [0.1, 0.0, 0.0])
    assert vcre_px(est, gt, K_WIDE) == pytest.approx(3.90418, abs=1e-4)
    # Looking backwards: every point lands on a border; the error is bounded by the diagonal.
    flipped = gt @ make_T(so3_exp(np.array([0.0, np.pi, 0.0])), [0.0, 0.0, 0.0])
    assert 0 < vcre_px(flipped, gt, K_WIDE) <= np.hypot(1000, 800)


def test_frame_errors_rotation_translation() -> None:
    gt = make_T(np.eye(3), [1.0, 1.0, 1.0])
    # centre moved by (3, 4, 0): 5 m; rotated 90 deg about z: 90 deg.
    est = make_T(Rz(90.0), [4.0, 5.0, 1.0])
    fe = frame_errors(est, gt, K_WIDE, confidence=7.0)
    assert fe.trans_err == pytest.approx(5.0)
    assert fe.rot_err == pytest.approx(90.0)
    assert fe.confidence == 7.0
    # the benchmark's own formula, 2 asin(|vec(q_est q_gt^-1)|), gives the same angle
    q_est, q_gt = R_to_quat(Rz(90.0)), R_to_quat(np.eye(3))
    assert np.degrees(2 * np.arcsin(np.linalg.norm(tq.qmult(q_est, tq.qinverse(q_gt))[1:]))) == pytest.approx(90.0)


def test_precision_recall_auc_hand_case() -> None:
    # sorted by confidence: 0.9 (T), 0.8 (F), 0.8 (T), 0.3 (F); 1 failure -> 5 frames in all.
    # thresholds 0.9, 0.8, 0.3 keep 1, 3, 4 frames with 1, 2, 2 accepted:
    # precision 1, 2/3, 1/2 ; recall 1/5, 3/5, 4/5
    # AUC = 0.2 * 1 + 0.4 * 2/3 + 0.2 * 1/2 = 0.2 + 0.266667 + 0.1 = 0.566667
    prec, rec, auc = precision_recall([0.8, 0.9, 0.3, 0.8], [False, True, False, True], failures=1)
    assert prec == pytest.approx([1.0, 1.0, 2 / 3, 0.5])
    assert rec == pytest.approx([0.0, 0.2, 0.6, 0.8])
    assert auc == pytest.approx(0.566667, abs=1e-6)
    # order of tied frames does not matter
    assert precision_recall([0.8, 0.9, 0.3, 0.8], [True, True, False, False], 1)[2] == pytest.approx(auc)
    # all accepted, no failures: precision 1 everywhere, AUC 1
    assert precision_recall([3.0, 2.0, 1.0], [True] * 3, 0)[2] == pytest.approx(1.0)


def test_aggregate_hand_case() -> None:
    A = [FrameErrors(0.10, 2.0, 50.0, 0.9), FrameErrors(0.30, 1.0, 100.0, 0.5),
         FrameErrors(0.20, 6.0, 20.0, 0.7)]
    B = [FrameErrors(0.05, 0.5, 5.0, 0.2)]
    m = aggregate({"A": A, "B": B, "C": []}, failures=1)   # C: scene without estimates
    # per-scene medians averaged: t (0.2 + 0.05)/2, R (2 + 0.5)/2, VCRE (50 + 5)/2
    assert m["Average Median Translation Error"] == pytest.approx(0.125)
    assert m["Average Median Rotation Error"] == pytest.approx(1.25)
    assert m["Average Median Reprojection Error"] == pytest.approx(27.5)
    # 5 frames (4 estimates + 1 failure). pose accepted: (0.10, 2) and (0.05, 0.5) -> 2/5
    assert m["Precision @ Pose Error < (25cm, 5deg)"] == pytest.approx(0.4)
    # VCRE < 90: 50, 20, 5 -> 3/5
    assert m["Precision @ VCRE < 90px"] == pytest.approx(0.6)
    # pose by confidence: 0.9 T, 0.7 F, 0.5 F, 0.2 T -> precision 1, 1/2, 1/3, 2/4 at recall steps
    # of 1/5: AUC = 0.2 * (1 + 0.5 + 0.333333 + 0.5) = 0.466667
    assert m["AUC @ Pose Error < (25cm, 5deg)"] == pytest.approx(0.466667, abs=1e-6)
    # VCRE: 0.9 T, 0.7 T, 0.5 F, 0.2 T -> 1, 1, 2/3, 3/4 -> 0.2 * 3.416667 = 0.683333
    assert m["AUC @ VCRE < 90px"] == pytest.approx(0.683333, abs=1e-6)
    assert m["Estimates for % of frames"] == pytest.approx(0.8)
    # the thresholds are strict: exactly 25 cm is not accepted
    edge = aggregate({"A": [FrameErrors(0.25, 0.0, 90.0, 1.0)]}, failures=0)
    assert edge["Precision @ Pose Error < (25cm, 5deg)"] == 0.0
    assert edge["Precision @ VCRE < 90px"] == 0.0


def test_relative_pose_errors() -> None:
    # camera centres (1, 0, 0) vs (1, 1, 0), no rotation: motion t = -C -> (-1, 0, 0) vs
    # (-1, -1, 0): 45 deg; min(45, 135) = 45
    gt = make_T(np.eye(3), [1.0, 0.0, 0.0])
    assert relative_pose_errors(make_T(np.eye(3), [1.0, 1.0, 0.0]), gt) == pytest.approx((0.0, 45.0))
    # opposite direction (t = (2, 0, 0), 180 deg) folds to 0: the essential matrix has no sign
    assert relative_pose_errors(make_T(np.eye(3), [-2.0, 0.0, 0.0]), gt) == pytest.approx((0.0, 0.0))
    # rotated 10 deg about the axis through both centres (0, 0, 1): t = -R^T C = (0, 0, -1) for
    # both -> rotation error 10, direction error 0
    gz = make_T(np.eye(3), [0.0, 0.0, 1.0])
    r, t = relative_pose_errors(make_T(Rz(10.0), [0.0, 0.0, 1.0]), gz)
    assert (r, t) == pytest.approx((10.0, 0.0), abs=1e-6)
    assert relative_pose_errors(make_T(np.eye(3), [0.0, 0.0, 0.0]), gt)[1] == np.inf
    assert relative_pose_errors(None, gt) == (np.inf, np.inf)


def test_pose_auc_hand_case() -> None:
    # sorted errors with the origin: 0, 1, 3, 8, inf ; recall 0, .25, .5, .75, 1
    # @5: x = 0, 1, 3, 5 ; y = 0, .25, .5, .5 -> .125 + .75 + 1.0 = 1.875 -> / 5 = 0.375
    # @10: x = 0, 1, 3, 8, 10 ; y = 0, .25, .5, .75, .75 -> .125 + .75 + 3.125 + 1.5 = 5.5 -> 0.55
    # @20: x = 0, 1, 3, 8, 20 ; y as @10 -> .125 + .75 + 3.125 + 12 * .75 = 13 -> 0.65
    auc = pose_auc([8.0, 1.0, np.nan, 3.0])           # NaN counts as a failure (inf)
    assert auc == pytest.approx({5.0: 0.375, 10.0: 0.55, 20.0: 0.65})
    assert pose_auc([0.0, 0.0]) == pytest.approx({5.0: 1.0, 10.0: 1.0, 20.0: 1.0})
    assert pose_auc([np.inf]) == pytest.approx({5.0: 0.0, 10.0: 0.0, 20.0: 0.0})
