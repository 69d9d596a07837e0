"""``reloc_vggt``: relocalization with a trained Reloc-VGGT checkpoint.

Per query: retrieve K keyframes (best match first = the **anchor**), encode their known poses
relative to the anchor (translations divided by their mean distance from the anchor, see
:func:`~reloc_vggt_ros.model.pose_tokenizer.relative_pose_encoding`), run
``[anchor, db…, query]``, read the query's camera-from-anchor pose, scale its translation back
to metres and compose ``T_world_query = T_world_anchor · T_anchor_query``.

With a ``cached``-mask checkpoint the keyframe keys/values are kept for the last keyframe set,
so consecutive queries that retrieve the same keyframes only pay for the query frame.

``weights`` may also be an exported graph (``.onnx``, or a TensorRT ``.plan``/``.engine``; see
``engine/reloc_graphs.py``): the model config is read from the export sidecar, and for a
``cached`` export either of the two graphs may be named — the other is found beside it.
``engine_kind`` picks the backend (``auto``: by suffix; ``tensorrt`` on an ``.onnx`` runs the
plan built beside it, ``<stem>.plan``); an unavailable kind is an EngineUnavailableError naming
what is missing unless ``engine_fallback`` lists kinds to try instead (see ``engine/base.py``).
A checkpoint runs the eager torch model directly rather than through the numpy engine
interface, so the ``cached`` K/V stays on the device between queries.

Confidence is *self-consistency*: the network also predicts the cameras of the keyframes whose
poses it was given; how far those predictions land from the known poses (relative translation
error, rotation error) says how much the network can be trusted on this input. Untrained
weights therefore give a finite pose with low confidence — they do not localize.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...engine.base import ENGINE_KINDS
from ...errors import ConfigError, EngineUnavailableError
from ...geometry import Intrinsics, pose_error
from ...keyframes import KeyframeStore
from ..base import PosePrior, RelocResult, RelocStatus
from .common import KeyframeSet, decode_cameras, require_weights, to_model_image

__all__ = ["RelocVGGTLocalizerConfig", "RelocVGGTLocalizer", "EngineNetwork", "resolve_engine_kind"]

ENGINE_SUFFIXES = (".onnx", ".plan", ".engine")
PLAN_SUFFIXES = (".plan", ".engine")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelocVGGTLocalizerConfig:
    """``consistency_t_rel`` / ``consistency_rot_deg``: keyframe prediction errors (translation as
    a fraction of the keyframe spread, rotation in degrees) at which confidence falls by e⁻¹."""

    weights: str = ""
    num_keyframes: int = 8
    device: str = "cpu"
    consistency_t_rel: float = 0.1
    consistency_rot_deg: float = 5.0
    min_confidence: float = 0.3
    engine_kind: str = "auto"
    engine_fallback: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine_kind not in ("auto", *ENGINE_KINDS):
            raise ConfigError(f"engine_kind must be one of {('auto', *ENGINE_KINDS)}, got {self.engine_kind!r}")
        if isinstance(self.engine_fallback, str):
            raise ConfigError(f"engine_fallback must be a list of engine kinds, got the string "
                              f"{self.engine_fallback!r}")
        object.__setattr__(self, "engine_fallback", tuple(self.engine_fallback))
        for kind in self.engine_fallback:
            if kind not in ENGINE_KINDS:
                raise ConfigError(f"engine_fallback entries must be in {ENGINE_KINDS}, got {kind!r}")
        if self.num_keyframes < 1:
            raise ConfigError(f"num_keyframes must be >= 1, got {self.num_keyframes}")
        if not (self.consistency_t_rel > 0 and self.consistency_rot_deg > 0):
            raise ConfigError("consistency_t_rel and consistency_rot_deg must be > 0")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


def resolve_engine_kind(engine_kind: str, path: Path) -> str:
    """``auto`` -> by suffix (``.onnx`` onnxruntime, ``.plan``/``.engine`` tensorrt, else torch);
    an explicit kind must fit the file: torch runs checkpoints, the others exported graphs."""
    exported = path.suffix in ENGINE_SUFFIXES
    if engine_kind == "auto":
        if not exported:
            return "torch"
        return "tensorrt" if path.suffix in PLAN_SUFFIXES else "onnxruntime"
    if engine_kind == "torch" and exported:
        raise ConfigError(f"engine_kind 'torch' runs a .safetensors/.pt checkpoint, but weights {path.name} "
                          "is an exported graph: use engine_kind auto, onnxruntime or tensorrt")
    if engine_kind != "torch" and not exported:
        raise ConfigError(f"engine_kind {engine_kind!r} needs an exported graph (.onnx, or a TensorRT .plan), "
                          f"but weights {path.name} is a checkpoint: export it with `reloc-vggt export onnx`")
    return engine_kind


def _engine_sources(path: Path) -> dict[str, Path]:
    """Which file each engine kind runs for the exported graph ``path`` (no torch: no checkpoint).

    onnxruntime takes a plan too (its sidecar names the ONNX it was built from); tensorrt on an
    ``.onnx`` takes the plan ``engine build`` writes beside it by default.
    """
    plan = path if path.suffix in PLAN_SUFFIXES else path.with_suffix(".plan")
    return {"onnxruntime": path, "tensorrt": plan}


class EngineNetwork:
    """Exported Reloc-VGGT graph(s) behind an inference engine, called like the torch model path."""

    def __init__(self, path: Path, kind: str | None = None, fallback: tuple[str, ...] = ()) -> None:
        from ...engine.base import make_engine, read_sidecar
        from ...model.reloc_vggt import RelocVGGTConfig

        kind = kind or resolve_engine_kind("auto", path)
        if "torch" in (kind, *fallback):
            raise ConfigError(f"the torch engine runs a .safetensors/.pt checkpoint, not the exported graph "
                              f"{path.name}: drop 'torch' from engine_kind/engine_fallback")
        side = read_sidecar(path)
        self.config = RelocVGGTConfig.from_dict(side["model"])
        kf = side.get("keyframes", {})
        self.keyframe_range = (int(kf.get("min", 1)), int(kf.get("max", 10**6)))
        if self.config.mask == "cached":
            graph, name = side["graph"], path.name
            i = name.index(graph)

            def sibling(g: str) -> Path:
                return path.with_name(name[:i] + g + name[i + len(graph):])

            self.encoder = make_engine(kind, _engine_sources(sibling("keyframe_encoder")), fallback=fallback)
            self.query = make_engine(kind, _engine_sources(sibling("query")), fallback=fallback)
            names = dict.fromkeys((self.encoder.name, self.query.name))
        else:
            self.full = make_engine(kind, _engine_sources(path), fallback=fallback)
            names = {self.full.name: None}
        self.name = "+".join(names)          # e.g. "onnxruntime-cpu"; two only if one graph fell back
        self._key: tuple[int, ...] | None = None
        self._kv: dict[str, np.ndarray] = {}

    def __call__(self, kf_ids: list[int], kf_images: np.ndarray, known: np.ndarray,
                 query: np.ndarray) -> np.ndarray:
        """kf_images [1,K,3,H,W], known [1,K,9], query [1,1,3,H,W] -> pose_enc [K+1, 9]."""
        if self.config.mask != "cached":
            out = self.full.run({"images": np.concatenate([kf_images, query], axis=1), "known_pose_enc": known})
            return out["pose_enc"][0]
        if self._key != tuple(kf_ids):
            self._kv = self.encoder.run({"keyframe_images": kf_images, "known_pose_enc": known})
            self._key = tuple(kf_ids)
        cached = {k: self._kv[k] for k in ("keys", "values", "camera_tokens")}
        out = self.query.run({"query_image": query, **cached})
        return out["pose_enc"][0]


class RelocVGGTLocalizer:
    """Localizer over a keyframe store with a Reloc-VGGT model (loaded from ``config.weights``)."""

    name = "reloc_vggt"

    def __init__(self, store: KeyframeStore, config: RelocVGGTLocalizerConfig,
                 model: torch.nn.Module | None = None) -> None:
        from ...model.reloc_vggt import RelocVGGT

        self.config = config
        self.engine: EngineNetwork | None = None
        if model is None:
            path = require_weights(config.weights, "reloc_vggt")
            kind = resolve_engine_kind(config.engine_kind, path)
            if kind == "torch":
                if config.engine_fallback:
                    logger.info("reloc_vggt: engine_fallback %s unused: the torch checkpoint has no "
                                "exported graph to fall back to", list(config.engine_fallback))
                if config.device.startswith("cuda") and not torch.cuda.is_available():
                    raise EngineUnavailableError(f"torch device {config.device!r} requested but "
                                                 "torch.cuda.is_available() is False")
                model = RelocVGGT.load(path, config.device)
            else:
                self.engine = EngineNetwork(path, kind, config.engine_fallback)
        self.model = model.eval() if model is not None else None
        self.engine_name = self.engine.name if self.engine is not None else "torch"
        model_config = self.engine.config if self.engine is not None else self.model.config
        self.mask = model_config.mask
        self.image_hw: tuple[int, int] = tuple(model_config.image_hw)  # type: ignore[assignment]
        self.keyframes = KeyframeSet(store, self.image_hw)
        self._cache_key: tuple[int, ...] | None = None
        self._cache = None
        logger.info("reloc_vggt: mask=%s image_hw=%s engine=%s %s", self.mask, self.image_hw,
                    self.engine_name, config)

    def refresh(self) -> None:
        self.keyframes.refresh()
        self._cache_key, self._cache = None, None

    @torch.inference_mode()
    def predict(self, kf_ids: list[int], query: torch.Tensor, known_pose_enc: np.ndarray) -> np.ndarray:
        """Pose encodings ``[K+1, 9]`` (camera-from-anchor, normalised scale) of keyframes + query."""
        kf_images = torch.stack([self.keyframes.image(i) for i in kf_ids]).unsqueeze(0)
        known = torch.from_numpy(known_pose_enc).float().unsqueeze(0)
        query = query.unsqueeze(0).unsqueeze(0)
        if self.engine is not None:      # engines take host arrays and place them themselves
            enc = self.engine(kf_ids, kf_images.numpy(), known.numpy(), query.numpy())
            return np.asarray(enc, dtype=np.float64)
        dev = self.config.device
        kf_images, known, query = kf_images.to(dev), known.to(dev), query.to(dev)
        if self.mask == "cached":
            if self._cache_key != tuple(kf_ids):
                self._cache = self.model.encode_keyframes(kf_images, known)
                self._cache_key = tuple(kf_ids)
            out = self.model.forward_query(self._cache, query)
        else:
            out = self.model(torch.cat([kf_images, query], dim=1), known)
        return out["pose_enc"][0].float().cpu().numpy().astype(np.float64)

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        from ...model.pose_tokenizer import relative_pose_encoding

        if len(self.keyframes) == 0:
            return RelocResult(RelocStatus.EMPTY_DATABASE, reason="keyframe database is empty")
        k = self.config.num_keyframes
        if self.engine is not None:
            k_min, k_max = self.engine.keyframe_range
            k = min(k, k_max)
        kf_ids = self.keyframes.retrieve(image_bgr, k, prior)
        if self.engine is not None and len(kf_ids) < k_min:
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
        t_lim, r_lim = self.config.consistency_t_rel, self.config.consistency_rot_deg
        confidence = math.exp(-med_t / t_lim) * math.exp(-med_r / r_lim)
        consistent = int(np.sum((t_rel < 3 * t_lim) & (rot < 3 * r_lim)))
        var_t = max((med_t * scale) ** 2, (0.01 * scale) ** 2)
        var_r = max(math.radians(med_r) ** 2, math.radians(0.5) ** 2)
        cov = np.diag([var_t] * 3 + [var_r] * 3)
        diagnostics.update(median_kf_t_err_rel=med_t, median_kf_rot_err_deg=med_r)
        if len(kf_ids) < 2:
            status, reason = RelocStatus.LOW_CONFIDENCE, "one keyframe: no baseline fixes the metric scale"
        elif confidence < self.config.min_confidence:
            status, reason = RelocStatus.LOW_CONFIDENCE, (
                f"keyframe self-consistency too low (median {med_t:.2f} rel. translation, {med_r:.1f} deg)")
        else:
            status, reason = RelocStatus.OK, ""
        return RelocResult(status, T_world_query, cov, float(confidence), consistent, reason, diagnostics)
