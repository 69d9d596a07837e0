"""Pieces of the geometric backend on real images: features, matching, triangulation, VLAD, PnP covariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import invert_T, make_T, se3_exp
from reloc_vggt_ros.localizer.geometric.config import FeatureConfig, TriangulationConfig
from reloc_vggt_ros.localizer.geometric.features import extract_features
from reloc_vggt_ros.localizer.geometric.vocabulary import train_vocabulary, vlad
from reloc_vggt_ros.localizer.geometric.matching import fundamental_from_poses, match_descriptors, sampson_error_px
from reloc_vggt_ros.localizer.geometric.pnp import pose_covariance, reprojection_jacobian, solve_pnp
from reloc_vggt_ros.localizer.geometric.triangulation import (Observations, View, backproject_depth,
                                                    select_neighbours, triangulate_keyframe,
                                                    triangulate_observations)

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FOUNTAIN = DATA / "fountain-P11"
TEMPLE = DATA / "middlebury-temple-ring"
SMALL = FeatureConfig(max_keypoints=2048, max_edge_px=768)


@pytest.fixture(scope="module")
def fountain() -> dict:
    recs = {r.name: r for r in read_posed_folder(FOUNTAIN)}
    feats = {n: extract_features(load_image(recs[n].path), SMALL) for n in ("0000.jpg", "0002.jpg", "0003.jpg")}
    return {"recs": recs, "feats": feats}


def test_feature_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_keypoints must be >= 16"):
        FeatureConfig(max_keypoints=3)
    with pytest.raises(ConfigError, match="max_edge_px"):
        FeatureConfig(max_edge_px=10)


def test_working_resolution_keypoints_land_on_full_resolution_pixels() -> None:
    """Keypoints found on a 2/3-size copy map back to the native ones without a sub-pixel shift.

    1536x1024 -> 1024x683 is not an exact ratio in y; one shared factor would shift y by ~0.2 px.
    """
    img = load_image(FOUNTAIN / "images" / "0000.jpg")
    native = extract_features(img, FeatureConfig(max_keypoints=2048, max_edge_px=0))
    work = extract_features(img, FeatureConfig(max_keypoints=2048, max_edge_px=1024))
    assert (work.width, work.height) == (1536, 1024)
    pairs = match_descriptors(native.descriptors, work.descriptors, ratio=0.7)
    assert len(pairs) > 500
    offset = work.keypoints_px[pairs[:, 1]] - native.keypoints_px[pairs[:, 0]]
    assert np.all(np.abs(np.median(offset, axis=0)) < 0.05), np.median(offset, axis=0)
    assert len(native) <= 2048 and native.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(native.descriptors, axis=1), 1.0, atol=1e-4)


def test_matches_agree_with_ground_truth_epipolar_geometry(fountain: dict) -> None:
    recs, feats = fountain["recs"], fountain["feats"]
    a, b = feats["0000.jpg"], feats["0002.jpg"]
    pairs = match_descriptors(a.descriptors, b.descriptors, ratio=0.8)
    assert len(pairs) > 300
    F = fundamental_from_poses(recs["0000.jpg"].T_world_cam, recs["0000.jpg"].intrinsics,
                               recs["0002.jpg"].T_world_cam, recs["0002.jpg"].intrinsics)
    err = sampson_error_px(F, a.keypoints_px[pairs[:, 0]], b.keypoints_px[pairs[:, 1]])
    assert np.mean(err < 2.0) > 0.85
    assert np.median(err) < 0.5
    # the mutual check only removes matches; shuffled descriptors match (almost) nothing
    assert len(match_descriptors(a.descriptors, b.descriptors, 0.8, mutual=False)) >= len(pairs)
    rng = np.random.default_rng(0)
    assert len(match_descriptors(a.descriptors, b.descriptors[rng.permutation(len(b))][:, rng.permutation(128)],
                                 0.8)) < 0.05 * len(pairs)


def test_triangulated_points_reproject_into_an_unused_view(fountain: dict) -> None:
    """Points from views 0000+0002 only, projected into 0003 with its GT pose, hit its keypoints."""
    recs, feats = fountain["recs"], fountain["feats"]
    view = {n: View(feats[n], recs[n].intrinsics, recs[n].T_world_cam) for n in feats}
    points, track = triangulate_keyframe(view["0000.jpg"], [view["0002.jpg"]], TriangulationConfig())
    ok = np.isfinite(points[:, 0])
    assert ok.sum() > 200 and np.all(track[ok] == 2) and np.all(track[~ok] == 0)
    pairs = match_descriptors(feats["0000.jpg"].descriptors[ok], feats["0003.jpg"].descriptors)
    X = points[ok][pairs[:, 0]]
    T_cam_world = invert_T(recs["0003.jpg"].T_world_cam)
    uv = recs["0003.jpg"].intrinsics.project(X @ T_cam_world[:3, :3].T + T_cam_world[:3, 3])
    err = np.linalg.norm(uv - feats["0003.jpg"].keypoints_px[pairs[:, 1]], axis=1)
    assert len(err) > 100
    assert np.median(err) < 1.0, np.median(err)


def test_a_keyframe_matched_in_no_neighbour_gets_no_points(fountain: dict) -> None:
    """No keypoint seen in two views (what a textureless live keyframe gives): no points, no crash."""
    recs, feats = fountain["recs"], fountain["feats"]
    view = {n: View(feats[n], recs[n].intrinsics, recs[n].T_world_cam) for n in feats}
    ref, nb = view["0000.jpg"], view["0002.jpg"]
    n = len(ref.features)
    obs = Observations(np.zeros((n, 2, 2)), np.eye(2, dtype=bool)[[0] * n], np.full(1, np.nan), np.zeros(1, np.int64))
    points, track = triangulate_observations(ref, [nb], obs, TriangulationConfig())
    assert np.isnan(points).all() and not track.any()


def test_neighbours_skip_opposite_views_and_duplicates() -> None:
    recs = read_posed_folder(TEMPLE, "db")
    T = np.stack([r.T_world_cam for r in recs])
    names = [r.name for r in recs]
    nbs = select_neighbours(0, T, TriangulationConfig(max_neighbours=8, max_view_angle_deg=60))
    assert names.index("templeR0030.jpg") not in nbs      # same pose as templeR0001: no baseline
    axes = T[:, :3, 2]
    within = [j for j in range(len(T)) if j != 0 and axes[j] @ axes[0] >= np.cos(np.radians(60))]
    assert 4 <= len(nbs) <= 8 and set(nbs) <= set(within)


def test_depth_backprojection_round_trip(fountain: dict) -> None:
    rec, f = fountain["recs"]["0000.jpg"], fountain["feats"]["0000.jpg"]
    depth = np.full((rec.intrinsics.height // 2, rec.intrinsics.width // 2), 7.5, np.float32)
    depth[:, :10] = 0.0                                    # unknown depth -> no point
    X = backproject_depth(f, rec.intrinsics, rec.T_world_cam, depth)
    valid = np.isfinite(X[:, 0])
    assert valid.sum() > 0.9 * len(f)
    T_cam_world = invert_T(rec.T_world_cam)
    Xc = X[valid] @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    np.testing.assert_allclose(Xc[:, 2], 7.5, rtol=1e-9)
    np.testing.assert_allclose(rec.intrinsics.project(Xc), f.keypoints_px[valid], atol=1e-6)


def test_vlad_retrieves_nearby_views_on_temple_ring() -> None:
    """Top-1 VLAD neighbour of each temple query is among its 4 nearest db cameras."""
    db, queries = read_posed_folder(TEMPLE, "db"), read_posed_folder(TEMPLE, "query")[::4]
    cfg = FeatureConfig(max_keypoints=512, max_edge_px=480)
    db_desc = [extract_features(load_image(r.path), cfg).descriptors for r in db]
    words = train_vocabulary(db_desc, 32)
    V = np.stack([vlad(d, words) for d in db_desc])
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-5)
    C = np.stack([r.T_world_cam[:3, 3] for r in db])
    hits = 0
    for q in queries:
        top = int(np.argmax(V @ vlad(extract_features(load_image(q.path), cfg).descriptors, words)))
        nearest = np.argsort(np.linalg.norm(C - q.T_world_cam[:3, 3], axis=1))[:4]
        hits += top in nearest
    assert hits >= len(queries) - 1, f"{hits}/{len(queries)}"


def test_covariance_jacobian_matches_finite_differences(fountain: dict) -> None:
    rec = fountain["recs"]["0000.jpg"]
    rng = np.random.default_rng(1)
    T_cam_world = invert_T(rec.T_world_cam)
    Xc = np.column_stack([rng.uniform(-3, 3, 50), rng.uniform(-2, 2, 50), rng.uniform(5, 15, 50)])
    X = (Xc - T_cam_world[:3, 3]) @ T_cam_world[:3, :3]      # world points in front of the camera
    J = reprojection_jacobian(rec.T_world_cam, X, rec.intrinsics)

    def pixels(T_world_cam: np.ndarray) -> np.ndarray:
        Tcw = invert_T(T_world_cam)
        return rec.intrinsics.project(X @ Tcw[:3, :3].T + Tcw[:3, 3]).reshape(-1)

    eps = 1e-6
    for k in range(6):
        xi = np.zeros(6)
        xi[k] = eps
        P = se3_exp(xi)        # (rho, phi): centre + rho, rotation exp(phi) on the left
        T_plus = make_T(P[:3, :3] @ rec.T_world_cam[:3, :3], rec.T_world_cam[:3, 3] + xi[:3])
        numeric = (pixels(T_plus) - pixels(rec.T_world_cam)) / eps
        np.testing.assert_allclose(J[:, k], numeric, rtol=1e-4, atol=1e-3)


def test_pnp_on_real_matches_and_covariance_is_symmetric_pd(fountain: dict) -> None:
    """2D-3D from triangulated 0000+0002 points matched in 0003: GT pose within 2 cm / 0.2 deg."""
    recs, feats = fountain["recs"], fountain["feats"]
    view = {n: View(feats[n], recs[n].intrinsics, recs[n].T_world_cam) for n in feats}
    points, _ = triangulate_keyframe(view["0000.jpg"], [view["0002.jpg"]], TriangulationConfig())
    ok = np.flatnonzero(np.isfinite(points[:, 0]))
    pairs = match_descriptors(feats["0003.jpg"].descriptors, feats["0000.jpg"].descriptors[ok])
    x2d, x3d = feats["0003.jpg"].keypoints_px[pairs[:, 0]], points[ok[pairs[:, 1]]]
    gt = recs["0003.jpg"]
    pnp = solve_pnp(x2d, x3d, gt.intrinsics, max_reproj_px=4.0)
    assert pnp is not None and pnp.inliers.sum() > 100
    dT = invert_T(gt.T_world_cam) @ pnp.T_world_cam
    assert np.linalg.norm(pnp.T_world_cam[:3, 3] - gt.T_world_cam[:3, 3]) < 0.02
    assert np.degrees(np.arccos(np.clip((np.trace(dT[:3, :3]) - 1) / 2, -1, 1))) < 0.2
    cov, sigma = pose_covariance(pnp.T_world_cam, x2d[pnp.inliers], x3d[pnp.inliers], gt.intrinsics)
    assert np.all(np.isfinite(cov)) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert 0.05 < sigma < 3.0
