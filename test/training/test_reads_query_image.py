"""The query's predicted pose is learned from the query *image*, and ``evaluate`` can tell.

One fixed ``[anchor, db, db]`` set from a rendered room and eight different queries: the known
poses are identical in every tuple, so the only way to fit the eight targets is to read the query
image. 150 steps fit them, the swapped-query control of :func:`evaluate` (each query
image replaced by another tuple's) stays at the spread of the targets, and the fitted poses decode
back through the localizer's encoding. This is the overfit check of the issue-8 investigation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reloc_vggt_ros.data.posed_folder import load_image, read_posed_folder
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig
from reloc_vggt_ros.training.datasets import collate_tuples, tuple_targets
from reloc_vggt_ros.training.losses import LossConfig, pose_loss
from reloc_vggt_ros.training.loop import evaluate
from reloc_vggt_ros.training.sampler import CovisibilityIndex, SamplerConfig
from reloc_vggt_ros.training.synthetic import SyntheticConfig, generate_scene, write_scene_folder

HW = (56, 70)


def _fixed_known_tuples(folder: Path, n_queries: int) -> dict[str, torch.Tensor]:
    frames = read_posed_folder(folder)
    index = CovisibilityIndex([f.T_world_cam for f in frames], [f.intrinsics for f in frames],
                              SamplerConfig(num_frames=4, nominal_depth=2.5))
    order = [int(j) for j in np.argsort(-index.overlap[0]) if j != 0]
    known, queries = [0, *order[:2]], order[2:2 + n_queries]
    items = []
    for q in queries:
        recs = [frames[j] for j in (*known, q)]
        imgs = [cv2.cvtColor(load_image(r.path), cv2.COLOR_BGR2RGB) for r in recs]
        enc, scale = tuple_targets([r.T_world_cam for r in recs], [r.intrinsics for r in recs])
        items.append({"images": np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
                      "pose_enc": enc.astype(np.float32), "scale": np.float32(scale)})
    return collate_tuples(items)


@pytest.mark.slow   # ~22 s of CPU: 150 optimisation steps
def test_fixed_known_poses_eight_queries_are_fitted_from_the_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    scene_cfg = SyntheticConfig(image_hw=HW, num_views=14, yaw_spread_deg=30, pitch_deg=(-8, 8), roll_deg=3,
                                camera_region=0.2, fov_deg=(60, 60))
    folder = write_scene_folder(generate_scene(11, scene_cfg), tmp_path / "room")
    batch = _fixed_known_tuples(folder, 8)
    cfg = RelocVGGTConfig.tiny(mask="sparse", depth=2)
    cfg = dataclasses.replace(cfg, vggt=dataclasses.replace(cfg.vggt, conv_pos_embed="sincos", init_values=1.0))
    model = RelocVGGT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    before = evaluate(model, [batch], torch.device("cpu"))
    for _ in range(150):
        out = model(batch["images"], batch["pose_enc"][:, :-1])
        loss, _ = pose_loss(out["pose_enc_list"], batch["pose_enc"], LossConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(model, [batch], torch.device("cpu"))
    spread = after["baseline_rot_deg"]                 # the queries differ by this much from the anchor
    assert spread > 8.0
    assert after["median_rot_deg"] < 0.3 * spread < before["median_rot_deg"]
    assert after["median_t_norm"] < 0.3 * after["baseline_t_norm"]
    # Same known poses, another query's image: the fitted answer is now wrong by about the spread.
    assert after["shuffled_rot_deg"] > 3 * after["median_rot_deg"]
    assert after["shuffled_t_norm"] > 3 * after["median_t_norm"]


@pytest.mark.parametrize("mask", ["dense", "sparse", "cached"])
def test_query_pose_is_a_function_of_the_query_and_anchor_pixels(mask: str, tmp_path: Path) -> None:
    """Wiring: under every mask, in train and eval mode, the query's output has a gradient with
    respect to the query's pixels and (through global attention) the anchor's."""
    torch.manual_seed(0)
    scene_cfg = SyntheticConfig(image_hw=HW, num_views=6, camera_region=0.2, fov_deg=(60, 60))
    batch = _fixed_known_tuples(write_scene_folder(generate_scene(5, scene_cfg), tmp_path / "room"), 2)
    model = RelocVGGT(RelocVGGTConfig.tiny(mask=mask, depth=2))
    for train in (True, False):
        model.train(train)
        images = batch["images"].clone().requires_grad_(True)
        out = model(images, batch["pose_enc"][:, :-1])["pose_enc"]
        grad = torch.autograd.grad(out[:, -1, :7].sum(), images)[0].abs().mean(dim=(0, 2, 3, 4))
        assert grad[-1] > 1e-3 and grad[0] > 1e-4, (mask, train, grad)
