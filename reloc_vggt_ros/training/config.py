"""Training configuration: frozen dataclasses read from YAML, every value checked on construction.

A YAML file has the sections ``model``, ``data``, ``optim``, ``loss`` and ``run`` plus ``stage``
(1 or 2); unknown keys are errors (a typo must not silently train the wrong thing). Relative paths
are relative to the working directory; ``data.synthetic.root`` is relative to ``run.out_dir``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import from_mapping, merge, parse_overrides, to_mapping
from ..errors import ConfigError
from .augment import AugmentConfig
from .losses import LossConfig
from .synthetic import SyntheticConfig

__all__ = ["ModelSection", "SyntheticSection", "DataSection", "OptimSection", "RunSection",
           "TrainConfig", "load_train_config"]

MASKS = ("dense", "sparse", "cached")


@dataclass(frozen=True)
class ModelSection:
    """``preset``: ``tiny`` (CPU) or ``vggt_1b``; ``init_weights``: VGGT weights (stage 1) or a
    stage-1 checkpoint / export (stage 2); ``overrides``: extra RelocVGGTConfig fields."""

    preset: str = "tiny"
    mask: str = "sparse"
    init_weights: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in ("tiny", "vggt_1b"):
            raise ConfigError(f"model.preset must be 'tiny' or 'vggt_1b', got {self.preset!r}")
        if self.mask not in MASKS:
            raise ConfigError(f"model.mask must be one of {MASKS}, got {self.mask!r}")


@dataclass(frozen=True)
class SyntheticSection:
    """Generate synthetic posed folders under ``root`` (train and unseen val scenes)."""

    root: str = "synthetic"
    train_scenes: int = 40
    val_scenes: int = 8
    seed: int = 0
    scene: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.train_scenes < 1 or self.val_scenes < 1:
            raise ConfigError("data.synthetic needs train_scenes >= 1 and val_scenes >= 1")


@dataclass(frozen=True)
class DataSection:
    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    synthetic: SyntheticSection | None = None
    train_split: str | None = None       # None = every image, "db" = split.txt's db images only
    val_split: str | None = None         # e.g. "query": validate on the held-out test sequences
    image_hw: tuple[int, int] | None = None   # None = the model's config.image_hw
    num_frames: int = 4                  # K + 1 = [anchor, db…, query]
    min_overlap: float = 0.3
    max_angle_deg: float = 75.0
    nominal_depth: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_tuples: int = 64

    def __post_init__(self) -> None:
        if not self.train and self.synthetic is None:
            raise ConfigError("data needs 'train' folders or a 'synthetic' section")
        for name in ("train_split", "val_split"):
            if getattr(self, name) not in (None, "db", "query"):
                raise ConfigError(f"data.{name} must be null, 'db' or 'query', got {getattr(self, name)!r}")
        if self.val_tuples < 1:
            raise ConfigError(f"data.val_tuples must be >= 1, got {self.val_tuples}")


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-4
    backbone_lr_scale: float = 0.1       # stage 2: backbone lr = lr * scale
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_steps: int = 1000
    batch_size: int = 8
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.05

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 < self.backbone_lr_scale <= 1):
            raise ConfigError(f"optim.lr must be > 0 and backbone_lr_scale in (0, 1], got {self.lr}, "
                              f"{self.backbone_lr_scale}")
        if self.max_steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ConfigError("optim.max_steps >= 1, batch_size >= 1, warmup_steps >= 0 required")
        if self.grad_clip <= 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("optim.grad_clip > 0, weight_decay >= 0, min_lr_ratio in [0, 1] required")


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "out/train"
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: str = "auto"                    # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    grad_checkpointing: str = "auto"     # auto (on for CUDA) | on | off
    threads: int = 0                     # torch CPU threads, 0 = leave as is
    num_workers: int = 0
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    max_minutes: float | None = None     # wall-clock budget: stop early (validate, checkpoint, export)
    progress: bool = True
    export_name: str = "reloc_vggt"

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"run.amp must be auto/off/bf16/fp16, got {self.amp!r}")
        if self.grad_checkpointing not in ("auto", "on", "off"):
            raise ConfigError(f"run.grad_checkpointing must be auto/on/off, got {self.grad_checkpointing!r}")
        if min(self.log_every, self.val_every, self.ckpt_every, self.keep_checkpoints) < 1:
            raise ConfigError("run.log_every, val_every, ckpt_every, keep_checkpoints must be >= 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"run.max_minutes must be > 0 or null, got {self.max_minutes}")
        if self.threads < 0 or self.num_workers < 0:
            raise ConfigError("run.threads and run.num_workers must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    stage: int = 1
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=lambda: DataSection(synthetic=SyntheticSection()))
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (backbone frozen) or 2 (fine-tune all), got {self.stage}")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)

    def replace(self, **sections: Any) -> "TrainConfig":
        return dataclasses.replace(self, **sections)


def load_train_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a training YAML (paths inside are relative to the working directory).

    ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML), applied before checking,
    e.g. ``data.num_frames=2`` or ``model.overrides.vggt.depth=4``.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read training config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"training config {path} must be a YAML mapping, got {type(raw).__name__}")
    raw = merge(raw, parse_overrides(overrides))
    return from_mapping(TrainConfig, raw, str(path))
