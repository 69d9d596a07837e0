"""The ``pairwise`` (late-fusion) backend: its fusion maths on exact rays, and real queries of
fountain-P11 through the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.localize import resized_image
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.geometry import Intrinsics, make_T, pose_error, so3_exp
from reloc_vggt_ros.geometry.multiview import chordal_mean_rotation, intersect_lines
from reloc_vggt_ros.localizer.base import RelocStatus
from reloc_vggt_ros.localizer.geometric.relative_pose import RelativeObservation
from reloc_vggt_ros.localizer.pairwise import PairwiseConfig
from reloc_vggt_ros.localizer.pairwise.fusion import fuse
from reloc_vggt_ros.localizer.pairwise.judge import confidence, judge
from reloc_vggt_ros.localizer.registry import backend_names, make_localizer
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db

FOUNTAIN = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"
TEMPLE = FOUNTAIN.parent / "middlebury-temple-ring"
R_TRUE = so3_exp(np.array([0.1, -0.4, 0.05]))
C_TRUE = np.array([1.0, 2.0, 3.0])
_K = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)


def _obs(kf_id: int, centre: np.ndarray, R: np.ndarray = R_TRUE, towards: np.ndarray = C_TRUE,
         n: int = 100) -> RelativeObservation:
    d = towards - centre
    empty = np.zeros((0, 3))
    return RelativeObservation(kf_id, R, np.asarray(centre, float), d / np.linalg.norm(d), n, empty, empty,
                               np.zeros((0, 2)), np.zeros((0, 2)), _K, make_T(np.eye(3), centre))


CENTRES = [np.array([0.0, 0.0, 0.0]), np.array([3.0, 0.0, 1.0]), np.array([0.0, 4.0, 0.0]), np.array([2.0, 2.0, -1.0])]


def test_geometry_helpers() -> None:
    Rs = np.stack([so3_exp(np.array([0.0, 0.0, a])) for a in (-0.1, 0.0, 0.1)])
    assert np.allclose(chordal_mean_rotation(Rs), np.eye(3), atol=1e-12)
    X, A, res = intersect_lines(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([[1.0, 1, 0], [0.0, 1, 0]]))
    assert np.allclose(X, [1.0, 1.0, 0.0]) and np.allclose(res, 0.0) and np.linalg.matrix_rank(A) == 3


def test_exact_rays_give_the_exact_pose() -> None:
    fused, reason = fuse([_obs(i, c) for i, c in enumerate(CENTRES)], PairwiseConfig())
    assert fused is not None, reason
    assert np.allclose(fused.T_world_cam[:3, 3], C_TRUE, atol=1e-9)
    assert np.allclose(fused.T_world_cam[:3, :3], R_TRUE, atol=1e-12)
    assert fused.used == [0, 1, 2, 3] and np.all(np.linalg.eigvalsh(fused.covariance) > 0)


def test_outlier_pairs_are_dropped() -> None:
    """One pair with a 20-degree rotation error and one with a ray 1.5 m off: both out, pose exact.
    (With the gates wide open the same pairs pull the pose off by decimetres.)"""
    obs = [_obs(i, c) for i, c in enumerate(CENTRES)]
    obs.append(_obs(7, np.array([-2.0, 0.0, 0.0]), R=so3_exp(np.array([0.35, 0.0, 0.0])) @ R_TRUE))
    obs.append(_obs(8, np.array([0.0, -3.0, 2.0]), towards=C_TRUE + np.array([1.5, 0.0, 0.0])))
    fused, _ = fuse(obs, PairwiseConfig())
    assert fused is not None and sorted(fused.diagnostics["pairs_dropped"]) == [7, 8]
    assert np.allclose(fused.T_world_cam[:3, 3], C_TRUE, atol=1e-9)
    loose, _ = fuse(obs, PairwiseConfig(max_rotation_deviation_deg=180.0, max_ray_angle_deg=180.0))
    assert np.linalg.norm(loose.T_world_cam[:3, 3] - C_TRUE) > 0.1
    assert np.degrees(np.arccos((np.trace(loose.T_world_cam[:3, :3].T @ R_TRUE) - 1) / 2)) > 1.0


def test_one_pair_or_parallel_rays_are_not_ok() -> None:
    cfg = PairwiseConfig()
    fused, reason = fuse([_obs(0, CENTRES[0])], cfg)
    assert fused is None and "min_pairs" in reason
    d = C_TRUE / np.linalg.norm(C_TRUE)          # two keyframes 5 m away, 0.1 m apart: rays 1.1 deg apart
    side = np.cross(d, [0.0, 0.0, 1.0])
    fused, _ = fuse([_obs(0, C_TRUE - 5 * d), _obs(1, C_TRUE - 5 * d + 0.1 * side / np.linalg.norm(side))], cfg)
    assert fused is not None and fused.span_deg < 2.0
    status, why = judge(fused, confidence(fused, cfg), cfg)
    assert status is RelocStatus.LOW_CONFIDENCE and "span" in why


@pytest.mark.skipif(not FOUNTAIN.is_dir(), reason="needs ../shared/data")
def test_pairwise_backend_localizes_real_queries(store) -> None:  # noqa: ANN001 - conftest fixture
    assert "pairwise" in backend_names()
    loc = make_localizer("pairwise", store, top_k=4)
    queries = read_posed_folder(FOUNTAIN, "query")[:2]
    for rec in queries:
        img, intr = resized_image(rec, (320, 213))
        res = loc.localize(img, intr)
        t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
        assert res.ok, res.reason
        assert t_err < 0.15 and r_err < 0.5, (rec.name, t_err, r_err)    # keyframes ~1.7 m apart
        assert res.diagnostics["method"] == "pairwise" and len(res.diagnostics["pairs_used"]) >= 2
    bad = loc.localize(np.zeros((10, 10, 3), np.uint8), intr)
    assert bad.status is RelocStatus.INVALID_INPUT


@pytest.mark.slow
@pytest.mark.skipif(not TEMPLE.is_dir(), reason="needs ../shared/data")
def test_refinement_pins_down_nearly_collinear_rays_on_the_temple_ring(tmp_path: Path) -> None:
    """On the ring the keyframes on both sides of a query see it along nearly opposite rays (span
    ~172 deg), weak along them: the rays alone put these three queries 4-8 mm off (> 5 % of the
    7.5 cm keyframe spacing) and still OK; refined on all inlier matches every one is within it."""
    db = build_keyframe_db(TEMPLE, tmp_path / "temple.db", split="db")
    queries = {r.name: r for r in read_posed_folder(TEMPLE, "query")}
    with KeyframeStore.open(db, readonly=True) as store:
        for refine, within in ((False, 0), (True, 3)):
            loc = make_localizer("pairwise", store, refine=refine)
            good = 0
            for name in ("templeR0008.jpg", "templeR0011.jpg", "templeR0020.jpg"):
                rec = queries[name]
                res = loc.localize(*resized_image(rec, None))
                t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
                assert res.ok, (name, res.reason)
                good += t_err < 0.05 * 0.0752 and r_err < 1.0
            assert good == within, (refine, good)
