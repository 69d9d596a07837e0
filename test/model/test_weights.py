"""Weights I/O on real files: safetensors round trip, official-style .pt via weights_only, and
clear ModelLoadErrors (missing file, wrong architecture, shape mismatch, unsafe pickles)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from reloc_vggt_ros.errors import ModelLoadError
from reloc_vggt_ros.model.config import PRESETS, VGGTConfig
from reloc_vggt_ros.model.vggt import VGGT
from reloc_vggt_ros.model.weights import (config_path_for, load_vggt, load_vggt_weights,
                                          save_vggt_weights)

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "vggt"
GOLDEN_FILE = GOLDEN / "tiny_golden.safetensors"
needs_golden = pytest.mark.skipif(not GOLDEN_FILE.is_file(), reason=f"no golden data in {GOLDEN}")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; avoids OpenMP spin-waiting on a loaded machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden_sd() -> dict[str, torch.Tensor]:
    g = load_file(str(GOLDEN_FILE))
    return {k[3:]: v for k, v in g.items() if k.startswith("sd.")}


@pytest.fixture(scope="module")
def golden_images() -> torch.Tensor:
    return load_file(str(GOLDEN_FILE))["s1.in.images"]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@needs_golden
def test_official_style_pt_loads_with_weights_only_and_reproduces_golden(
        tmp_path: Path, golden_sd: dict[str, torch.Tensor], golden_images: torch.Tensor) -> None:
    path = tmp_path / "model.pt"
    torch.save(golden_sd, path)  # the official checkpoint is a plain state dict
    model = VGGT(PRESETS["tiny_conv"]).eval()
    report = load_vggt_weights(model, path, strict=True)
    assert report.loaded == len(golden_sd) and not report.missing and not report.ignored
    with torch.no_grad():
        depth = model(golden_images)["depth"]
    expected = load_file(str(GOLDEN_FILE))["s1.out.depth"]
    assert ((depth - expected).abs().max() / expected.abs().max()).item() < 5e-6


@needs_golden
def test_wrapped_and_ddp_checkpoints(tmp_path: Path, golden_sd: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {f"module.{k}": v for k, v in golden_sd.items()}, "epoch": 3}, path)
    model = VGGT(PRESETS["tiny_conv"])
    assert load_vggt_weights(model, path).loaded == len(golden_sd)


@needs_golden
def test_disabled_track_head_reports_ignored_keys(tmp_path: Path,
                                                  golden_sd: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "model.pt"
    torch.save(golden_sd, path)
    model = VGGT(dataclasses.replace(PRESETS["tiny_conv"], enable_track=False))
    report = load_vggt_weights(model, path, strict=True)
    track_keys = [k for k in golden_sd if k.startswith("track_head.")]
    assert len(track_keys) > 100
    assert sorted(report.ignored) == sorted(track_keys)
    assert "track_head" in report.summary() and str(len(track_keys)) in report.summary()


def test_safetensors_round_trip_with_config(tmp_path: Path) -> None:
    cfg = dataclasses.replace(PRESETS["tiny_dino"], depth=5, dpt_layers=(0, 1, 2, 4),
                              enable_track=False)
    torch.manual_seed(0)
    model = VGGT(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    path = save_vggt_weights(model, tmp_path / "w" / "tiny.safetensors")
    assert config_path_for(path).name == "tiny.json"
    assert VGGTConfig.from_json(config_path_for(path)) == cfg
    loaded, report = load_vggt(path)
    assert loaded.config == cfg and not loaded.training
    assert report.loaded == len(model.state_dict())
    _assert_same_weights(model, loaded)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelLoadError, match="not found.*nope.safetensors"):
        load_vggt_weights(VGGT(PRESETS["tiny_conv"]), missing)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unsupported weights format"):
        load_vggt_weights(VGGT(PRESETS["tiny_conv"]), path)


def test_wrong_architecture_lists_missing_and_unexpected(tmp_path: Path) -> None:
    path = save_vggt_weights(VGGT(PRESETS["tiny_conv"]), tmp_path / "conv.safetensors")
    with pytest.raises(ModelLoadError, match=r"conv\.safetensors does not match the model "
                                             r"architecture: \d+ missing keys \(aggregator"
                                             r"\.patch_embed\.cls_token.*unexpected"):
        load_vggt_weights(VGGT(PRESETS["tiny_dino"]), path, strict=True)
    # non-strict: loads the shared part and reports the rest
    report = load_vggt_weights(VGGT(PRESETS["tiny_dino"]), path, strict=False)
    assert "aggregator.patch_embed.proj.weight" in report.unexpected
    assert "aggregator.patch_embed.pos_embed" in report.missing


def test_not_a_vggt_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelLoadError, match="shares no key"):
        load_vggt_weights(VGGT(PRESETS["tiny_conv"]), path, strict=False)


def test_shape_mismatch_lists_keys_with_both_shapes(tmp_path: Path) -> None:
    sd = VGGT(PRESETS["tiny_conv"]).state_dict()
    sd["camera_head.empty_pose_tokens"] = torch.zeros(1, 1, 7)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ModelLoadError, match=r"bad\.pt: 1 tensors have the wrong shape.*"
                                             r"camera_head\.empty_pose_tokens: file \(1, 1, 7\) "
                                             r"vs model \(1, 1, 9\)"):
        load_vggt_weights(VGGT(PRESETS["tiny_conv"]), path, strict=False)


class _Exploit:
    """Unpickling this would create a marker file; weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_arbitrary_pickles_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"aggregator.camera_token": _Exploit(marker)}, f, protocol=2)
    torch.save({"x": _Exploit(marker)}, tmp_path / "evil2.pt")
    marker.unlink(missing_ok=True)  # torch.save does not run __reduce__'s callable, but be sure
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ModelLoadError, match="safe loading only"):
            load_vggt_weights(VGGT(PRESETS["tiny_conv"]), p)
    assert not marker.exists()


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        load_vggt_weights(VGGT(PRESETS["tiny_conv"]), path)


def test_default_config_is_vggt_1b_and_json_round_trips(tmp_path: Path) -> None:
    cfg = VGGTConfig()
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_embed, cfg.img_size) == \
        (1024, 24, 16, "dinov2", 518)
    assert VGGTConfig.from_json(cfg.to_json(tmp_path / "c.json")) == cfg
    assert PRESETS["vggt_1b"] == cfg


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"patch_embed": "resnet"}, "patch_embed must be one of"),
    ({"embed_dim": 1000}, "head_dim divisible by 4"),
    ({"img_size": 500}, "multiple of patch_size"),
    ({"dpt_layers": (4, 11, 17, 30)}, r"dpt_layers .* must lie in \[0, 24\)"),
    ({"depth": 0}, "depth must be >= 1"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    from reloc_vggt_ros.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        VGGTConfig(**kwargs)


def test_config_json_errors(tmp_path: Path) -> None:
    from reloc_vggt_ros.errors import ConfigError
    bad = tmp_path / "bad.json"
    bad.write_text('{"architecture": "vggt", "embed_dimm": 64}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['embed_dimm'\] in VGGT; valid: \[.*'embed_dim'"):
        VGGTConfig.from_json(bad)
    bad.write_text('{"architecture": "dust3r"}')
    with pytest.raises(ConfigError, match="architecture 'dust3r'"):
        VGGTConfig.from_json(bad)
    with pytest.raises(ConfigError, match="cannot read VGGT config"):
        VGGTConfig.from_json(tmp_path / "missing.json")


def _run_weights_cli(argv: list[str]) -> int:
    import argparse

    from reloc_vggt_ros.model import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weights", *argv])
    return args.func(args)


@needs_golden
def test_cli_convert_official_pt_then_info_and_load(tmp_path: Path, capsys,
                                                    golden_sd: dict[str, torch.Tensor]) -> None:
    src, dst = tmp_path / "model.pt", tmp_path / "out" / "tiny.safetensors"
    torch.save(golden_sd, src)
    assert _run_weights_cli(["convert", str(src), str(dst), "--preset", "tiny_conv",
                             "--no-track"]) == 0
    assert "394 ignored (track_head)" in capsys.readouterr().out
    assert _run_weights_cli(["info", str(dst)]) == 0  # config JSON beside it is used
    out = capsys.readouterr().out
    assert "1061 tensors" in out and "matches VGGTConfig" in out
    model, report = load_vggt(dst)
    assert model.track_head is None and report.loaded == 1061 and not report.missing
    assert torch.equal(model.state_dict()["aggregator.camera_token"],
                       golden_sd["aggregator.camera_token"])
    with pytest.raises(ModelLoadError, match="wrong shape"):  # tiny file vs VGGT-1B
        _run_weights_cli(["info", str(src)])
