"""The aggregator's extension points (used by Reloc-VGGT) keep VGGT's numbers when unused and
do exactly what they promise when used; input validation; pose-encoding <-> T_world_cam."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from reloc_vggt_ros.geometry import Intrinsics, R_to_quat, invert_T, quat_wxyz_to_xyzw, se3_exp
from reloc_vggt_ros.model.config import PRESETS
from reloc_vggt_ros.model.pose_encoding import (pose_encoding_to_extri_intri,
                                                pose_encoding_to_T_world_cam,
                                                T_world_cam_to_pose_encoding)
from reloc_vggt_ros.model.vggt import VGGT

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "vggt"
pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden data not found at {GOLDEN}")


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "tiny_golden.safetensors"))


@pytest.fixture(scope="module")
def model(golden: dict[str, torch.Tensor]) -> VGGT:
    m = VGGT(dataclasses.replace(PRESETS["tiny_conv"], enable_track=False)).eval()
    m.load_state_dict({k[3:]: v for k, v in golden.items()
                       if k.startswith("sd.") and not k.startswith("sd.track_head.")})
    return m


def _matches_golden(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    """Within the golden data's strict bound (5e-6 normalised): bit-equality with a file made on
    another CPU would test the kernels' summation order, not the model."""
    return ((ours - ref).abs().max() / ref.abs().max()).item() <= 5e-6


@pytest.fixture(autouse=True)
def _no_grad_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


def test_layer_loop_equals_forward(model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    images = golden["s3.in.images"]
    ref, _ = model.aggregator(images)
    agg = model.aggregator
    tokens, pos = agg.embed(images)
    for i in range(agg.depth):
        frame_out, tokens = agg.run_layer(i, tokens, pos)
        assert torch.equal(torch.cat([frame_out, tokens], -1), ref[i])
    assert _matches_golden(ref[23], golden["s3.out.agg.23"])


def test_global_attn_fn_sees_frame_major_qkv(model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    images = golden["b2s2.in.images"]  # B=2, S=2, P=26
    calls = []

    def dense(layer, q, k, v, S, P):
        calls.append((layer, tuple(q.shape), S, P))
        return F.scaled_dot_product_attention(q, k, v)

    out, _ = model.aggregator(images, global_attn_fn=dense)
    assert [c[0] for c in calls] == list(range(24))
    assert all(c[1:] == ((2, 2, 2 * 26, 16), 2, 26) for c in calls)
    assert all(_matches_golden(o, golden[f"b2s2.out.agg.{i}"]) for i, o in enumerate(out))


def test_block_diagonal_global_mask_decouples_frames_and_frames_arg_picks_slots(
        model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    images = golden["s3.in.images"]

    def per_frame_only(layer, q, k, v, S, P):
        frame_id = torch.arange(S).repeat_interleave(P)
        mask = frame_id[:, None] == frame_id[None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    masked, _ = model.aggregator(images, global_attn_fn=per_frame_only)
    dense, _ = model.aggregator(images)
    assert not torch.allclose(masked[23], dense[23], atol=1e-3)
    for s in range(3):  # each frame alone, told its sequence index, gives the same tokens
        alone, _ = model.aggregator(images[:, s:s + 1], frames=[s])
        err = (alone[23][:, 0] - masked[23][:, s]).abs().max() / masked[23].abs().max()
        assert err < 1e-5, (s, err)
    wrong_slot, _ = model.aggregator(images[:, 1:2], frames=[0])
    assert not torch.allclose(wrong_slot[23][:, 0], masked[23][:, 1], atol=1e-3)


def test_camera_tokens_replace_the_learned_camera_token(model: VGGT,
                                                        golden: dict[str, torch.Tensor]) -> None:
    images = golden["s3.in.images"]
    agg = model.aggregator
    learned = torch.cat([agg.camera_token[:, :1], agg.camera_token[:, 1:].expand(1, 2, 1, 32)],
                        dim=1)
    same, _ = agg(images, camera_tokens=learned)
    assert _matches_golden(same[23], golden["s3.out.agg.23"])
    other = learned.clone()
    # change only the last frame's (query) token; not by a constant, which LayerNorm removes
    other[:, 2] += torch.randn(32, generator=torch.Generator().manual_seed(0))
    changed, _ = agg(images, camera_tokens=other)
    assert (changed[23] - same[23]).abs().amax(dim=(0, 2, 3)).min() > 1e-4  # flows to all frames
    with pytest.raises(ValueError, match="camera_tokens must be"):
        agg(images, camera_tokens=learned[:, :2])


def test_camera_head_runs_on_given_tokens(model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    tokens = [golden[f"s3.out.agg.{i}"] for i in range(24)]
    pose_list = model.camera_head(tokens)
    assert len(pose_list) == 4
    ref = golden["s3.out.pose_enc"]
    err = (pose_list[-1] - ref).abs().max() / ref.abs().max()
    assert err < 5e-6


@pytest.mark.parametrize(("shape", "match"), [
    ((1, 2, 4, 56, 70), "3 \\(RGB\\) channels"),
    ((1, 2, 3, 57, 70), "not divisible by the patch size 14"),
    ((3, 56, 70), r"must be \[B, S, 3, H, W\]"),
])
def test_bad_images_raise_value_error(model: VGGT, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model(torch.rand(shape))


def test_frames_length_must_match(model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="frames has 2 entries for 3 frames"):
        model.aggregator(golden["s3.in.images"], frames=[0, 1])


def test_four_d_input_gets_a_batch_axis(model: VGGT, golden: dict[str, torch.Tensor]) -> None:
    out = model(golden["s3.in.images"][0])
    assert out["pose_enc"].shape == (1, 3, 9) and out["depth"].shape == (1, 3, 56, 70, 1)
    assert out["world_points"].shape == (1, 3, 56, 70, 3) and out["images"].ndim == 5
    assert "track" not in out


def test_pose_encoding_matches_package_conventions() -> None:
    rng = np.random.default_rng(3)
    T_world_cam = np.stack([se3_exp(rng.normal(size=6)) for _ in range(4)])
    H, W = 392, 518
    intr = Intrinsics(fx=400.0, fy=410.0, cx=W / 2, cy=H / 2, width=W, height=H)
    enc = T_world_cam_to_pose_encoding(T_world_cam, intr.K, (H, W))
    assert enc.shape == (4, 9)
    for s in range(4):  # quaternion slot is xyzw of camera-from-world, w >= 0
        q = R_to_quat(invert_T(T_world_cam[s])[:3, :3])
        q = q if q[0] >= 0 else -q
        np.testing.assert_allclose(enc[s, 3:7], quat_wxyz_to_xyzw(q), atol=1e-12)
    np.testing.assert_allclose(enc[:, 7:], np.tile(intr.fov_rad(), (4, 1)), atol=1e-12)
    T_back, intrinsics = pose_encoding_to_T_world_cam(enc, (H, W))
    np.testing.assert_allclose(T_back, T_world_cam, atol=1e-12)
    assert intrinsics[0].fx == pytest.approx(400.0) and intrinsics[0].fy == pytest.approx(410.0)
    # extrinsic maps world points into the OpenCV camera frame
    extr, K = pose_encoding_to_extri_intri(torch.from_numpy(enc[None]), (H, W))
    X_world = rng.normal(size=(5, 3)) + T_world_cam[0][:3, 3]
    X_cam = X_world @ extr[0, 0, :, :3].numpy().T + extr[0, 0, :, 3].numpy()
    X_cam_ref = (invert_T(T_world_cam[0]) @ np.c_[X_world, np.ones(5)].T).T[:, :3]
    np.testing.assert_allclose(X_cam, X_cam_ref, atol=1e-10)
    assert K.dtype == torch.float32 and float(K[0, 0, 0, 2]) == W / 2


def test_unnormalised_quaternion_is_a_rotation() -> None:
    enc = torch.tensor([[[0.1, -0.2, 0.3, 0.2, -0.4, 0.1, 2.5, 1.0, 1.2]]], dtype=torch.float64)
    extr, _ = pose_encoding_to_extri_intri(enc, (56, 70))
    R = extr[0, 0, :, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64))
    assert torch.det(R) == pytest.approx(1.0)


def test_training_backward_reaches_every_used_parameter(golden: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["tiny_dino"], depth=4, dpt_layers=(0, 1, 2, 3))
    model = VGGT(cfg).train()
    with torch.enable_grad():
        out = model(golden["s3.in.images"], query_points=golden["s3.in.query_points"])
        assert "images" not in out
        loss = sum(out[k].float().mean() for k in ("pose_enc", "depth", "world_points", "track",
                                                   "vis", "conf"))
        loss = loss + sum(p.mean() for p in out["pose_enc_list"])
        loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # mask_token is in checkpoints but never used; DINO's cls output is discarded but the cls
    # token still reaches patch tokens through attention.
    assert no_grad == ["aggregator.patch_embed.mask_token"]


def test_pose_encoding_round_trips_real_cameras() -> None:
    """fountain-P11 ground truth at VGGT's 518-wide input: encode -> decode gives back the
    relative poses (frame 0 as world, as VGGT predicts them) and the focal lengths."""
    from reloc_vggt_ros.data.posed_folder import read_posed_folder
    from reloc_vggt_ros.geometry import compose

    folder = GOLDEN.parents[1] / "data" / "fountain-P11"
    images = read_posed_folder(folder, split=None)
    assert len(images) == 11
    T_world_cam = np.stack([im.T_world_cam for im in images])
    T_cam0_cam = np.stack([compose(invert_T(T_world_cam[0]), T) for T in T_world_cam])
    scale = 518 / images[0].intrinsics.width
    intr = images[0].intrinsics.scaled(scale)
    H, W = intr.height, intr.width
    K_center = Intrinsics(intr.fx, intr.fy, W / 2, H / 2, W, H).K
    enc = T_world_cam_to_pose_encoding(T_cam0_cam, K_center, (H, W))
    np.testing.assert_allclose(enc[0, :7], [0, 0, 0, 0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(enc[:, 7:], np.tile(intr.fov_rad(), (11, 1)), atol=1e-12)
    T_back, intrinsics = pose_encoding_to_T_world_cam(enc, (H, W))
    np.testing.assert_allclose(T_back, T_cam0_cam, atol=1e-9)
    assert intrinsics[5].fx == pytest.approx(intr.fx) and intrinsics[5].cy == H / 2
