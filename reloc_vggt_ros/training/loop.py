"""Stage 1 / stage 2 training loop: ``train(cfg) -> out_dir``.

* Stage 1 freezes everything except ``model.new_module_names()`` (pose tokenizer, projector,
  query token); the frozen tensors never reach the optimizer, so they stay bit-identical.
* Stage 2 trains everything, the backbone at ``lr * backbone_lr_scale``.
* AdamW, linear warmup + cosine, gradient-norm clipping; autocast (bf16, else fp16 with a
  GradScaler) and per-block gradient checkpointing on CUDA.
* Batch of step ``n`` = dataset items ``n*B … n*B+B-1``, each a pure function of (seed, index),
  so resuming from a checkpoint (model, optimizer, scheduler, scaler, RNG, step) reproduces the
  uninterrupted run exactly.
* Logs: ``metrics.csv`` every step, ``val.csv`` at every validation (median query errors on fixed
  unseen tuples, plus the trivial "query = anchor" baseline), TensorBoard when importable,
  ``loss_curve.png`` at the end, and the final weights exported for ``bench localize``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError, ModelLoadError
from ..geometry import invert_T, pose_error, quat_xyzw_to_wxyz, T_from_quat_t
from .config import TrainConfig
from .datasets import TupleDataset, TupleDatasetConfig, collate_tuples
from .losses import pose_loss
from .sampler import SamplerConfig
from .schedule import warmup_cosine
from .synthetic import generate_scene_folders

__all__ = ["train", "set_trainable", "seed_everything", "evaluate", "resolve_folders", "build_model", "model_config",
           "export_weights"]

logger = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "lr", "loss", "t", "q", "fov", "rot", "sec"]
VAL_FIELDS = ["step", "median_rot_deg", "median_t", "median_t_norm", "mean_rot_deg", "baseline_rot_deg",
              "baseline_t", "baseline_t_norm", "shuffled_rot_deg", "shuffled_t_norm"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def model_config(cfg: TrainConfig) -> Any:
    """RelocVGGTConfig of ``model.preset`` with ``model.mask`` and ``model.overrides`` applied."""
    from ..model.reloc_vggt import RelocVGGTConfig

    m = cfg.model
    overrides = dict(m.overrides)
    vggt_over = dict(overrides.pop("vggt", {}))
    try:
        if m.preset == "tiny":
            base = RelocVGGTConfig.tiny(mask=m.mask, depth=int(vggt_over.pop("depth", 2)))
        else:
            base = RelocVGGTConfig(mask=m.mask)
        return dataclasses.replace(base, vggt=dataclasses.replace(base.vggt, **vggt_over), **overrides)
    except TypeError as err:
        raise ConfigError(f"model.overrides: {err}") from err


def build_model(cfg: TrainConfig) -> nn.Module:
    """RelocVGGT from ``model.preset`` (+ overrides, a ``vggt`` dict overrides VGGTConfig fields).

    ``model.init_weights``: a training checkpoint (``checkpoints/step_*.pt``), a Reloc-VGGT export
    (``.safetensors`` with its ``.json`` beside it), or VGGT weights (official ``.pt`` or
    safetensors), from which the new modules start at their initialisation.
    """
    from ..model.reloc_vggt import RelocVGGT
    from ..model.weights import config_path_for

    m = cfg.model
    mcfg = model_config(cfg)
    path = m.init_weights
    if path is None:
        return RelocVGGT(mcfg)
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model.init_weights: file {p} not found")
    if p.name.startswith("step_") and p.suffix == ".pt":
        model = RelocVGGT(mcfg)
        ck = torch.load(p, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        logger.info("initialised from training checkpoint %s (step %s)", p, ck.get("step"))
        return model
    if config_path_for(p).is_file():
        loaded = RelocVGGT.load(p)
        if loaded.config.mask != m.mask:
            logger.warning("%s was trained with mask %r; continuing with %r", p, loaded.config.mask, m.mask)
        model = RelocVGGT(dataclasses.replace(loaded.config, mask=m.mask))
        model.load_state_dict(loaded.state_dict())
        logger.info("initialised from Reloc-VGGT export %s", p)
        return model
    model, report = RelocVGGT.from_vggt_weights(p, mcfg)
    logger.info("initialised from VGGT weights: %s", report.summary())
    return model


def set_trainable(model: nn.Module, stage: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(new-module params, backbone params) that train in ``stage``; stage 1 freezes the backbone."""
    prefixes = tuple(model.new_module_names())
    if not prefixes:
        raise ConfigError("model.new_module_names() is empty: nothing to train in stage 1")
    new, backbone = [], []
    for name, p in model.named_parameters():
        is_new = any(name == pre or name.startswith(pre + ".") for pre in prefixes)
        p.requires_grad_(is_new or stage == 2)
        (new if is_new else backbone).append(p)
    if not new:
        raise ConfigError(f"no parameter matches new_module_names() {list(prefixes)}")
    return new, (backbone if stage == 2 else [])


def _enable_grad_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer block in backward (saves activations); returns blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    wrapped = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1].isdigit() and ("blocks" in name) and not hasattr(module, "_ckpt_orig"):
            orig = module.forward
            module._ckpt_orig = orig

            def fwd(*args: Any, _orig: Callable = orig, **kwargs: Any) -> Any:
                return checkpoint(_orig, *args, use_reentrant=False, **kwargs)

            module.forward = fwd
            wrapped += 1
    return wrapped


def resolve_folders(cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    """Train and val posed folders; synthetic scenes are generated once (kept on later runs)."""
    train, val = [Path(p) for p in cfg.data.train], [Path(p) for p in cfg.data.val]
    syn = cfg.data.synthetic
    if syn is not None:
        root = Path(cfg.run.out_dir) / syn.root
        train += generate_scene_folders(root / "train", syn.train_scenes, syn.seed, syn.scene)
        val += generate_scene_folders(root / "val", syn.val_scenes, syn.seed + 7919, syn.scene)  # unseen
    if not val:
        raise ConfigError("no validation folders: set data.val or data.synthetic")
    return train, val


def _dataset_cfg(cfg: TrainConfig, image_hw: tuple[int, int], augment: bool, split: str | None
                 ) -> TupleDatasetConfig:
    d = cfg.data
    aug = d.augment if augment else type(d.augment)(enabled=False)
    return TupleDatasetConfig(image_hw=image_hw, augment=aug, split=split,
                              sampler=SamplerConfig(num_frames=d.num_frames, min_overlap=d.min_overlap,
                                                    max_angle_deg=d.max_angle_deg, nominal_depth=d.nominal_depth))


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.run.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.run.device)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: auto = bf16 (else fp16) on CUDA, off on CPU; an explicit bf16 also runs on CPU."""
    if cfg.run.amp == "off" or (device.type != "cuda" and cfg.run.amp != "bf16"):
        return None
    if cfg.run.amp == "fp16":
        return torch.float16
    if cfg.run.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _T_anchor_cam(enc: np.ndarray) -> np.ndarray | None:
    """Camera-to-anchor pose of one 9-d encoding (camera-from-anchor, xyzw); None if q is ~0."""
    q_xyzw = np.asarray(enc[3:7], float)
    if not np.all(np.isfinite(enc[:7])) or np.linalg.norm(q_xyzw) < 1e-8:
        return None
    return invert_T(T_from_quat_t(quat_xyzw_to_wxyz(q_xyzw), enc[:3]))


def _query_errors(model: nn.Module, images: torch.Tensor, enc: torch.Tensor, scale: torch.Tensor,
                  device: torch.device, amp: torch.dtype | None) -> np.ndarray:
    """[B, 3] (rotation deg, translation normalised, translation in scene units) of the query."""
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(images.to(device), enc[:, :-1].to(device))
    pred = out["pose_enc"][:, -1].float().cpu().numpy()
    gt = enc[:, -1].numpy()
    rows = []
    for b in range(len(pred)):
        T_est, T_gt = _T_anchor_cam(pred[b]), _T_anchor_cam(gt[b])
        dt, dr = pose_error(T_est, T_gt) if T_est is not None else (float(np.linalg.norm(gt[b, :3])), 180.0)
        rows.append((dr, dt, dt * float(scale[b])))
    return np.asarray(rows)


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device,
             amp: torch.dtype | None = None) -> dict[str, float]:
    """Median query errors (rotation in degrees, translation in scene units and normalised).

    Two references keep the numbers honest: ``baseline_*`` is "query = anchor" (no network), and
    ``shuffled_rot_deg`` re-runs the model with each query image swapped for another tuple's: if
    it is no worse than ``median_rot_deg``, the model predicts from the database poses alone and
    has not learned to look at the query image.
    """
    was_training = model.training
    model.eval()
    errs, shuffled, base = [], [], []
    for batch in batches:
        enc, images = batch["pose_enc"], batch["images"]
        errs.append(_query_errors(model, images, enc, batch["scale"], device, amp))
        swapped = images.clone()
        swapped[:, -1] = images[:, -1].roll(1, dims=0)
        shuffled.append(_query_errors(model, swapped, enc, batch["scale"], device, amp))
        for b in range(len(enc)):
            bt, br = pose_error(np.eye(4), _T_anchor_cam(enc[b, -1].numpy()))
            base.append((br, bt, bt * float(batch["scale"][b])))
    model.train(was_training)
    e, sh, bl = np.concatenate(errs), np.concatenate(shuffled), np.asarray(base)
    return {"median_rot_deg": float(np.median(e[:, 0])), "median_t": float(np.median(e[:, 2])),
            "median_t_norm": float(np.median(e[:, 1])), "mean_rot_deg": float(np.mean(e[:, 0])),
            "baseline_rot_deg": float(np.median(bl[:, 0])), "baseline_t": float(np.median(bl[:, 2])),
            "baseline_t_norm": float(np.median(bl[:, 1])), "shuffled_rot_deg": float(np.median(sh[:, 0])),
            "shuffled_t_norm": float(np.median(sh[:, 1]))}


class _CsvLog:
    def __init__(self, path: Path, fields: list[str], fresh: bool) -> None:
        self.path, self.fields = path, fields
        if fresh or not path.is_file():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])


def _truncate_csv(path: Path, max_step: int) -> None:
    """Drop rows past ``max_step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    rows = list(csv.reader(path.open()))
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= max_step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(keep)


def _save_checkpoint(path: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                     sched: Any, scaler: Any, cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "rng_torch": torch.get_rng_state(), "config": cfg.to_dict()}, tmp)
    tmp.replace(path)


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    ckpts = sorted(ckpt_dir.glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def export_weights(model: nn.Module, path: Path) -> Path:
    """Weights + config JSON beside them (same stem), the format ``--weights`` loads."""
    if hasattr(model, "save"):
        return Path(model.save(path) or path)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _plot(out_dir: Path) -> Path | None:
    metrics, val = out_dir / "metrics.csv", out_dir / "val.csv"
    if not metrics.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.genfromtxt(metrics, delimiter=",", names=True)
    m = np.atleast_1d(m)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(m["step"], m["loss"], lw=0.6, alpha=0.4, label="loss")
    k = max(1, len(m) // 50)
    if len(m) >= k:
        axes[0].plot(m["step"][k - 1:], np.convolve(m["loss"], np.ones(k) / k, mode="valid"), label=f"mean of {k}")
    axes[0].set_xlabel("step"), axes[0].set_ylabel("training loss"), axes[0].set_yscale("log"), axes[0].legend()
    if val.is_file():
        v = np.atleast_1d(np.genfromtxt(val, delimiter=",", names=True))
        axes[1].plot(v["step"], v["median_rot_deg"], "o-", label="median rotation error [deg]")
        axes[1].plot(v["step"], v["median_t_norm"] * 100, "s-", label="median translation error [% of scale]")
        axes[1].axhline(v["baseline_rot_deg"][0], ls="--", c="C0", lw=0.8, label="query = anchor (rot)")
        axes[1].axhline(v["baseline_t_norm"][0] * 100, ls="--", c="C1", lw=0.8, label="query = anchor (t)")
        if "shuffled_rot_deg" in v.dtype.names:
            axes[1].plot(v["step"], v["shuffled_rot_deg"], ":", c="C0", label="rotation, query image swapped")
        axes[1].set_xlabel("step"), axes[1].set_title("validation, unseen scenes"), axes[1].legend(fontsize=7)
    fig.tight_layout()
    png = out_dir / "loss_curve.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the stage's trainables (backbone group at a lower lr) with warmup + cosine."""
    new, backbone = set_trainable(model, cfg.stage)
    o = cfg.optim
    groups = [{"params": new, "lr": o.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": o.lr * o.backbone_lr_scale})
    opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, o.max_steps, o.warmup_steps, o.min_lr_ratio))
    logger.info("trainable: %d new-module tensors (%d values), %d backbone tensors (%d values)",
                len(new), sum(p.numel() for p in new), len(backbone), sum(p.numel() for p in backbone))
    return opt, sched


def _train_step(model: nn.Module, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                params: list[nn.Parameter], scaler: Any, device: torch.device, amp: torch.dtype | None,
                cfg: TrainConfig) -> tuple[float, dict[str, float]]:
    """One optimisation step: [anchor, db…] poses in, every frame's pose supervised."""
    enc = batch["pose_enc"].to(device, non_blocking=True)
    images = batch["images"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(images, enc[:, :-1])
    loss, terms = pose_loss(out["pose_enc_list"], enc, cfg.loss)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"non-finite loss: {terms}")
    opt.zero_grad(set_to_none=True)
    if scaler:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return loss_value, terms


def train(cfg: TrainConfig, model: nn.Module | None = None, resume: bool = False,
          stop_at_step: int | None = None) -> Path:
    """Run (or resume) training; returns ``run.out_dir``. ``stop_at_step`` simulates an interruption."""
    out_dir = Path(cfg.run.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = _device(cfg)
    amp = _amp_dtype(cfg, device)
    logger.info("training stage %d on %s (amp %s): %s", cfg.stage, device, amp, cfg.to_dict())
    import yaml

    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    train_folders, val_folders = resolve_folders(cfg)
    model = model if model is not None else build_model(cfg)
    model.to(device)
    if cfg.run.grad_checkpointing == "on" or (cfg.run.grad_checkpointing == "auto" and device.type == "cuda"):
        logger.info("gradient checkpointing on %d blocks", _enable_grad_checkpointing(model))
    opt, sched = _optimizer(model, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    o = cfg.optim

    start = 0
    if resume and (last := _latest_checkpoint(ckpt_dir)) is not None:
        ck = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if scaler and ck["scaler"]:
            scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_torch"])
        start = int(ck["step"])
        logger.info("resumed from %s at step %d", last, start)
    for name in ("metrics.csv", "val.csv"):
        _truncate_csv(out_dir / name, start)
    mlog = _CsvLog(out_dir / "metrics.csv", METRIC_FIELDS, fresh=start == 0)
    vlog = _CsvLog(out_dir / "val.csv", VAL_FIELDS, fresh=start == 0)
    tb = _tensorboard(out_dir)

    image_hw = tuple(cfg.data.image_hw or model.config.image_hw)
    train_ds = TupleDataset(train_folders, _dataset_cfg(cfg, image_hw, True, cfg.data.train_split), seed=cfg.run.seed)
    val_ds = TupleDataset(val_folders, _dataset_cfg(cfg, image_hw, False, cfg.data.val_split), seed=cfg.run.seed + 1)
    B = o.batch_size
    val_batches = [collate_tuples([val_ds[i] for i in range(j, min(j + B, cfg.data.val_tuples))])
                   for j in range(0, cfg.data.val_tuples, B)]
    end = o.max_steps if stop_at_step is None else min(o.max_steps, stop_at_step)
    loader = DataLoader(train_ds, batch_size=B, sampler=range(start * B, end * B), collate_fn=collate_tuples,
                        num_workers=cfg.run.num_workers, pin_memory=device.type == "cuda")
    if start == 0:
        _validate(model, val_batches, device, amp, 0, vlog, tb)

    from tqdm import tqdm

    bar = tqdm(total=end, initial=start, disable=not cfg.run.progress, desc=f"stage {cfg.stage}", unit="step")
    model.train()
    step = start
    t_start = time.monotonic()
    budget_s = cfg.run.max_minutes * 60 if cfg.run.max_minutes else math.inf
    for batch in loader:
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        loss_value, terms = _train_step(model, batch, opt, params, scaler, device, amp, cfg)
        sched.step()
        step += 1
        row = {"step": step, "lr": f"{lr:.6g}", "loss": f"{loss_value:.6g}", "sec": f"{time.perf_counter() - t0:.4f}",
               **{k: f"{v:.6g}" for k, v in terms.items()}}
        mlog.write(row)
        if tb and step % cfg.run.log_every == 0:
            tb.add_scalar("train/loss", loss_value, step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        out_of_time = time.monotonic() - t_start > budget_s
        if step % cfg.run.val_every == 0 or step == o.max_steps or out_of_time:
            _validate(model, val_batches, device, amp, step, vlog, tb)
        if step % cfg.run.ckpt_every == 0 or step == end or out_of_time:
            _save_checkpoint(ckpt_dir / f"step_{step:07d}.pt", step, model, opt, sched, scaler, cfg)
            for old in sorted(ckpt_dir.glob("step_*.pt"))[:-cfg.run.keep_checkpoints]:
                old.unlink()
        if out_of_time:
            logger.warning("run.max_minutes=%s reached at step %d: stopping early", cfg.run.max_minutes, step)
            break
    bar.close()
    if step == o.max_steps or (step < end and stop_at_step is None):
        path = export_weights(model, out_dir / f"{cfg.run.export_name}.safetensors")
        logger.info("exported %s", path)
    _plot(out_dir)
    logger.info("stopped at step %d of %d; outputs in %s", step, o.max_steps, out_dir)
    return out_dir


def _validate(model: nn.Module, batches: list, device: torch.device, amp: torch.dtype | None, step: int,
              vlog: _CsvLog, tb: Any) -> dict[str, float]:
    res = evaluate(model, batches, device, amp)
    vlog.write({"step": step, **{k: f"{v:.6g}" for k, v in res.items()}})
    if tb:
        for k, v in res.items():
            tb.add_scalar(f"val/{k}", v, step)
    logger.info("val step %d: median rot %.2f deg (query=anchor %.2f), median t %.3f (query=anchor %.3f)",
                step, res["median_rot_deg"], res["baseline_rot_deg"], res["median_t"], res["baseline_t"])
    return res


def _tensorboard(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tb"))

