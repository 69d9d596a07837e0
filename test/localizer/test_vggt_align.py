"""vggt_align: Sim(3)+RANSAC alignment of predicted cameras recovers real query poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError, ModelLoadError
from reloc_vggt_ros.geometry import invert_sim3, make_sim3, make_T, pose_error, so3_exp
from reloc_vggt_ros.localizer.vggt.vggt_align import (VGGTAlignConfig, align_cameras, apply_alignment,
                                                 scene_extent)
from reloc_vggt_ros.localizer.vggt.common import require_weights

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def _scene(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    db = read_posed_folder(DATA / name, "db", check_images=False)
    queries = read_posed_folder(DATA / name, "query", check_images=False)
    return np.stack([r.T_world_cam for r in db]), [r.T_world_cam for r in queries]


def _predict(S_pred_world: np.ndarray, T_world_cam: np.ndarray, rng: np.random.Generator,
             noise_t: float, noise_deg: float) -> np.ndarray:
    """What a good network would output: the true camera in its own similarity frame, plus noise."""
    s = np.cbrt(np.linalg.det(S_pred_world[:3, :3]))
    R_S = S_pred_world[:3, :3] / s
    R = so3_exp(np.radians(noise_deg) * rng.normal(size=3)) @ R_S @ T_world_cam[:3, :3]
    c = S_pred_world[:3, :3] @ T_world_cam[:3, 3] + S_pred_world[:3, 3] + noise_t * rng.normal(size=3)
    return make_T(R, c)


@pytest.mark.parametrize("scene", ["fountain-P11", "middlebury-temple-ring"])
def test_recovers_query_pose_despite_an_outlier(scene: str) -> None:
    rng = np.random.default_rng(3)
    T_db, queries = _scene(scene)
    T_db = T_db[:8]
    extent = scene_extent(T_db)
    # the network's frame: anchor-centred, arbitrary rotation, scale 1/extent (VGGT-like)
    S_world_pred = make_sim3(extent * 1.7, so3_exp(np.array([0.3, -1.1, 0.4])), np.array([2.0, -1.0, 0.5]))
    S_pred_world = invert_sim3(S_world_pred)
    s_pred = 1 / (extent * 1.7)
    T_pred = np.stack([_predict(S_pred_world, T, rng, 0.01 * extent * s_pred, 0.3) for T in T_db])
    T_pred[2] = make_T(so3_exp(np.array([2.0, 0.5, -1.0])) @ T_pred[2][:3, :3], T_pred[2][:3, 3] + 3.0)  # outlier

    align = align_cameras(T_db, T_pred, threshold=0.1 * extent, rng=np.random.default_rng(0))
    assert not align.inliers[2]
    assert align.inliers.sum() == len(T_db) - 1
    assert abs(align.scale / (extent * 1.7) - 1) < 0.02

    for T_gt in queries[:3]:
        T_pred_q = _predict(S_pred_world, T_gt, rng, 0.01 * extent * s_pred, 0.3)
        t_err, r_err = pose_error(apply_alignment(align.S_world_pred, T_pred_q), T_gt)
        assert t_err < 0.05 * extent, (t_err, extent)
        assert r_err < 1.5

    # without outlier rejection the same data gives a visibly worse query pose
    naive = align_cameras(T_db, T_pred, threshold=1e9, max_rot_deg=1e9)
    T_pred_q = _predict(S_pred_world, queries[0], np.random.default_rng(9), 0.0, 0.0)
    assert pose_error(apply_alignment(naive.S_world_pred, T_pred_q), queries[0])[0] > 0.1 * extent


def test_collinear_keyframes_still_align() -> None:
    """Cameras on a straight line (a robot driving): orientations fix the rotation about the line."""
    rng = np.random.default_rng(1)
    T_db, queries = _scene("fountain-P11")
    line = np.array([1.0, 0.2, 0.0]) / np.linalg.norm([1.0, 0.2, 0.0])
    T_kf = np.stack([make_T(T[:3, :3], line * 0.5 * i) for i, T in enumerate(T_db[:5])])
    S_pred_world = make_sim3(0.4, so3_exp(np.array([0.0, 0.8, 0.2])), np.zeros(3))
    T_pred = np.stack([_predict(S_pred_world, T, rng, 0.0, 0.0) for T in T_kf])
    align = align_cameras(T_kf, T_pred, threshold=0.05)
    T_q = make_T(queries[0][:3, :3], line * 0.7 + np.array([0.0, 0.3, 0.0]))
    t_err, r_err = pose_error(apply_alignment(align.S_world_pred, _predict(S_pred_world, T_q, rng, 0.0, 0.0)), T_q)
    assert t_err < 1e-6 and r_err < 1e-4


def test_needs_two_cameras() -> None:
    T_db, _ = _scene("Herz-Jesus-P8")
    with pytest.raises(ValueError, match=">= 2"):
        align_cameras(T_db[:1], T_db[:1], threshold=0.1)


def test_missing_weights_name_the_backend_and_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"vggt_align needs weights: file .*nope.pt not found"):
        require_weights(tmp_path / "nope.pt", "vggt_align")
    with pytest.raises(ModelLoadError, match="reloc_vggt needs weights"):
        require_weights("", "reloc_vggt")


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="multiples of 14"):
        VGGTAlignConfig(image_hw=(100, 518))
    with pytest.raises(ConfigError, match="num_keyframes"):
        VGGTAlignConfig(num_keyframes=1)
