"""VGGT conformance against the golden tensors of the official reference (shared/golden/vggt).

Every stored tensor of both tiny models (conv and DINOv2 patch embedding) is compared with the
the golden data's strict bound on e = max|ours - golden| / max|golden| (fp32, CPU), plus the VGGT-1B
state-dict key list, shapes and parameter counts built on the meta device.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reloc_vggt_ros.model.config import PRESETS, VGGTConfig
from reloc_vggt_ros.model.layers import RotaryPositionEmbedding2D, resample_pos_embed
from reloc_vggt_ros.model.pose_encoding import (extri_intri_to_pose_encoding,
                                                pose_encoding_to_extri_intri)
from reloc_vggt_ros.model.vggt import VGGT

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "vggt"
FILES = {"tiny_golden": "tiny_conv", "tiny_dinopatch_golden": "tiny_dino"}
CASES = ("s3", "s1", "b2s2")
HAS_TRACK = True

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden data not found at {GOLDEN}")


def strict_bound(key: str) -> float:
    """The golden data's strict bound on the normalised error for a tensor key."""
    name = key.split(".out.", 1)[-1]
    if name.startswith(("track_vis", "track_conf")):
        return 3e-3
    if name.startswith(("track_iter", "track")) and not name.startswith("track_feats"):
        return 1e-5
    if key.startswith(("util.rope", "util.pose")):
        return 2e-6
    if key.startswith("util.dino_interp"):
        return 2e-5
    return 5e-6


def _golden_keys(fname: str) -> list[str]:
    if not GOLDEN.is_dir():
        return []
    tensors = json.loads((GOLDEN / f"{fname}.json").read_text())["tensors"]
    keys = [k for k in tensors if ".out." in k or
            (k.startswith("util.") and not k.startswith(("util.camhead.tokens", "util.camhead.fc2",
                                                         "util.camhead.token_seed",
                                                         "util.pose.enc", "util.pose.image_hw",
                                                         "util.rope.x", "util.rope.pos",
                                                         "util.dino_interp.pos_embed_518")))]
    if not HAS_TRACK:
        keys = [k for k in keys if ".out.track" not in k]
    return keys


@lru_cache(maxsize=None)
def golden(fname: str) -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / f"{fname}.safetensors"))


def _weights(g: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[3:]: v for k, v in g.items() if k.startswith("sd.")}


@lru_cache(maxsize=None)
def tiny_model(fname: str) -> VGGT:
    cfg = dataclasses.replace(PRESETS[FILES[fname]], enable_track=HAS_TRACK)
    model = VGGT(cfg).eval()
    sd = _weights(golden(fname))
    if not HAS_TRACK:
        sd = {k: v for k, v in sd.items() if not k.startswith("track_head.")}
    model.load_state_dict(sd, strict=True)
    return model


@lru_cache(maxsize=None)
def outputs(fname: str) -> dict[str, torch.Tensor]:
    """All comparable tensors of our implementation, under the golden key names."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; avoids OpenMP spin-waiting on a loaded machine
    try:
        return _compute_outputs(fname)
    finally:
        torch.set_num_threads(threads)


def _compute_outputs(fname: str) -> dict[str, torch.Tensor]:
    g, model, out = golden(fname), tiny_model(fname), {}
    agg = model.aggregator
    with torch.no_grad():
        for case in CASES:
            images = g[f"{case}.in.images"]
            B, S, _, H, W = images.shape
            p = f"{case}.out."
            x = ((images - agg._resnet_mean) / agg._resnet_std).reshape(B * S, 3, H, W)
            out[p + "patch_tokens"] = agg.patch_embed(x)
            if hasattr(agg.patch_embed, "pos_embed_for"):
                out[p + "dino_pos_embed"] = agg.patch_embed.pos_embed_for(H, W)
            tokens, psi = agg(images)
            out.update({f"{p}agg.{i}": t for i, t in enumerate(tokens)})
            out[p + "patch_start_idx"] = torch.tensor([psi])
            preds = model(images, query_points=g[f"{case}.in.query_points"] if HAS_TRACK else None)
            out.update({f"{p}pose_enc_iter.{k}": t for k, t in enumerate(preds["pose_enc_list"])})
            out[p + "pose_enc"] = preds["pose_enc"]
            out[p + "extrinsic"], out[p + "intrinsic"] = pose_encoding_to_extri_intri(
                preds["pose_enc"], (H, W))
            for k in ("depth", "depth_conf", "world_points", "world_points_conf"):
                out[p + k] = preds[k]
            if HAS_TRACK:
                track_list, vis, conf, feats = model.track_head(
                    tokens, images, psi, query_points=g[f"{case}.in.query_points"],
                    return_feats=True)
                out[p + "track_feats"] = feats
                out.update({f"{p}track_iter.{k}": t for k, t in enumerate(track_list)})
                out[p + "track"], out[p + "track_vis"], out[p + "track_conf"] = (
                    preds["track"], preds["vis"], preds["conf"])
        _utility_outputs(g, model, out)
    return out


def _utility_outputs(g: dict[str, torch.Tensor], model: VGGT, out: dict[str, torch.Tensor]
                     ) -> None:
    hw = tuple(int(v) for v in g["util.pose.image_hw"])
    extr, K = pose_encoding_to_extri_intri(g["util.pose.enc"], hw)
    out["util.pose.extrinsic"], out["util.pose.intrinsic"] = extr, K
    out["util.pose.roundtrip_enc"] = extri_intri_to_pose_encoding(
        g["util.pose.extrinsic"], g["util.pose.intrinsic"], hw)
    out["util.rope.out"] = RotaryPositionEmbedding2D(100)(g["util.rope.x"], g["util.rope.pos"])
    head = copy.deepcopy(model.camera_head)
    head.pose_branch.fc2.weight.copy_(g["util.camhead.fc2_weight"])
    head.pose_branch.fc2.bias.copy_(g["util.camhead.fc2_bias"])
    activated, raw = head.refine(g["util.camhead.tokens"][:, :, 0])
    out.update({f"util.camhead.pose_enc_iter.{k}": t for k, t in enumerate(activated)})
    out.update({f"util.camhead.raw_iter.{k}": t for k, t in enumerate(raw)})
    if "util.dino_interp.pos_embed_518" in g:
        table = g["util.dino_interp.pos_embed_518"]
        for key in g:
            if key.startswith("util.dino_interp.out_"):
                H, W = (int(v) for v in key.rsplit("_", 1)[1].split("x"))
                out[key] = resample_pos_embed(table, H // 14, W // 14, square_image=H == W)


PARAMS = [pytest.param(f, k, id=f"{f}:{k}") for f in FILES for k in _golden_keys(f)]


@pytest.mark.parametrize(("fname", "key"), PARAMS)
def test_golden_tensor(fname: str, key: str) -> None:
    ref, ours = golden(fname)[key], outputs(fname)[key]
    assert tuple(ours.shape) == tuple(ref.shape), f"{key}: shape {tuple(ours.shape)}"
    if ref.dtype == torch.int64:
        assert torch.equal(ours.to(torch.int64), ref)
        return
    assert ours.dtype == ref.dtype == torch.float32
    err = ((ours - ref).abs().max() / ref.abs().max()).item()
    assert err <= strict_bound(key), f"{key}: normalised error {err:.2e} > {strict_bound(key)}"


def test_every_golden_output_is_checked() -> None:
    """Guards against silently skipping a stored tensor."""
    for fname in FILES:
        tensors = json.loads((GOLDEN / f"{fname}.json").read_text())["tensors"]
        stored_out = {k for k in tensors if ".out." in k}
        checked = set(_golden_keys(fname))
        assert stored_out - checked == set()
        assert len(checked) >= 45 * 3


@pytest.mark.parametrize("fname", list(FILES))
def test_golden_weights_load_strictly(fname: str) -> None:
    cfg = dataclasses.replace(PRESETS[FILES[fname]], enable_track=True)
    model = VGGT(cfg)
    result = model.load_state_dict(_weights(golden(fname)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    meta = json.loads((GOLDEN / f"{fname}.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]


def test_vggt_1b_state_dict_matches_official_key_list() -> None:
    """VGGT-1B on the meta device: same keys in the same order, shapes, dtypes, counts."""
    ref = json.loads((GOLDEN / "vggt_1b_state_dict.json").read_text())
    with torch.device("meta"):
        model = VGGT(VGGTConfig())
    sd = model.state_dict()
    assert [k for k in sd] == [e["key"] for e in ref["keys"]]
    for e in ref["keys"]:
        assert list(sd[e["key"]].shape) == e["shape"], e["key"]
        assert str(sd[e["key"]].dtype).removeprefix("torch.") == e["dtype"]
    assert len(sd) == ref["num_keys"] == 1797
    total = sum(v.numel() for v in sd.values())
    assert total == ref["total_params"] == 1_256_537_516
    per_module = {name: sum(v.numel() for k, v in sd.items() if k.startswith(name + "."))
                  for name in ref["params_per_top_module"]}
    assert per_module == ref["params_per_top_module"]
    assert per_module["aggregator"] + per_module["camera_head"] == 1_125_286_930
    assert sum(v.numel() for k, v in sd.items()
               if k.startswith("aggregator.patch_embed.")) == 304_372_736


if __name__ == "__main__":  # print the worst normalised error per tensor group (docs/model.md)
    import re

    worst: dict[str, float] = {}
    for fname in FILES:
        ours, ref = outputs(fname), golden(fname)
        for key in _golden_keys(fname):
            if ref[key].dtype != torch.float32:
                continue
            err = ((ours[key] - ref[key]).abs().max() / ref[key].abs().max()).item()
            group = re.sub(r"out_\d+x\d+", "out_*",
                           re.sub(r"\.\d+$", ".*", re.sub(r"^\w+\.out\.", "", key)))
            worst[group] = max(worst.get(group, 0.0), err)
    for group, err in worst.items():
        print(f"{group:30s} {err:.1e}  (strict bound {strict_bound(group):.0e})")
