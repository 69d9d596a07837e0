"""Stage 1 / 2 loop on the real tiny Reloc-VGGT: frozen bits, exact resume, logs and export."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT
from reloc_vggt_ros.training.config import (DataSection, ModelSection, OptimSection, RunSection, SyntheticSection,
                                            TrainConfig)
from reloc_vggt_ros.training.loop import build_model, train
from reloc_vggt_ros.training.synthetic import SyntheticConfig


def _cfg(out: Path, stage: int = 1, steps: int = 4, mask: str = "sparse", **run) -> TrainConfig:
    syn = SyntheticSection(root=str(out.parent / "synthetic"), train_scenes=2, val_scenes=1,
                           scene=SyntheticConfig(image_hw=(56, 70), num_views=8, texture_px=64))
    return TrainConfig(
        stage=stage,
        model=ModelSection(preset="tiny", mask=mask, overrides={"vggt": {"depth": 1}}),
        data=DataSection(synthetic=syn, num_frames=3, nominal_depth=2.5, val_tuples=2),
        optim=OptimSection(lr=1e-3, warmup_steps=1, max_steps=steps, batch_size=2),
        run=RunSection(**{"out_dir": str(out), "device": "cpu", "progress": False, "val_every": 2, "ckpt_every": 2, "threads": 1,
                          "export_name": "tiny", **run}))


def _losses(out: Path) -> list[str]:
    return [row["loss"] for row in csv.DictReader((out / "metrics.csv").open())]


def test_stage1_leaves_frozen_weights_bit_identical(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", stage=1, steps=3)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, model=model)
    new = tuple(model.new_module_names())
    after = model.state_dict()
    frozen = [k for k in before if not k.startswith(new)]
    assert len(frozen) > 50
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(new))
    # The export is what `--weights` loads: same tensors, config JSON beside it.
    loaded = RelocVGGT.load(tmp_path / "run" / "tiny.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000


def test_resume_gives_the_same_next_steps(tmp_path: Path) -> None:
    full = train(_cfg(tmp_path / "full", stage=2, steps=4))
    part = _cfg(tmp_path / "part", stage=2, steps=4)
    train(part, stop_at_step=2)
    assert len(_losses(tmp_path / "part")) == 2
    assert not (tmp_path / "part" / "tiny.safetensors").exists()          # interrupted: no export yet
    train(part, resume=True)                                               # fresh model, state from checkpoint
    assert _losses(tmp_path / "part") == _losses(full)                     # steps 3 and 4 identical
    a = torch.load(full / "checkpoints" / "step_0000004.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "step_0000004.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader((full / "val.csv").open()))
    assert [r["step"] for r in rows] == ["0", "2", "4"]
    assert all(float(r["shuffled_rot_deg"]) >= 0 and float(r["baseline_rot_deg"]) > 0 for r in rows)


@pytest.mark.parametrize("mask", ["dense", "cached"])
def test_other_masks_train(tmp_path: Path, mask: str) -> None:
    out = train(_cfg(tmp_path / mask, stage=1, steps=1, mask=mask))
    assert RelocVGGT.load(out / "tiny.safetensors").config.mask == mask


def test_bf16_autocast_step(tmp_path: Path) -> None:
    """The mixed-precision path (bf16 autocast, as on Ampere GPUs) runs and logs finite losses."""
    out = train(_cfg(tmp_path / "bf16", stage=2, steps=2, amp="bf16"))
    assert all(float(v) > 0 for v in _losses(out))


def test_stage2_initialises_from_stage1_export(tmp_path: Path) -> None:
    s1 = train(_cfg(tmp_path / "s1", stage=1, steps=1))
    cfg = _cfg(tmp_path / "s2", stage=2, steps=1)
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, init_weights=str(s1 / "tiny.safetensors")))
    model = build_model(cfg)
    ref = RelocVGGT.load(s1 / "tiny.safetensors").state_dict()
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in ref)
    missing = cfg.replace(model=dataclasses.replace(cfg.model, init_weights=str(tmp_path / "nope.safetensors")))
    with pytest.raises(Exception, match="not found"):
        build_model(missing)


def test_config_overrides_from_the_command_line() -> None:
    from reloc_vggt_ros.training.config import load_train_config

    repo = Path(__file__).parents[2]
    cfg = load_train_config(repo / "config" / "train_synthetic_cpu.yaml",
                            ["data.num_frames=2", "model.overrides.vggt.depth=1", "run.max_minutes=null"])
    assert cfg.data.num_frames == 2 and cfg.model.overrides["vggt"]["depth"] == 1 and cfg.run.max_minutes is None
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(repo / "config" / "train_synthetic_cpu.yaml", ["optim.momentum=0.9"])
    assert load_train_config(repo / "config" / "train_synthetic_cpu.yaml", ["optim.lr=1e-3"]).optim.lr == 1e-3
    with pytest.raises(ConfigError, match="optim.lr must be a number"):
        load_train_config(repo / "config" / "train_synthetic_cpu.yaml", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_train_config(repo / "config" / "train_synthetic_cpu.yaml", ["optim.lr"])


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="stage"):
        TrainConfig(stage=3)
    with pytest.raises(ConfigError, match="mask"):
        ModelSection(mask="diagonal")
    with pytest.raises(ConfigError, match="'train' folders or a 'synthetic'"):
        DataSection()


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    from reloc_vggt_ros.model.reloc_vggt import RelocVGGTConfig
    from reloc_vggt_ros.training.loop import _enable_grad_checkpointing
    from reloc_vggt_ros.training.losses import LossConfig, pose_loss

    torch.manual_seed(0)
    images, enc = torch.rand(1, 3, 3, 56, 70), torch.randn(1, 3, 9)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model = RelocVGGT(RelocVGGTConfig.tiny(depth=1))
        if ckpt:
            assert _enable_grad_checkpointing(model) >= 2
        loss, _ = pose_loss(model(images, enc[:, :-1])["pose_enc_list"], enc, LossConfig())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
