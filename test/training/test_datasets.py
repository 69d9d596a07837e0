"""Tuple items on real posed folders: deterministic, and targets that decode to the true poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reloc_vggt_ros.errors import ConfigError, DataError
from reloc_vggt_ros.geometry import invert_T, pose_error, quat_xyzw_to_wxyz, T_from_quat_t
from reloc_vggt_ros.model.pose_encoding import extri_intri_to_pose_encoding
from reloc_vggt_ros.training.datasets import TupleDataset, TupleDatasetConfig, collate_tuples
from reloc_vggt_ros.training.sampler import SamplerConfig

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def _ds(**kw) -> TupleDataset:
    cfg = TupleDatasetConfig(image_hw=(56, 70), sampler=SamplerConfig(num_frames=4, min_overlap=0.2), **kw)
    return TupleDataset([DATA / "fountain-P11", DATA / "Herz-Jesus-P8"], cfg, seed=3)


def test_items_are_deterministic_and_shaped() -> None:
    ds = _ds()
    a, b, c = ds[5], ds[5], ds[6]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["images"], c["images"])
    assert a["images"].shape == (4, 3, 56, 70) and a["images"].dtype == np.float32
    assert 0 <= a["images"].min() and a["images"].max() <= 1
    batch = collate_tuples([ds[i] for i in range(3)])
    assert batch["pose_enc"].shape == (3, 4, 9) and batch["scale"].shape == (3,)


def test_targets_decode_to_ground_truth_relative_poses() -> None:
    ds = _ds()
    for i in range(6):
        item = ds[i]
        T = item["T_world_cam"]
        enc, scale = item["pose_enc"].astype(np.float64), float(item["scale"])
        # scale = mean distance of the db frames (1..S-2) from the anchor
        assert scale == pytest.approx(np.mean(np.linalg.norm(T[1:-1, :3, 3] - T[0, :3, 3], axis=1)), rel=1e-5)
        for s in range(4):
            T_cam_anchor = T_from_quat_t(quat_xyzw_to_wxyz(enc[s, 3:7]), enc[s, :3] * scale)
            T_true = invert_T(T[s]) @ T[0]
            dt, dr = pose_error(invert_T(T_cam_anchor), invert_T(T_true))
            assert dt < 1e-4 * max(1.0, scale) and dr < 1e-3
        # FoV of every frame = FoV of its augmented intrinsics (what VGGT's encoding stores)
        K = item["intrinsics"].astype(np.float64)
        enc_k = extri_intri_to_pose_encoding(torch.zeros(4, 3, 4), torch.from_numpy(K), (56, 70)).numpy()
        np.testing.assert_allclose(enc[:, 7:], enc_k[:, 7:], atol=1e-5)


def test_no_augmentation_is_a_plain_centre_crop() -> None:
    from reloc_vggt_ros.training.augment import AugmentConfig

    item = _ds(augment=AugmentConfig(enabled=False))[0]
    K = item["intrinsics"][0]
    assert (K[0, 2], K[1, 2]) == pytest.approx((34.5, 27.5))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        TupleDatasetConfig(split="train")
    with pytest.raises(DataError, match="no training folders"):
        TupleDataset([], TupleDatasetConfig())
    with pytest.raises(DataError, match="poses.txt"):
        TupleDataset([tmp_path], TupleDatasetConfig())
