"""Load and save VGGT weights without ever unpickling arbitrary objects.

Formats: ``.safetensors`` (preferred; saved with a ``<stem>.json`` VGGTConfig beside it) and
PyTorch checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) read with
``torch.load(weights_only=True)`` -- the official VGGT-1B ``model.pt`` is such a file. Keys of
heads the model does not build (e.g. ``track_head.*`` when ``enable_track=False``) are reported
as ignored, never silently dropped.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from reloc_vggt_ros.errors import ModelLoadError
from reloc_vggt_ros.model.config import VGGTConfig

__all__ = ["LoadReport", "read_state_dict", "load_vggt_weights", "save_vggt_weights",
           "load_vggt", "convert_checkpoint", "config_path_for"]

logger = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_HEADS = ("camera_head", "depth_head", "point_head", "track_head")
_SHOW = 5  # keys listed in error messages


@dataclass(frozen=True)
class LoadReport:
    """What a load did. ``ignored``: file keys of heads this model does not build."""

    path: Path
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]

    def summary(self) -> str:
        ignored_heads = sorted({k.split(".", 1)[0] for k in self.ignored})
        return (f"{self.path}: loaded {self.loaded} tensors, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored "
                f"({', '.join(ignored_heads) or 'none'})")


def config_path_for(weights_path: str | Path) -> Path:
    """The config JSON that sits beside a weights file: ``model.safetensors`` -> ``model.json``."""
    return Path(weights_path).with_suffix(".json")


def _first(keys: list[str] | tuple[str, ...]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from a weights file on CPU; raise ModelLoadError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            sd: object = load_file(str(path), device="cpu")
        elif suffix in _TORCH_SUFFIXES:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ModelLoadError(f"unsupported weights format {suffix!r} for {path}; use "
                                 f".safetensors or one of {_TORCH_SUFFIXES}")
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError,
            ValueError) as err:
        raise ModelLoadError(f"cannot read weights {path} (safe loading only): {err}") from err
    if isinstance(sd, dict):  # training checkpoints wrap the weights
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if isinstance(sd.get(wrapper), dict):
                sd = sd[wrapper]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{path} does not hold a flat dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel/DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _match(file_sd: dict[str, torch.Tensor], model: nn.Module, path: Path, strict: bool
           ) -> LoadReport:
    """Compare a file's tensors with a model's keys/shapes; raise ModelLoadError on a mismatch."""
    model_sd = model.state_dict()
    absent_heads = tuple(f"{h}." for h in _HEADS if getattr(model, h, "present") is None)
    ignored = tuple(k for k in file_sd if k.startswith(absent_heads))
    unexpected = tuple(k for k in file_sd if k not in model_sd and not k.startswith(absent_heads))
    missing = tuple(k for k in model_sd if k not in file_sd)
    common = [k for k in file_sd if k in model_sd]
    if not common:
        raise ModelLoadError(f"{path} shares no key with the model: wrong architecture or not a "
                             f"VGGT checkpoint (file keys e.g. {_first(list(file_sd))})")
    bad_shapes = [f"{k}: file {tuple(file_sd[k].shape)} vs model {tuple(model_sd[k].shape)}"
                  for k in common if file_sd[k].shape != model_sd[k].shape]
    if bad_shapes:
        raise ModelLoadError(f"{path}: {len(bad_shapes)} tensors have the wrong shape (wrong "
                             f"architecture/config?): {'; '.join(bad_shapes[:_SHOW])}")
    if strict and (missing or unexpected):
        raise ModelLoadError(
            f"{path} does not match the model architecture: {len(missing)} missing keys"
            f"{' (' + _first(missing) + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (' + _first(unexpected) + ')' if unexpected else ''}")
    return LoadReport(path, len(common), missing, unexpected, ignored)


def _log(report: LoadReport) -> None:
    if report.ignored:
        logger.warning("ignored %d keys of heads this model does not build: %s",
                       len(report.ignored), _first(report.ignored))
    if report.missing or report.unexpected:
        logger.warning("non-strict load: %d missing (%s), %d unexpected (%s)",
                       len(report.missing), _first(report.missing), len(report.unexpected),
                       _first(report.unexpected))
    logger.info(report.summary())


def load_vggt_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load ``path`` into ``model`` (a VGGT or any module with checkpoint-style keys).

    Shape mismatches always raise. With ``strict`` any missing or unexpected key (other than
    keys of heads the model does not build) raises ModelLoadError; without it they are
    reported. A file sharing no key with the model always raises.
    """
    path = Path(path)
    file_sd = read_state_dict(path)
    report = _match(file_sd, model, path, strict)
    model_keys = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in file_sd.items() if k in model_keys}, strict=False)
    _log(report)
    return report


def convert_checkpoint(src: str | Path, dst: str | Path, config: VGGTConfig | None = None,
                       strict: bool = True) -> LoadReport:
    """Check ``src`` (e.g. the official ``model.pt``) against ``config`` (default VGGT-1B) and
    write its tensors to ``dst`` (.safetensors) with the config JSON beside it.

    The check uses a model on the meta device, so only the file's tensors take memory. Keys of
    heads the config disables are dropped (and reported as ignored).
    """
    from reloc_vggt_ros.model.vggt import VGGT

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"converted weights are written as .safetensors, got {dst}")
    config = config or VGGTConfig()
    file_sd = read_state_dict(src)
    with torch.device("meta"):
        meta_model = VGGT(config)
    report = _match(file_sd, meta_model, src, strict)
    keep = meta_model.state_dict().keys()
    tensors = {k: v.contiguous() for k, v in file_sd.items() if k in keep}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"format": "pt", "architecture": "vggt"})
    config.to_json(config_path_for(dst))
    _log(report)
    return report


def save_vggt_weights(model: nn.Module, path: str | Path, config: VGGTConfig | None = None
                      ) -> Path:
    """Write ``model``'s weights to ``path`` (.safetensors) and its config to ``<stem>.json``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights are saved as .safetensors, got {path}")
    config = config or getattr(model, "config", None)
    if not isinstance(config, VGGTConfig):
        raise ValueError("save_vggt_weights needs a VGGTConfig (model.config or config=)")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "architecture": "vggt"})
    config.to_json(config_path_for(path))
    return path


def load_vggt(path: str | Path, config: VGGTConfig | None = None, strict: bool = True,
              map_location: str | torch.device = "cpu") -> tuple[nn.Module, LoadReport]:
    """Build a VGGT from ``config`` (default: the JSON beside ``path``, else VGGT-1B) and load it.

    Returns the model in eval mode and the load report.
    """
    from reloc_vggt_ros.model.vggt import VGGT

    if config is None:
        cfg_path = config_path_for(path)
        config = VGGTConfig.from_json(cfg_path) if cfg_path.is_file() else VGGTConfig()
    model = VGGT(config)
    report = load_vggt_weights(model, path, strict=strict)
    return model.to(map_location).eval(), report
