"""The weights-free map-free localizer on real fountain-P11 views (768x512): Track 1 with and
without depth, Track 2 with odometry, and the bad inputs it must refuse with a reason."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.localize import resized_image
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.geometry import apply_T, invert_T, pose_error, so3_exp
from reloc_vggt_ros.eval.mapfree_metrics import relative_pose_errors
from reloc_vggt_ros.localizer.base import RelocStatus
from reloc_vggt_ros.localizer.geometric.config import FeatureConfig, TriangulationConfig
from reloc_vggt_ros.localizer.geometric.features import extract_features
from reloc_vggt_ros.localizer.geometric.matching import fundamental_from_poses, match_descriptors, sampson_error_px
from reloc_vggt_ros.localizer.geometric.relative_pose import (UNBOUNDED_VARIANCE_M2, TwoViewSettings, guided_matches,
                                                              two_view)
from reloc_vggt_ros.localizer.geometric.triangulation import View, triangulate_keyframe
from reloc_vggt_ros.mapfree.base import SCALE_UNKNOWN, MapFreeLocalizer, QueryFrame, Reference, SecondView
from reloc_vggt_ros.mapfree.registry import make_mapfree_localizer

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "fountain-P11").is_dir(), reason="needs ../shared/data")
SIZE = (768, 512)
OPTIONS = {"features": {"max_edge_px": 0, "max_keypoints": 4096}}


@pytest.fixture(scope="module")
def views() -> dict[str, tuple[np.ndarray, object, np.ndarray]]:
    """name -> (image, intrinsics, T_world_cam) of fountain-P11 at 768x512."""
    out = {}
    for rec in read_posed_folder(DATA / "fountain-P11"):
        img, intr = resized_image(rec, SIZE)
        out[rec.name] = (img, intr, rec.T_world_cam)
    return out


def _reference(views: dict, name: str, depth: np.ndarray | None = None) -> Reference:
    img, intr, T = views[name]
    return Reference(img, intr, T, depth, name)


def _query(views: dict, name: str, T_world_odom: np.ndarray | None = None) -> QueryFrame:
    img, intr, T = views[name]
    return QueryFrame(img, intr, T_odom_cam=None if T_world_odom is None else invert_T(T_world_odom) @ T, name=name)


@pytest.fixture(scope="module")
def depth_0004(views: dict) -> np.ndarray:
    """Sparse depth (m) of 0004 triangulated from 0002 and 0003 (neither is a query below)."""
    feats = {n: extract_features(views[n][0], FeatureConfig()) for n in ("0002.jpg", "0003.jpg", "0004.jpg")}
    ref = View(feats["0004.jpg"], views["0004.jpg"][1], views["0004.jpg"][2])
    points, _ = triangulate_keyframe(ref, [View(feats[n], views[n][1], views[n][2]) for n in ("0002.jpg", "0003.jpg")],
                                     TriangulationConfig())
    ok = np.all(np.isfinite(points), axis=1)
    z = apply_T(invert_T(ref.T_world_cam), points[ok])[:, 2]
    xy = np.round(ref.features.keypoints_px[ok]).astype(int)
    depth = np.zeros((SIZE[1], SIZE[0]))
    depth[xy[:, 1], xy[:, 0]] = z
    assert np.count_nonzero(depth) > 300
    return depth


def test_track1_without_depth_gives_direction_only_and_says_so(views: dict) -> None:
    loc = make_mapfree_localizer("geometric", OPTIONS)
    assert isinstance(loc, MapFreeLocalizer)
    loc.set_reference(_reference(views, "0004.jpg"))
    res = loc.localize(_query(views, "0006.jpg"))
    T_gt = invert_T(views["0004.jpg"][2]) @ views["0006.jpg"][2]           # relative to the reference
    T_est = invert_T(views["0004.jpg"][2]) @ res.T_world_cam
    r_err, t_dir_err = relative_pose_errors(T_est, T_gt)
    assert r_err < 0.3 and t_dir_err < 2.0, (r_err, t_dir_err)
    assert res.diagnostics["scale"] == SCALE_UNKNOWN and res.status is RelocStatus.LOW_CONFIDENCE
    assert "scale" in res.reason and not res.ok
    assert np.linalg.norm(T_est[:3, 3]) == pytest.approx(1.0)              # unit baseline, not a guess
    w, v = np.linalg.eigh(res.covariance[:3, :3])                           # unbounded along the baseline
    baseline = res.T_world_cam[:3, 3] - views["0004.jpg"][2][:3, 3]
    assert w[-1] >= 0.9 * UNBOUNDED_VARIANCE_M2 and abs(v[:, -1] @ baseline) / np.linalg.norm(baseline) > 0.999
    assert w[-2] < 1.0


def test_track1_depth_gives_metric_pose(views: dict, depth_0004: np.ndarray) -> None:
    loc = make_mapfree_localizer("geometric", OPTIONS)
    loc.set_reference(_reference(views, "0004.jpg", depth_0004))
    res = loc.localize(_query(views, "0006.jpg"))
    t_err, r_err = pose_error(res.T_world_cam, views["0006.jpg"][2])
    assert res.ok and res.diagnostics["scale"] == "depth", res.reason
    assert t_err < 0.05 and r_err < 0.3, (t_err, r_err)                     # baseline 2.9 m
    # the scale really comes from the depth: twice the depth, twice the baseline
    loc.set_reference(_reference(views, "0004.jpg", 2.0 * depth_0004))
    far = loc.localize(_query(views, "0006.jpg"))
    assert pose_error(far.T_world_cam, views["0006.jpg"][2])[0] > 2.0


def test_track1_second_reference_view_gives_metric_pose(views: dict) -> None:
    """No depth, but a second posed view (0003, 1.75 m from the reference 0004): the reference's
    keypoints triangulated with it scale the answer (``stereo``); without it the scale is unknown
    (test above). A second view at the reference's position has no baseline and is refused."""
    loc = make_mapfree_localizer("geometric", OPTIONS)
    img, intr, T = views["0003.jpg"]
    loc.set_reference(replace(_reference(views, "0004.jpg"), second=SecondView(img, intr, T)))
    res = loc.localize(_query(views, "0006.jpg"))
    t_err, r_err = pose_error(res.T_world_cam, views["0006.jpg"][2])
    assert res.ok and res.diagnostics["scale"] == "stereo", res.reason
    assert t_err < 0.05 and r_err < 0.3, (t_err, r_err)
    with pytest.raises(DataError, match="no baseline"):
        loc.set_reference(replace(_reference(views, "0004.jpg"), second=SecondView(img, intr, views["0004.jpg"][2])))


@pytest.mark.slow
def test_track2_odometry_gives_metric_pose_for_every_frame(views: dict) -> None:
    """Exact odometry -> every frame metric and OK; no odometry -> single frames of unknown scale;
    odometry twice too long -> the pose is off by about the distance (the scale is not invented)."""
    loc = make_mapfree_localizer("geometric", OPTIONS)
    loc.set_reference(_reference(views, "0004.jpg"))
    names = ["0005.jpg", "0006.jpg", "0007.jpg"]
    T_world_odom = views["0007.jpg"][2]                  # the odometry frame: the last query camera
    frames = [_query(views, n, T_world_odom) for n in names]
    results = loc.localize_sequence(frames)
    assert [r.diagnostics["scale"] for r in results] == ["odometry"] * 3
    for n, r in zip(names, results):
        t_err, r_err = pose_error(r.T_world_cam, views[n][2])
        assert r.ok and t_err < 0.05 and r_err < 0.3, (n, t_err, r_err, r.reason)
    alone = loc.localize_sequence([_query(views, n) for n in names])
    assert all(r.diagnostics["scale"] == SCALE_UNKNOWN and not r.ok for r in alone)
    doubled = []
    for q in frames:
        T = q.T_odom_cam.copy()
        T[:3, 3] *= 2.0
        doubled.append(QueryFrame(q.image_bgr, q.intrinsics, T_odom_cam=T, name=q.name))
    res = loc.localize_sequence(doubled)[-1]
    assert pose_error(res.T_world_cam, views["0007.jpg"][2])[0] > 1.0


def _sequence(views: dict, names: list[str], bias_deg: float = 0.0, scale: float = 1.0) -> list[QueryFrame]:
    """Frames with exact odometry (the last frame's camera as its origin); all but the last with
    their odometry rotated by ``bias_deg`` about their own y axis, every translation x ``scale``."""
    B = np.eye(4)
    B[:3, :3] = so3_exp(np.radians([0.0, bias_deg, 0.0]))
    out = []
    for n in names:
        q = _query(views, n, views[names[-1]][2])
        T = q.T_odom_cam @ (B if n != names[-1] else np.eye(4))
        T[:3, 3] *= scale
        out.append(QueryFrame(q.image_bgr, q.intrinsics, T_odom_cam=T, name=n))
    return out


@pytest.mark.slow
def test_track2_refuses_odometry_that_contradicts_the_two_view_poses(views: dict) -> None:
    """Odometry rotations off by 5 degrees on the window's first two frames (a gyro bias): the
    registration absorbs it and lands 0.46 m / 5.7 deg off; each frame's own essential matrix
    says where the reference is and how it is turned, and two of the three frames disagree by
    more than 5 deg (5.8 deg direction, 5.6 deg rotation): LOW_CONFIDENCE. With the check off the
    same answer is OK."""
    names = ["0005.jpg", "0006.jpg", "0007.jpg"]
    for opts, ok in (({}, False), ({"max_two_view_gap_deg": 180.0}, True)):
        loc = make_mapfree_localizer("geometric", {**OPTIONS, **opts})
        loc.set_reference(_reference(views, "0004.jpg"))
        res = loc.localize_sequence(_sequence(views, names, bias_deg=5.0))[-1]
        t_err, r_err = pose_error(res.T_world_cam, views["0007.jpg"][2])
        assert t_err > 0.25 or r_err > 5.0, (t_err, r_err)                  # wrong either way
        assert res.ok is ok, (opts, res.reason)
        if not ok:
            assert res.status is RelocStatus.LOW_CONFIDENCE and "two-view" in res.reason


@pytest.mark.slow
def test_track2_fuses_depth_and_odometry_and_refuses_a_wrong_odometry_scale(views: dict, depth_0004: np.ndarray
                                                                              ) -> None:
    """Reference depth + exact odometry: both registrations agree, the fused answer is OK within
    5 cm. Odometry twice too long (a monocular tracker's scale): the two put the reference far
    apart and the answer is LOW_CONFIDENCE; with the check off the same answer is OK and wrong."""
    names = ["0005.jpg", "0006.jpg", "0007.jpg"]
    loc = make_mapfree_localizer("geometric", OPTIONS)
    loc.set_reference(_reference(views, "0004.jpg", depth_0004))
    res = loc.localize_sequence(_sequence(views, names))[-1]
    t_err, r_err = pose_error(res.T_world_cam, views["0007.jpg"][2])
    assert res.ok and res.diagnostics["scale"] == "odometry+depth", res.reason
    assert t_err < 0.05 and r_err < 0.3, (t_err, r_err)
    for opts, ok in (({}, False), ({"max_scale_disagreement": 1e9, "max_two_view_gap_deg": 180.0}, True)):
        loc = make_mapfree_localizer("geometric", {**OPTIONS, **opts})
        loc.set_reference(_reference(views, "0004.jpg", depth_0004))
        res = loc.localize_sequence(_sequence(views, names, scale=2.0))[-1]
        assert pose_error(res.T_world_cam, views["0007.jpg"][2])[0] > 0.25
        assert res.ok is ok, (opts, res.reason, res.diagnostics.get("odometry_depth_gap_rel"))
        if not ok:
            assert "scale" in res.reason, res.reason


def test_bad_reference_depth_is_refused_with_the_reason(views: dict, depth_0004: np.ndarray) -> None:
    loc = make_mapfree_localizer("geometric", OPTIONS)
    cases = {
        "is 384x256 but the reference image is 768x512": depth_0004[::2, ::2],
        "millimetres": depth_0004 * 1000.0,
        "no valid pixel": np.zeros_like(depth_0004),
        "negative": np.where(np.arange(depth_0004.size).reshape(depth_0004.shape) == 0, -1.0, depth_0004),
        "must have the image's size": np.dstack([depth_0004] * 3),
    }
    for text, depth in cases.items():
        with pytest.raises(DataError, match=text):
            loc.set_reference(_reference(views, "0004.jpg", depth))
    all_nan = np.full_like(depth_0004, np.nan)
    with pytest.raises(DataError, match="no valid pixel"):
        loc.set_reference(_reference(views, "0004.jpg", all_nan))


def test_bad_query_and_camera_mismatch(views: dict) -> None:
    loc = make_mapfree_localizer("geometric", OPTIONS)
    with pytest.raises(DataError, match="no reference set"):
        loc.localize(_query(views, "0006.jpg"))
    img, intr, T = views["0004.jpg"]
    with pytest.raises(DataError, match="intrinsics are for"):
        loc.set_reference(Reference(img[:256], intr, T))
    loc.set_reference(_reference(views, "0004.jpg"))
    # intrinsics of another image size: refused, not localized with a wrong camera
    bad = loc.localize(QueryFrame(views["0006.jpg"][0][:, :700].copy(), views["0006.jpg"][1]))
    assert bad.status is RelocStatus.INVALID_INPUT and "intrinsics are for" in bad.reason
    # a query from another camera (other resolution, its own intrinsics) is fine
    rec = next(r for r in read_posed_folder(DATA / "fountain-P11") if r.name == "0006.jpg")
    small, small_intr = resized_image(rec, (640, 427))
    other = loc.localize(QueryFrame(small, small_intr))
    T_est = invert_T(views["0004.jpg"][2]) @ other.T_world_cam
    T_gt = invert_T(views["0004.jpg"][2]) @ views["0006.jpg"][2]
    assert max(relative_pose_errors(T_est, T_gt)) < 2.0


def test_no_overlap_is_rejected_not_a_wild_pose(views: dict) -> None:
    rec = read_posed_folder(DATA / "middlebury-temple-ring")[0]
    img, intr = resized_image(rec, None)
    loc = make_mapfree_localizer("geometric", OPTIONS)
    loc.set_reference(_reference(views, "0004.jpg"))
    res = loc.localize(QueryFrame(img, intr))
    assert res.status is RelocStatus.NO_MATCH and res.T_world_cam is None
    assert "matches" in res.reason or "inliers" in res.reason


def test_guided_matching_finds_more_correct_matches_on_a_wide_baseline(views: dict) -> None:
    """0004 vs 0008 (49 degrees, 7.2 m apart): matches searched near the epipolar lines of the true
    pose pass the ratio test among far fewer candidates, so more true matches survive (294 -> 607
    within 2 px; the two-view stage's inliers 292 -> 568)."""
    cfg = FeatureConfig(max_keypoints=4096, max_edge_px=0)
    (img_a, k_a, T_a), (img_b, k_b, T_b) = views["0004.jpg"], views["0008.jpg"]
    fa, fb = extract_features(img_a, cfg), extract_features(img_b, cfg)
    F = fundamental_from_poses(T_a, k_a, T_b, k_b)
    plain = match_descriptors(fa.descriptors, fb.descriptors, 0.85)
    good_plain = int(np.sum(sampson_error_px(F, fa.keypoints_px[plain[:, 0]], fb.keypoints_px[plain[:, 1]]) < 2.0))
    guided = guided_matches(fa, fb, F, 4.0, 0.9)
    good_guided = int(np.sum(sampson_error_px(F, fa.keypoints_px[guided[:, 0]], fb.keypoints_px[guided[:, 1]]) < 2.0))
    assert good_guided > 1.3 * good_plain, (good_plain, good_guided)
    tv, _ = two_view(fa, k_a, fb, k_b, TwoViewSettings())
    assert tv is not None and tv.num_inliers >= tv.num_first_inliers
