"""Reloc-VGGT on real images: pose tokens, masks wired into the model, cached == uncached,
loading from VGGT weights starts as exact VGGT, save/load, ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError, ModelLoadError
from reloc_vggt_ros.geometry import invert_T, pose_error
from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.masks import reference_mask
from reloc_vggt_ros.model.pose_encoding import pose_encoding_to_T_world_cam, T_world_cam_to_pose_encoding
from reloc_vggt_ros.model.pose_tokenizer import PoseTokenizer, relative_pose_encoding
from reloc_vggt_ros.model.reloc_vggt import KeyframeEncoder, QueryStep, RelocVGGT, RelocVGGTConfig
from reloc_vggt_ros.model.vggt import VGGT
from reloc_vggt_ros.model.weights import save_vggt_weights

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"


@pytest.fixture(scope="module")
def scene() -> dict:
    """5 real frames [anchor, db, db, db, query] at the tiny size, and their anchor-relative poses."""
    db = read_posed_folder(SCENE, "db")[:4]
    query = read_posed_folder(SCENE, "query")[0]
    recs = [*db, query]
    H, W = RelocVGGTConfig.tiny().image_hw
    imgs = [cv2.cvtColor(cv2.resize(cv2.imread(str(r.path)), (W, H), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2RGB) for r in recs]
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    enc, scale = relative_pose_encoding([r.T_world_cam for r in recs], [r.intrinsics for r in recs])
    return {"recs": recs, "images": images, "enc": enc, "scale": scale}


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Visible random weights everywhere (zero-initialised parts would hide wiring bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return model.eval()


def test_relative_pose_encoding_on_real_poses(scene: dict) -> None:
    enc, scale, recs = scene["enc"], scene["scale"], scene["recs"]
    np.testing.assert_allclose(enc[0, :7], [0, 0, 0, 0, 0, 0, 1], atol=1e-12)      # anchor = identity
    dists = [np.linalg.norm(r.T_world_cam[:3, 3] - recs[0].T_world_cam[:3, 3]) for r in recs[1:]]
    assert scale == pytest.approx(np.mean(dists))
    # agrees with the VGGT pose-encoding conversion of the anchor-relative camera-to-world poses
    T_rel = np.stack([invert_T(recs[0].T_world_cam) @ r.T_world_cam for r in recs])
    K = np.stack([r.intrinsics.K for r in recs])
    ref = T_world_cam_to_pose_encoding(T_rel, K, (recs[0].intrinsics.height, recs[0].intrinsics.width))
    ref[:, :3] /= scale
    np.testing.assert_allclose(enc, ref, atol=1e-6)
    # and decodes back to the true relative poses (metric after multiplying the scale back)
    T_dec, _ = pose_encoding_to_T_world_cam(enc * np.r_[[scale] * 3, [1] * 6], (56, 70))
    for Td, Tr in zip(T_dec, T_rel):
        t_err, r_err = pose_error(Td, Tr)
        assert t_err < 1e-6 and r_err < 1e-4


def test_pose_tokenizer_features(scene: dict) -> None:
    tok = PoseTokenizer(t_freqs=6, rot_freqs=4, fov_freqs=4)
    enc = torch.from_numpy(scene["enc"]).float()
    feats = tok(enc)
    assert feats.shape == (5, 3 * 13 + 6 * 9 + 2 * 9) and torch.isfinite(feats).all()
    assert torch.cdist(feats, feats).fill_diagonal_(1e9).min() > 0.1    # distinct poses, distinct tokens
    flipped = enc.clone()
    flipped[:, 3:7] *= -2.5
    torch.testing.assert_close(tok(flipped), feats)          # the rotation part is sign/norm-free


@pytest.mark.parametrize("mask", ["dense", "sparse", "cached"])
def test_model_mask_equals_boolean_masked_reference(mask: str, scene: dict) -> None:
    model = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask=mask)))
    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]
    with torch.no_grad():
        out = model(images, known)

        def ref_fn(i, q, k, v, S, P):  # noqa: ANN001
            return F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask(mask, S, P))

        tokens, _ = model.aggregator(images, camera_tokens=model.pose_tokens(known), global_attn_fn=ref_fn)
        ref = model.camera_head(tokens)[-1]
    assert out["pose_enc"].shape == (1, 5, 9) and len(out["pose_enc_list"]) == 4
    assert (out["pose_enc"] - ref).abs().max() <= 1e-5
    if mask != "dense":
        dense = RelocVGGT(RelocVGGTConfig.tiny(mask="dense"))
        dense.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert (dense.eval()(images, known)["pose_enc"] - out["pose_enc"]).abs().max() > 1e-4


def _tiny_dino(mask: str) -> RelocVGGTConfig:
    """DINOv2-style patch embedding (as VGGT-1B) at a non-square size: pos-embed resampling path."""
    base = RelocVGGTConfig.tiny(mask=mask, depth=3)
    vggt = VGGTConfig.from_dict({**base.vggt.to_dict(), "patch_embed": "dinov2", "dino_depth": 1,
                                 "dino_num_heads": 2})
    return RelocVGGTConfig(vggt=vggt, mask=mask, image_hw=base.image_hw, t_freqs=4, rot_freqs=2, fov_freqs=2)


@pytest.mark.parametrize("patch_embed", ["conv", "dinov2"])
def test_cached_query_equals_uncached_forward(scene: dict, patch_embed: str) -> None:
    cfg = RelocVGGTConfig.tiny(mask="cached", depth=3) if patch_embed == "conv" else _tiny_dino("cached")
    model = _randomise(RelocVGGT(cfg), seed=1)
    images = scene["images"].repeat(2, 1, 1, 1, 1)
    images[1] = images[1].flip(-1)                      # a second, different batch element
    known = torch.from_numpy(scene["enc"][:-1]).float()[None].repeat(2, 1, 1)
    with torch.no_grad():
        full = model(images, known)
        cache = model.encode_keyframes(images[:, :4], known)
        per_query = model.forward_query(cache, images[:, 4:])
        other = model.forward_query(cache, images[:, 2:3])   # the cache is reusable
    assert (full["pose_enc"] - per_query["pose_enc"]).abs().max() <= 1e-5
    for a, b in zip(full["pose_enc_list"], per_query["pose_enc_list"]):
        assert (a - b).abs().max() <= 1e-5
    assert (other["pose_enc"][:, -1] - per_query["pose_enc"][:, -1]).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="mask='cached'"):
        RelocVGGT(RelocVGGTConfig.tiny(mask="sparse")).encode_keyframes(images[:, :4], known)


def test_from_vggt_weights_reports_new_modules_and_starts_as_vggt(scene: dict, tmp_path: Path) -> None:
    cfg = RelocVGGTConfig.tiny(mask="dense")
    vggt_cfg = VGGTConfig.from_dict({**cfg.vggt.to_dict(), "enable_depth": True})
    vggt = _randomise(VGGT(vggt_cfg), seed=2)
    path = save_vggt_weights(vggt, tmp_path / "vggt_tiny.safetensors")
    model, report = RelocVGGT.from_vggt_weights(path, cfg)
    assert report.newly_initialised == ("query_token", "pose_projector.fc1.weight", "pose_projector.fc1.bias",
                                        "pose_projector.fc2.weight", "pose_projector.fc2.bias")
    assert report.ignored and all(k.startswith("depth_head.") for k in report.ignored)
    assert "pose_projector" in report.summary()
    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]
    with torch.no_grad():
        ours = model.eval()(images, known)["pose_enc"]
        theirs = vggt(images)["pose_enc"]
    assert (ours - theirs).abs().max() <= 1e-5          # zero-initialised additions: exact VGGT
    # once the projector learns something the known poses change the prediction
    with torch.no_grad():
        model.pose_projector.fc2.weight.normal_(0, 0.5)
        assert (model(images, known)["pose_enc"] - theirs).abs().max() > 1e-3
    with pytest.raises(ModelLoadError, match="weights file not found"):
        RelocVGGT.from_vggt_weights(tmp_path / "missing.safetensors", cfg)
    with pytest.raises(ModelLoadError, match="load it with RelocVGGT.load"):
        RelocVGGT.from_vggt_weights(model.save(tmp_path / "reloc.safetensors"), cfg)


def test_save_load_round_trip_and_config_json(scene: dict, tmp_path: Path) -> None:
    model = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask="cached")), seed=3)
    path = model.save(tmp_path / "reloc_tiny.safetensors")
    cfg = json.loads((tmp_path / "reloc_tiny.json").read_text())
    assert cfg["architecture"] == "reloc_vggt" and cfg["mask"] == "cached" and cfg["image_hw"] == [56, 70]
    assert cfg["vggt"]["embed_dim"] == 64 and cfg["t_freqs"] == 4
    loaded = RelocVGGT.load(path)
    assert loaded.config == model.config
    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, known)["pose_enc"], model(images, known)["pose_enc"])
    (tmp_path / "reloc_tiny.json").write_text(json.dumps({**cfg, "architecture": "vggt"}))
    with pytest.raises(ModelLoadError, match="not 'reloc_vggt'"):
        RelocVGGT.load(path)
    (tmp_path / "reloc_tiny.json").unlink()
    with pytest.raises(ModelLoadError, match="no config"):
        RelocVGGT.load(path)
    with pytest.raises(ModelLoadError, match="reloc_vggt needs weights: file .* not found"):
        RelocVGGT.load(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="mask must be one of"):
        RelocVGGTConfig.tiny(mask="band")


class _PoseEncOnly(torch.nn.Module):
    """RelocVGGT with only the final pose encoding as output (what the ONNX tests export)."""

    def __init__(self, m: RelocVGGT) -> None:
        super().__init__()
        self.m = m

    def forward(self, images, known):  # noqa: ANN001
        return self.m(images, known)["pose_enc"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning", "ignore::UserWarning")
def test_onnx_export_sparse_forward_and_cached_query(scene: dict, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]

    def run(module: torch.nn.Module, args: tuple, names: list[str]) -> list[np.ndarray]:
        path = tmp_path / f"{type(module).__name__}.onnx"
        torch.onnx.export(module, args, str(path), input_names=names, opset_version=17, dynamo=False)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})

    sparse = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask="sparse")), seed=4)
    with torch.no_grad():
        got = run(_PoseEncOnly(sparse), (images, known), ["images", "known_pose_enc"])[0]
        np.testing.assert_allclose(got, sparse(images, known)["pose_enc"].numpy(), atol=1e-4)

    cached = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask="cached")), seed=5)
    with torch.no_grad():
        keys, values, cam = KeyframeEncoder(cached)(images[:, :4], known)
        got = run(QueryStep(cached), (images[:, 4:], keys, values, cam),
                  ["image", "keys", "values", "camera_tokens"])[0]
        np.testing.assert_allclose(got, cached(images, known)["pose_enc"].numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning", "ignore::UserWarning")
def test_onnx_export_keeps_the_frame_count_dynamic(scene: dict, tmp_path: Path) -> None:
    """One export, run at other keyframe counts: nothing in the sparse path bakes S into the graph."""
    ort = pytest.importorskip("onnxruntime")
    model = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask="sparse")), seed=6)

    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]
    path = tmp_path / "sparse_dyn.onnx"
    with torch.no_grad():
        torch.onnx.export(_PoseEncOnly(model), (images, known), str(path), input_names=["images", "known"],
                          output_names=["pose_enc"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {1: "S"}, "known": {1: "K"}, "pose_enc": {1: "S"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for keep in ([0, 4], [0, 1, 4], [0, 1, 2, 3, 4]):            # K = 1, 2, 4 keyframes + query
        imgs, kn = images[:, keep], known[:, keep[:-1]]
        with torch.no_grad():
            ref = model(imgs, kn)["pose_enc"].numpy()
        got = sess.run(None, {"images": imgs.numpy(), "known": kn.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning", "ignore::UserWarning")
def test_onnx_cached_pair_keeps_the_keyframe_count_dynamic(scene: dict, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _randomise(RelocVGGT(RelocVGGTConfig.tiny(mask="cached")), seed=7)
    images, known = scene["images"], torch.from_numpy(scene["enc"][:-1]).float()[None]
    enc, step = KeyframeEncoder(model), QueryStep(model)
    with torch.no_grad():
        keys, values, cam = enc(images[:, :3], known[:, :3])
        torch.onnx.export(enc, (images[:, :3], known[:, :3]), str(tmp_path / "enc.onnx"), opset_version=17,
                          dynamo=False, input_names=["kf", "known"], output_names=["keys", "values", "cam"],
                          dynamic_axes={"kf": {1: "K"}, "known": {1: "K"}, "keys": {3: "KP"},
                                        "values": {3: "KP"}, "cam": {1: "K"}})
        torch.onnx.export(step, (images[:, 4:], keys, values, cam), str(tmp_path / "query.onnx"), opset_version=17,
                          dynamo=False, input_names=["q", "keys", "values", "cam"], output_names=["pose_enc"],
                          dynamic_axes={"keys": {3: "KP"}, "values": {3: "KP"}, "cam": {1: "K"},
                                        "pose_enc": {1: "S"}})
    enc_s = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    q_s = ort.InferenceSession(str(tmp_path / "query.onnx"), providers=["CPUExecutionProvider"])
    for K in (1, 2, 4):
        kv = enc_s.run(None, {"kf": images[:, :K].numpy(), "known": known[:, :K].numpy()})
        got = q_s.run(None, {"q": images[:, 4:].numpy(), "keys": kv[0], "values": kv[1], "cam": kv[2]})[0]
        with torch.no_grad():
            ref = model(torch.cat([images[:, :K], images[:, 4:]], dim=1), known[:, :K])["pose_enc"].numpy()
        assert got.shape == (1, K + 1, 9)
        np.testing.assert_allclose(got, ref, atol=1e-4)
