"""Query side of the geometric backend on real images: working resolution, keypoint-size weights,
the shipped 'realtime' preset (settings, config file, node-rate default)."""

from __future__ import annotations

import ast
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import Intrinsics, so3_exp
from reloc_vggt_ros.localizer.geometric.config import PRESETS, FeatureConfig, QuerySettings
from reloc_vggt_ros.localizer.geometric.features import extract_features, fingerprint_fields
from reloc_vggt_ros.localizer.geometric.matching import fundamental_from_poses, match_descriptors, sampson_error_px
from reloc_vggt_ros.localizer.geometric.pnp import _camera_step_jacobian, keypoint_sigma_px
from reloc_vggt_ros.localizer.registry import make_config

ROOT = Path(__file__).parents[2]
DATA = ROOT / ".." / "shared" / "data"
TEMPLE = DATA / "middlebury-temple-ring"


def test_realtime_preset_is_what_the_node_and_node_rate_ship() -> None:
    cfg = PRESETS["realtime"]
    assert cfg.query.features == FeatureConfig(max_keypoints=1024, max_edge_px=640, max_upsample=1.1,
                                               contrast_threshold=0.04)
    assert cfg.query.scale_weighted and cfg.lk.enabled and cfg.query.match_threads == 2
    assert cfg.map == PRESETS["default"].map                  # same map as every other preset
    params = yaml.safe_load((ROOT / "config" / "reloc_vggt.yaml").read_text())
    node = next(iter(params.values()))["ros__parameters"]
    assert node["backend"] == "geometric"
    assert node["geometric"] == {"preset": "realtime"}
    tree = ast.parse((ROOT / "bench" / "node_rate.py").read_text())
    defaults = [ast.literal_eval(kw.value) for call in ast.walk(tree) if isinstance(call, ast.Call)
                for kw in call.keywords if kw.arg == "default" and isinstance(kw.value, (ast.Constant, ast.List))]
    assert ["geometric.preset:=realtime"] in defaults                # node_rate's default -p


def test_feature_options_are_validated_and_old_settings_keep_their_fingerprint() -> None:
    with pytest.raises(ConfigError, match="max_upsample"):
        FeatureConfig(max_upsample=3.0)
    with pytest.raises(ConfigError, match="octave_layers"):
        FeatureConfig(octave_layers=0)
    with pytest.raises(ConfigError, match="match_threads"):
        QuerySettings(match_threads=0)
    old = {k: v for k, v in asdict(FeatureConfig()).items() if k not in ("max_upsample", "octave_layers")}
    assert fingerprint_fields(FeatureConfig()) == old          # stored maps stay valid
    assert fingerprint_fields(FeatureConfig(max_upsample=1.25))["max_upsample"] == 1.25
    cfg = make_config("geometric", preset="realtime", query={"features": {"max_upsample": 1.5}},
                      map={"features": {"max_keypoints": 2048}})
    assert cfg.query.features.max_upsample == 1.5 and cfg.query.features.max_keypoints == 1024
    assert cfg.map.features.max_keypoints == 2048 and cfg.map.features.max_upsample == 2.0


def test_max_upsample_shrinks_small_inputs_only_and_keypoints_stay_on_input_pixels() -> None:
    """640x480: SIFT runs on 400x300 (first octave 800x600); a 1536x1024 image reduced to 640 px
    already has its first octave below 1.25x and is unaffected."""
    img = load_image(read_posed_folder(TEMPLE, "query")[0].path)
    assert img.shape[:2] == (480, 640)
    capped = extract_features(img, FeatureConfig(max_keypoints=1024, max_edge_px=640, max_upsample=1.25))
    small = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), (400, 300), interpolation=cv2.INTER_AREA)
    direct = extract_features(small, FeatureConfig(max_keypoints=1024, max_edge_px=640))
    assert (capped.width, capped.height) == (640, 480) and len(capped) == len(direct) > 300
    np.testing.assert_allclose(capped.keypoints_px, (direct.keypoints_px + 0.5) * 1.6 - 0.5, atol=1e-9)
    np.testing.assert_allclose(capped.scales_px, direct.scales_px * 1.6, rtol=1e-6)
    # same physical points as the full-resolution detector finds, without a sub-pixel shift
    full = extract_features(img, FeatureConfig(max_keypoints=4096, max_edge_px=640))
    pairs = match_descriptors(capped.descriptors, full.descriptors, ratio=0.7)
    assert len(pairs) > 150
    offset = capped.keypoints_px[pairs[:, 0]] - full.keypoints_px[pairs[:, 1]]
    assert np.all(np.abs(np.median(offset, axis=0)) < 0.1), np.median(offset, axis=0)
    fountain = load_image(DATA / "fountain-P11" / "images" / "0000.jpg")
    a = extract_features(fountain, FeatureConfig(max_keypoints=512, max_edge_px=640, max_upsample=1.25))
    b = extract_features(fountain, FeatureConfig(max_keypoints=512, max_edge_px=640))
    np.testing.assert_array_equal(a.keypoints_px, b.keypoints_px)


def test_keypoint_error_grows_with_keypoint_size_on_real_matches() -> None:
    """The premise of the size weights: under ground-truth poses, coarse keypoints' matches are
    off by more pixels than fine ones (temple, two neighbouring ring views; measured 0.08 px
    median below size 4, 0.57 px above size 10)."""
    recs = {r.name: r for r in read_posed_folder(TEMPLE)}
    names = sorted(recs)[:2]
    cfg = FeatureConfig(max_keypoints=2048, max_edge_px=640)
    fa, fb = (extract_features(load_image(recs[n].path), cfg) for n in names)
    pairs = match_descriptors(fa.descriptors, fb.descriptors, ratio=0.8)
    F = fundamental_from_poses(recs[names[0]].T_world_cam, recs[names[0]].intrinsics,
                               recs[names[1]].T_world_cam, recs[names[1]].intrinsics)
    err = sampson_error_px(F, fa.keypoints_px[pairs[:, 0]], fb.keypoints_px[pairs[:, 1]])
    size = np.maximum(fa.scales_px[pairs[:, 0]], fb.scales_px[pairs[:, 1]])
    ok = err < 4.0                                   # inliers, as PnP would keep them
    fine, coarse = ok & (size < 4.0), ok & (size > 10.0)
    assert fine.sum() > 100 and coarse.sum() > 20, (fine.sum(), coarse.sum())
    assert np.median(err[coarse]) > 3.0 * np.median(err[fine]), (np.median(err[fine]), np.median(err[coarse]))
    sigma = keypoint_sigma_px(np.array([2.0, 10.0, 0.1]))
    np.testing.assert_allclose(sigma, [0.14, 0.7, 0.05])


def test_camera_step_jacobian_matches_finite_differences() -> None:
    intr = Intrinsics(1520.0, 1525.0, 302.3, 246.9, 640, 480)
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.uniform(-0.1, 0.1, 20), rng.uniform(-0.1, 0.1, 20), rng.uniform(0.5, 0.8, 20)])
    J = _camera_step_jacobian(X, intr)
    eps = 1e-7
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        Xp = X @ so3_exp(d[3:]).T + d[:3]
        np.testing.assert_allclose(J[:, :, k], (intr.project(Xp) - intr.project(X)) / eps, rtol=1e-4, atol=1e-2)
    # a rig camera: the step is the base's (points in the base frame, camera at an extrinsic)
    T_cb = np.eye(4)
    T_cb[:3, :3], T_cb[:3, 3] = so3_exp(np.array([0.1, -0.3, 0.2])), np.array([0.2, -0.1, 0.05])
    Xb = (X - T_cb[:3, 3]) @ T_cb[:3, :3]                      # the same camera points, in the base frame
    J = _camera_step_jacobian(X, intr, T_cb)
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        Xp = (Xb @ so3_exp(d[3:]).T + d[:3]) @ T_cb[:3, :3].T + T_cb[:3, 3]
        np.testing.assert_allclose(J[:, :, k], (intr.project(Xp) - intr.project(X)) / eps, rtol=1e-4, atol=1e-2)


def test_weighted_refinement_keeps_the_pose_on_degenerate_input() -> None:
    """Four coincident points leave the pose unobservable: the RANSAC pose comes back unchanged."""
    from reloc_vggt_ros.geometry import make_T
    from reloc_vggt_ros.localizer.geometric.pnp import refine_weighted

    intr = Intrinsics(1520.0, 1525.0, 302.3, 246.9, 640, 480)
    T = make_T(so3_exp(np.array([0.01, 0.02, 0.03])), np.array([0.1, 0.0, -0.6]))
    x3d = np.zeros((4, 3))
    out = refine_weighted(T, np.full((4, 2), 300.0), x3d, np.ones(4), intr)
    np.testing.assert_array_equal(out, T)


def test_weighted_refinement_stopped_at_a_pixel_step_lands_where_full_convergence_does() -> None:
    """``rms_step_px`` (camera-rate tracking) ends the IRLS early; the pose it stops at is the converged
    one to far below the pixel noise (here: 300 points, 0.3 px noise, 10 % gross outliers)."""
    from reloc_vggt_ros.geometry import make_T, pose_error
    from reloc_vggt_ros.localizer.geometric.pnp import refine_weighted

    intr = Intrinsics(1000.0, 1000.0, 320.0, 240.0, 640, 480)
    rng = np.random.default_rng(5)
    T = make_T(so3_exp(np.array([0.05, -0.1, 0.02])), np.array([0.2, -0.1, -1.0]))
    Xc = np.column_stack([rng.uniform(-0.4, 0.4, 300), rng.uniform(-0.3, 0.3, 300), rng.uniform(0.8, 1.5, 300)])
    x3d = Xc @ T[:3, :3].T + T[:3, 3]
    x2d = intr.project(Xc) + rng.normal(0, 0.3, (300, 2))
    x2d[:30] += rng.normal(0, 20, (30, 2))
    sigma = np.full(300, 0.3)
    start = make_T(so3_exp(np.array([0.002, 0.001, -0.001])), np.array([0.002, 0.0, 0.001])) @ T
    full = refine_weighted(start, x2d, x3d, sigma, intr, iterations=50)
    early = refine_weighted(start, x2d, x3d, sigma, intr, iterations=50, rms_step_px=1e-3)
    t_full, _ = pose_error(full, T)
    t_gap, r_gap = pose_error(early, full)
    assert t_full < 1e-3                                   # the refinement itself works
    assert t_gap < 1e-2 * t_full and r_gap < 1e-4, (t_gap, t_full, r_gap)
