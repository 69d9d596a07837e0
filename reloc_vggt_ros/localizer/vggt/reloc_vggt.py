"""``reloc_vggt``: relocalization with a trained Reloc-VGGT checkpoint.

Per query: retrieve K keyframes (best match first = the **anchor**), encode their known poses
relative to the anchor (translations divided by their mean distance from the anchor, see
:func:`~reloc_vggt_ros.model.pose_tokenizer.relative_pose_encoding`), run
``[anchor, db…, query]``, read the query's camera-from-anchor pose, scale its translation back
to metres and compose ``T_world_query = T_world_anchor · T_anchor_query``.

With a ``cached``-mask model the keyframe keys/values are kept for the last keyframe set (one
:class:`~reloc_vggt_ros.model.kv_cache.KeyframeCache`, whatever runs the network), so
consecutive queries that retrieve the same keyframes only pay for the query frame.

``weights`` may also be an exported graph (``.onnx``, or a TensorRT ``.plan``/``.engine``; see
``engine/reloc_graphs.py``, the graph contract): the model config is read from the export
sidecar, and for a ``cached`` export either of the two graphs may be named — the other is found
beside it. ``engine_kind`` picks the backend (``auto``: by suffix; ``tensorrt`` on an ``.onnx``
runs the plan built beside it, ``<stem>.plan``); an unavailable kind is an
EngineUnavailableError naming what is missing unless ``engine_fallback`` lists kinds to try
instead (see ``engine/factory.py``). A checkpoint runs the eager torch model directly rather
than through the numpy engine interface, so the ``cached`` K/V stays on the device.

The judge is *self-consistency*: the network also predicts the cameras of the keyframes whose
poses it was given; how far those predictions land from the known poses (relative translation
error, rotation error) says how much the network can be trusted on this input. A keyframe whose
prediction lands within ``consistent_t_rel`` / ``consistent_rot_deg`` is *consistent*;
``num_inliers`` counts them. The result is OK iff at least two keyframes were retrieved (one
baseline fixes the metric scale), confidence >= ``min_confidence`` and at least
``min_consistent_keyframes`` keyframes are consistent; nothing else (the node publishes iff
``result.ok``). Untrained weights therefore give a finite pose that is not OK.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...config import setting
from ...engine.factory import check_engine_choice, resolve_engine_kind
from ...errors import ConfigError, EngineUnavailableError
from ...geometry import Intrinsics, pose_error
from ...keyframes import KeyframeStore
from ...model.kv_cache import KeyframeCache
from ..base import PosePrior, RelocResult, RelocStatus
from .common import KeyframeSet, decode_cameras, require_weights, to_model_image

if TYPE_CHECKING:
    from ...engine.reloc_graphs import RelocNetwork

__all__ = ["RelocVGGTLocalizerConfig", "RelocVGGTLocalizer", "open_network", "run_network"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelocVGGTLocalizerConfig:
    """Weights, engine choice and the backend's own acceptance thresholds (its judge)."""

    weights: str = setting("", "checkpoint (.safetensors/.pt with its .json) or exported graph (.onnx/.plan)")
    num_keyframes: int = setting(8, "keyframes retrieved per query (clamped to an export's maximum)")
    device: str = setting("cpu", "torch device of a checkpoint (cpu, cuda, cuda:1)")
    consistency_t_rel: float = setting(
        0.1, "median keyframe translation error (fraction of the keyframe spread) at which confidence falls by 1/e")
    consistency_rot_deg: float = setting(
        5.0, "median keyframe rotation error (degrees) at which confidence falls by 1/e")
    consistent_t_rel: float = setting(
        0.3, "a keyframe is consistent (counts in num_inliers) below this translation error (fraction of spread)")
    consistent_rot_deg: float = setting(
        15.0, "a keyframe is consistent (counts in num_inliers) below this rotation error (degrees)")
    min_confidence: float = setting(0.3, "results below this self-consistency confidence (0..1) are not OK")
    min_consistent_keyframes: int = setting(2, "results with fewer consistent keyframes are not OK")
    engine_kind: str = setting("auto", "auto (by file suffix), torch, onnxruntime or tensorrt")
    engine_fallback: tuple[str, ...] = setting((), "engine kinds to try, in order, when engine_kind cannot run here")

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine_fallback", check_engine_choice(self.engine_kind, self.engine_fallback))
        if self.num_keyframes < 1:
            raise ConfigError(f"num_keyframes must be >= 1, got {self.num_keyframes}")
        if not (self.consistency_t_rel > 0 and self.consistency_rot_deg > 0):
            raise ConfigError("consistency_t_rel and consistency_rot_deg must be > 0")
        if not (self.consistent_t_rel > 0 and self.consistent_rot_deg > 0):
            raise ConfigError("consistent_t_rel and consistent_rot_deg must be > 0")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.min_consistent_keyframes < 0:
            raise ConfigError(f"min_consistent_keyframes must be >= 0, got {self.min_consistent_keyframes}")


class RelocVGGTLocalizer:
    """Localizer over a keyframe store with a Reloc-VGGT model (loaded from ``config.weights``)."""

    name = "reloc_vggt"

    def __init__(self, store: KeyframeStore, config: RelocVGGTLocalizerConfig,
                 model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.network = open_network(config, model)
        self.model = getattr(self.network, "model", None)
        self.engine = None if self.model is not None else self.network
        self.engine_name = self.network.name
        self.mask = self.network.config.mask
        self.image_hw: tuple[int, int] = tuple(self.network.config.image_hw)  # type: ignore[assignment]
        self.keyframes = KeyframeSet(store, self.image_hw)
        self.kv_cache: KeyframeCache[Any] = KeyframeCache()
        logger.info("reloc_vggt: mask=%s image_hw=%s engine=%s %s", self.mask, self.image_hw,
                    self.engine_name, config)

    def refresh(self) -> None:
        self.keyframes.refresh()
        self.kv_cache.clear()

    def predict(self, kf_ids: list[int], query: torch.Tensor, known_pose_enc: np.ndarray) -> np.ndarray:
        """Pose encodings ``[K+1, 9]`` (camera-from-anchor, normalised scale) of keyframes + query."""
        kf_images = torch.stack([self.keyframes.image(i) for i in kf_ids]).unsqueeze(0)
        known = torch.from_numpy(known_pose_enc).float().unsqueeze(0)
        return run_network(self.network, self.kv_cache, tuple(kf_ids), kf_images, known,
                           query.unsqueeze(0).unsqueeze(0))

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        from ...model.pose_tokenizer import relative_pose_encoding

        if len(self.keyframes) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="keyframe database is empty")
        k_min, k_max = self.network.keyframe_range
        kf_ids = self.keyframes.retrieve(image_bgr, min(self.config.num_keyframes, k_max), prior)
        if len(kf_ids) < k_min:
            return RelocResult(RelocStatus.NO_MATCH, reason=f"the exported graph needs >= {k_min} keyframes, "
                               f"the database gave {len(kf_ids)}")
        T_world_kf = np.stack([self.keyframes.pose(i) for i in kf_ids])
        known, scale = relative_pose_encoding(list(T_world_kf), [self.keyframes.intrinsics[i] for i in kf_ids])
        pose_enc = self.predict(kf_ids, to_model_image(image_bgr, self.image_hw), known)
        diagnostics = {"keyframes": kf_ids, "anchor": kf_ids[0], "scale": scale}
        if not np.all(np.isfinite(pose_enc)):
            return RelocResult(RelocStatus.LOW_CONFIDENCE, reason="non-finite network output",
                               diagnostics=diagnostics)
        pose_enc[:, :3] *= scale
        T_anchor_cam = decode_cameras(pose_enc, self.image_hw)
        T_world_query = T_world_kf[0] @ T_anchor_cam[-1]
        # self-consistency on the keyframes the network was told about
        errs = [pose_error(T_world_kf[0] @ T_pred, T_known)
                for T_pred, T_known in zip(T_anchor_cam[:-1], T_world_kf)]
        t_rel = np.array([e[0] for e in errs]) / scale
        rot = np.array([e[1] for e in errs])
        med_t, med_r = float(np.median(t_rel)), float(np.median(rot))
        cfg = self.config
        confidence = math.exp(-med_t / cfg.consistency_t_rel) * math.exp(-med_r / cfg.consistency_rot_deg)
        consistent = int(np.sum((t_rel < cfg.consistent_t_rel) & (rot < cfg.consistent_rot_deg)))
        var_t = max((med_t * scale) ** 2, (0.01 * scale) ** 2)
        var_r = max(math.radians(med_r) ** 2, math.radians(0.5) ** 2)
        cov = np.diag([var_t] * 3 + [var_r] * 3)
        diagnostics.update(median_kf_t_err_rel=med_t, median_kf_rot_err_deg=med_r, consistent_keyframes=consistent)
        if len(kf_ids) < 2:
            status, reason = RelocStatus.LOW_CONFIDENCE, "one keyframe: no baseline fixes the metric scale"
        elif confidence < cfg.min_confidence:
            status, reason = RelocStatus.LOW_CONFIDENCE, (
                f"keyframe self-consistency {confidence:.2f} < min_confidence {cfg.min_confidence} "
                f"(median {med_t:.2f} rel. translation, {med_r:.1f} deg)")
        elif consistent < cfg.min_consistent_keyframes:
            status, reason = RelocStatus.LOW_CONFIDENCE, (
                f"{consistent} of {len(kf_ids)} keyframes consistent < min_consistent_keyframes "
                f"{cfg.min_consistent_keyframes}")
        else:
            status, reason = RelocStatus.OK, ""
        return RelocResult(status, T_world_query, cov, float(confidence), consistent, reason, diagnostics)


def open_network(config: RelocVGGTLocalizerConfig, model: torch.nn.Module | None = None) -> "RelocNetwork":
    """The network ``config.weights`` names (a checkpoint on torch, an export on its engine), or
    ``model`` itself when given (tests, callers that loaded it)."""
    from ...engine.reloc_graphs import EngineRelocNetwork, TorchRelocNetwork
    from ...model.reloc_vggt import RelocVGGT

    if model is None:
        path = require_weights(config.weights, "reloc_vggt")
        kind = resolve_engine_kind(config.engine_kind, path)
        if kind != "torch":
            return EngineRelocNetwork(path, kind, config.engine_fallback)
        if config.engine_fallback:
            logger.info("reloc_vggt: engine_fallback %s unused: the torch checkpoint has no "
                        "exported graph to fall back to", list(config.engine_fallback))
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(f"torch device {config.device!r} requested but "
                                         "torch.cuda.is_available() is False")
        model = RelocVGGT.load(path, config.device)
    return TorchRelocNetwork(model.eval(), config.device)


def run_network(network: "RelocNetwork", cache: KeyframeCache[Any], key: Any, kf_images: torch.Tensor,
                known: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    """Pose encodings ``[K+1, 9]`` of ``kf_images [1,K,3,H,W]`` (poses ``known [1,K,9]``) + ``query
    [1,1,3,H,W]``; under the ``cached`` mask the keyframes' encoding is kept in ``cache`` under ``key``."""
    if network.config.mask != "cached":
        return network.full(kf_images, known, query)
    encoded = cache.get(key, lambda: network.encode_keyframes(kf_images, known))
    return network.query(encoded, query)
