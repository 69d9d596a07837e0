"""Reloc-VGGT: VGGT with known keyframe poses as camera tokens and masked global attention.

Frame order ``[anchor, db_2 … db_K, query]``. Frames 0…S−2 get a *pose token*: the
pretrained camera token of their slot (slot 0 for the anchor, slot 1 otherwise) plus
``pose_projector(pose_tokenizer(known_pose_enc))`` (see :mod:`.pose_tokenizer`); the anchor's
known pose is the identity with its own FoV. The query gets slot 1's camera token plus the
learned ``query_token``. Both additions start at zero, so a model made from VGGT weights starts
as exact VGGT (with the chosen mask). The camera head then predicts every frame's pose in the
anchor frame; the query's row is ``T_query_anchor``.

Global attention follows ``config.mask`` (:mod:`.masks`). With ``mask="cached"``,
:meth:`RelocVGGT.encode_keyframes` + :meth:`RelocVGGT.forward_query` give the same result as
:meth:`RelocVGGT.forward` while keyframe work is done once per keyframe set.

Weights: ``<name>.safetensors`` with ``<name>.json`` beside it (``RelocVGGTConfig``: architecture
``reloc_vggt``, the VGGT config, mask, image size, tokenizer frequencies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigError, ModelLoadError
from .aggregator import Aggregator
from .config import VGGTConfig
from .config_json import JsonConfig
from .heads import CameraHead
from .kv_cache import KeyframeKV, build_keyframe_kv, last_layer_tokens, query_forward
from .masks import MaskType, global_attn_fn
from .pose_tokenizer import PoseProjector, PoseTokenizer
from .weights import LoadReport, config_path_for, load_vggt_weights

__all__ = ["RelocVGGTConfig", "RelocVGGT", "InitReport", "KeyframeEncoder", "QueryStep"]

logger = logging.getLogger(__name__)

ARCHITECTURE = "reloc_vggt"


@dataclass(frozen=True)
class RelocVGGTConfig(JsonConfig):
    """Everything needed to rebuild a Reloc-VGGT checkpoint. Defaults: VGGT-1B, sparse mask, 518×392."""

    ARCHITECTURE: ClassVar[str] = ARCHITECTURE
    LABEL: ClassVar[str] = "Reloc-VGGT"

    vggt: VGGTConfig = field(default_factory=lambda: VGGTConfig(enable_depth=False, enable_point=False,
                                                                 enable_track=False))
    mask: str = "sparse"
    image_hw: tuple[int, int] = (392, 518)
    t_freqs: int = 6
    rot_freqs: int = 4
    fov_freqs: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", MaskType.parse(self.mask).value)
        object.__setattr__(self, "image_hw", tuple(int(v) for v in self.image_hw))
        p = self.vggt.patch_size
        if len(self.image_hw) != 2 or any(v <= 0 or v % p for v in self.image_hw):
            raise ConfigError(f"image_hw must be two positive multiples of patch_size {p}, got {self.image_hw}")
        if not self.vggt.enable_camera:
            raise ConfigError("Reloc-VGGT needs the camera head (vggt.enable_camera=True)")
        for name in ("t_freqs", "rot_freqs", "fov_freqs"):
            if not 0 <= getattr(self, name) <= 16:
                raise ConfigError(f"{name} must be in 0..16, got {getattr(self, name)}")

    @classmethod
    def tiny(cls, mask: str = "sparse", depth: int = 2) -> "RelocVGGTConfig":
        """CPU-sized preset for tests and training smoke runs: C=64, conv patches, 56×70 px."""
        vggt = VGGTConfig(img_size=70, embed_dim=64, depth=depth, num_heads=4, camera_num_heads=4,
                          patch_embed="conv", dpt_layers=tuple(min(i, depth - 1) for i in range(4)),
                          dpt_features=16, dpt_out_channels=(8, 16, 32, 32), track_features=16,
                          track_hidden=32, track_corr_levels=4, enable_depth=False,
                          enable_point=False, enable_track=False)
        return cls(vggt=vggt, mask=mask, image_hw=(56, 70), t_freqs=4, rot_freqs=2, fov_freqs=2)

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": ARCHITECTURE, "vggt": self.vggt.to_dict(), "mask": self.mask,
                "image_hw": list(self.image_hw), "t_freqs": self.t_freqs, "rot_freqs": self.rot_freqs,
                "fov_freqs": self.fov_freqs}


@dataclass(frozen=True)
class InitReport:
    """Result of :meth:`RelocVGGT.from_vggt_weights`: what came from the file, what is new."""

    path: Path
    loaded: int
    newly_initialised: tuple[str, ...]   # exact state-dict keys left at their initial values
    ignored: tuple[str, ...]             # file keys of heads Reloc-VGGT does not build

    def summary(self) -> str:
        return (f"{self.path}: loaded {self.loaded} VGGT tensors; newly initialised: "
                f"{', '.join(self.newly_initialised)}; ignored {len(self.ignored)} head keys")


class RelocVGGT(nn.Module):
    """Aggregator + camera head of VGGT (same checkpoint keys) + pose tokenizer/projector + query token."""

    def __init__(self, config: RelocVGGTConfig | None = None) -> None:
        super().__init__()
        cfg = config or RelocVGGTConfig()
        self.config = cfg
        v = cfg.vggt
        self.aggregator = Aggregator(v)
        self.camera_head = CameraHead(2 * v.embed_dim, trunk_depth=v.camera_trunk_depth,
                                      num_heads=v.camera_num_heads, mlp_ratio=v.mlp_ratio,
                                      init_values=v.init_values, num_iterations=v.camera_iterations)
        self.depth_head = self.point_head = self.track_head = None   # keys of these are "ignored"
        self.pose_tokenizer = PoseTokenizer(cfg.t_freqs, cfg.rot_freqs, cfg.fov_freqs)
        self.pose_projector = PoseProjector(self.pose_tokenizer.out_dim, v.embed_dim)
        self.query_token = nn.Parameter(torch.zeros(1, 1, 1, v.embed_dim))
        self.mask = MaskType(cfg.mask)

    def new_module_names(self) -> list[str]:
        """Top-level names of what VGGT does not have (stage-1 trainables)."""
        return ["pose_tokenizer", "pose_projector", "query_token"]

    def new_parameter_names(self) -> list[str]:
        prefixes = tuple(self.new_module_names())
        return [n for n, _ in self.named_parameters() if n.split(".")[0] in prefixes]

    # -- tokens ---------------------------------------------------------------------------------

    def pose_tokens(self, known_pose_enc: torch.Tensor, with_query: bool = True) -> torch.Tensor:
        """known_pose_enc [B, K, 9] (frames 0..K−1, anchor-relative) -> camera tokens [B, K(+1), 1, C]."""
        B, K, _ = known_pose_enc.shape
        slots = self.aggregator.camera_token[0, :, 0]                         # [2, C]
        base = torch.cat([slots[:1], slots[1:].expand(K - 1, -1)], dim=0)    # [K, C]
        tokens = base.unsqueeze(0) + self.pose_projector(self.pose_tokenizer(known_pose_enc))
        if with_query:
            query = (slots[1] + self.query_token[0, 0, 0]).expand(B, 1, -1)
            tokens = torch.cat([tokens, query], dim=1)
        return tokens.unsqueeze(2)

    def query_camera_token(self, B: int) -> torch.Tensor:
        """[B, 1, 1, C]: slot-1 camera token + learned query token."""
        return (self.aggregator.camera_token[:, 1:2] + self.query_token).expand(B, -1, -1, -1)

    def _check(self, images: torch.Tensor, known_pose_enc: torch.Tensor, n_known: int) -> None:
        if images.ndim != 5:
            raise ValueError(f"images must be [B, S, 3, H, W], got {tuple(images.shape)}")
        B = images.shape[0]
        if tuple(known_pose_enc.shape) != (B, n_known, 9):
            raise ValueError(f"known_pose_enc must be {(B, n_known, 9)}, got {tuple(known_pose_enc.shape)}")

    # -- full forward ---------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, known_pose_enc: torch.Tensor) -> dict[str, Any]:
        """images [B, S, 3, H, W] in [0, 1], order [anchor, db…, query]; known_pose_enc [B, S−1, 9].

        Returns ``pose_enc`` [B, S, 9] (camera-from-anchor, VGGT absT_quaR_FoV) and
        ``pose_enc_list`` (one [B, S, 9] per camera-head iteration).
        """
        S = images.shape[1]
        self._check(images, known_pose_enc, S - 1)
        last = last_layer_tokens(self.aggregator, images, self.pose_tokens(known_pose_enc),
                                 global_attn_fn(self.mask))
        pose_enc_list = self.camera_head([last])
        return {"pose_enc": pose_enc_list[-1], "pose_enc_list": pose_enc_list}

    # -- cached keyframes -----------------------------------------------------------------------

    def encode_keyframes(self, images: torch.Tensor, known_pose_enc: torch.Tensor) -> KeyframeKV:
        """Keyframes [B, K, 3, H, W] (anchor first) and their poses [B, K, 9] -> reusable K/V cache."""
        if self.mask is not MaskType.CACHED:
            raise ConfigError(f"keyframe caching needs a model trained with mask='cached', this one "
                              f"uses {self.mask.value!r}")
        self._check(images, known_pose_enc, images.shape[1])
        cache, _ = build_keyframe_kv(self.aggregator, images,
                                     self.pose_tokens(known_pose_enc, with_query=False))
        return cache

    def forward_query(self, cache: KeyframeKV, image: torch.Tensor) -> dict[str, Any]:
        """One query [B, 1, 3, H, W] against cached keyframes; same outputs as :meth:`forward`."""
        last = query_forward(self.aggregator, cache, image, self.query_camera_token(image.shape[0]))
        camera_tokens = torch.cat([cache.camera_tokens, last[:, :, 0]], dim=1)
        pose_enc_list = self.camera_head.refine(camera_tokens)[0]
        return {"pose_enc": pose_enc_list[-1], "pose_enc_list": pose_enc_list}

    # -- weights --------------------------------------------------------------------------------

    @classmethod
    def from_vggt_weights(cls, path: str | Path, config: RelocVGGTConfig | None = None
                          ) -> tuple["RelocVGGT", InitReport]:
        """Reloc-VGGT whose aggregator and camera head come from a VGGT checkpoint.

        Everything else (pose projector, query token) stays at its initialisation; the report
        names exactly those keys. Any other missing or unexpected key is a ModelLoadError.
        """
        model = cls(config)
        report: LoadReport = load_vggt_weights(model, path, strict=False)
        new = tuple(model.new_parameter_names())
        if not report.missing and not report.unexpected:
            raise ModelLoadError(f"{path} already holds the Reloc-VGGT modules ({', '.join(new[:2])}, …): "
                                 "load it with RelocVGGT.load (config JSON beside it)")
        if report.unexpected or set(report.missing) != set(new):
            other = sorted(set(report.missing) - set(new))
            raise ModelLoadError(f"{path} is not a VGGT checkpoint for this config: missing "
                                 f"{other[:5]}, unexpected {list(report.unexpected[:5])}")
        init = InitReport(Path(path), report.loaded, new, report.ignored)
        logger.info(init.summary())
        return model, init

    def save(self, path: str | Path) -> Path:
        """Weights to ``path`` (.safetensors) and the config to ``<stem>.json`` beside it."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"weights are saved as .safetensors, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: t.detach().cpu().contiguous() for k, t in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"format": "pt", "architecture": ARCHITECTURE})
        self.config.to_json(config_path_for(path))
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "RelocVGGT":
        """A saved Reloc-VGGT: ``<stem>.json`` beside the weights is required; strict keys."""
        path = Path(path)
        cfg_path = config_path_for(path)
        if not path.is_file():
            raise ModelLoadError(f"reloc_vggt needs weights: file {path} not found")
        if not cfg_path.is_file():
            raise ModelLoadError(f"{path}: no config {cfg_path} beside it (it names the architecture, "
                                 "mask and image size); VGGT weights load with from_vggt_weights")
        try:
            config = RelocVGGTConfig.from_json(cfg_path)
        except ConfigError as err:
            raise ModelLoadError(f"{cfg_path}: {err}") from err
        model = cls(config)
        load_vggt_weights(model, path, strict=True)
        return model.to(map_location).eval()


class KeyframeEncoder(nn.Module):
    """Export wrapper: ``(images [B,K,3,H,W], known_pose_enc [B,K,9])`` ->
    ``(keys [L,B,heads,K·P,d], values [L,B,heads,K·P,d], camera_tokens [B,K,2C])``."""

    def __init__(self, model: RelocVGGT) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, known_pose_enc: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.encode_keyframes(images, known_pose_enc).stacked()


class QueryStep(nn.Module):
    """Export wrapper: ``(image [B,1,3,H,W], keys, values, camera_tokens)`` from
    :class:`KeyframeEncoder` -> ``pose_enc [B, K+1, 9]``."""

    def __init__(self, model: RelocVGGT) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                camera_tokens: torch.Tensor) -> torch.Tensor:
        return self.model.forward_query(KeyframeKV.from_stacked(keys, values, camera_tokens), image)["pose_enc"]
