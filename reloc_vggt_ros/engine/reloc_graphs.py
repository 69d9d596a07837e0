"""Reloc-VGGT as exportable graphs: the one contract between export and runtime.

Which graph does what (per mask mode), their tensor names, shapes and dtypes, the sidecar fields
the runtime reads and the file names that tie a ``cached`` pair together are all written here;
the exporter (:func:`export_reloc_vggt`) and the runtime (:class:`EngineRelocNetwork`, used by
the ``reloc_vggt`` localizer) both read them from this module.

* ``dense`` / ``sparse``: one graph ``reloc_vggt_<mask>``: ``images [1, K+1, 3, H, W]`` (anchor,
  db…, query) and ``known_pose_enc [1, K, 9]`` -> ``pose_enc [1, K+1, 9]``.
* ``cached``: two graphs. ``keyframe_encoder``: ``keyframe_images [1, K, 3, H, W]``,
  ``known_pose_enc [1, K, 9]`` -> per-global-layer ``keys``/``values [L, 1, heads, K·P, d]`` and
  ``camera_tokens [1, K, 2C]``; ``query``: ``query_image [1, 1, 3, H, W]`` + those three ->
  ``pose_enc [1, K+1, 9]``. The encoder runs once per keyframe set, the query graph per image.

Inputs are float32 images in [0, 1] and VGGT pose encodings (float16 in an fp16 export). Files
are ``<prefix><graph>[_fp16].onnx`` with a sidecar ``<file>.json`` (:func:`..export.export_onnx`)
whose ``model`` (the :class:`RelocVGGTConfig`), ``graph``, ``mask`` and ``keyframes`` (min/max)
the runtime reads (:class:`RelocSidecar`). Shapes are discovered by running the model once on one
frame (P = tokens per frame).

The image size is fixed per export, so DINOv2's positional table (antialiased bicubic resize of
the 37x37 grid, which TensorRT's Resize cannot do and the tracer cannot follow) is computed once
in torch and exported as a constant: :func:`frozen_pos_embed`.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import ConfigError
from ..model.config import VGGTConfig
from ..model.kv_cache import KeyframeKV
from ..model.reloc_vggt import KeyframeEncoder, QueryStep, RelocVGGT, RelocVGGTConfig
from .base import read_sidecar
from .export import ExportConfig, export_onnx
from .factory import engine_sources, make_engine, resolve_engine_kind
from .graphs import KEYFRAME_AXIS, ExportableGraph

__all__ = ["RelocFullGraph", "RelocKeyframeGraph", "RelocQueryGraph", "graphs_for", "export_reloc_vggt",
           "frozen_pos_embed", "EXPORT_PRESETS", "preset_config", "graph_names", "graph_file", "RelocSidecar",
           "RelocNetwork", "TorchRelocNetwork", "EngineRelocNetwork", "FULL_INPUTS", "KEYFRAME_GRAPH",
           "KEYFRAME_INPUTS", "KV_NAMES", "QUERY_GRAPH", "QUERY_INPUTS", "POSE_OUTPUTS"]

EXPORT_PRESETS = ("tiny", "small", "vggt_1b")

# -- the contract ------------------------------------------------------------------------------

FULL_INPUTS = ("images", "known_pose_enc")
KEYFRAME_GRAPH = "keyframe_encoder"
KEYFRAME_INPUTS = ("keyframe_images", "known_pose_enc")
KV_NAMES = ("keys", "values", "camera_tokens")       # keyframe encoder out = query graph in
QUERY_GRAPH = "query"
QUERY_INPUTS = ("query_image", *KV_NAMES)
POSE_OUTPUTS = ("pose_enc",)


def graph_names(mask: str) -> tuple[str, ...]:
    """The graphs of a mask mode, in export order: ``(keyframe_encoder, query)`` for ``cached``."""
    return (KEYFRAME_GRAPH, QUERY_GRAPH) if mask == "cached" else (f"reloc_vggt_{mask}",)


def graph_file(prefix: str, graph: str, precision: str) -> str:
    """File name of one exported graph."""
    return f"{prefix}{graph}{'_fp16' if precision == 'fp16' else ''}.onnx"


@dataclass(frozen=True)
class RelocSidecar:
    """What the runtime needs from an exported graph's sidecar (any of a ``cached`` pair)."""

    path: Path
    config: RelocVGGTConfig
    graph: str
    keyframe_range: tuple[int, int]       # (min, max) keyframes the graph accepts

    @classmethod
    def read(cls, path: str | Path) -> RelocSidecar:
        path = Path(path)
        side = read_sidecar(path)
        kf = side.get("keyframes", {})
        return cls(path, RelocVGGTConfig.from_dict(side["model"]), str(side["graph"]),
                   (int(kf.get("min", 1)), int(kf.get("max", 10**6))))

    def graph_path(self, graph: str) -> Path:
        """The file of ``graph`` exported together with this one (same prefix, same precision);
        this file itself for its own graph, whatever it was renamed to."""
        if graph == self.graph:
            return self.path
        name = self.path.name
        i = name.index(self.graph)
        return self.path.with_name(name[:i] + graph + name[i + len(self.graph):])


def preset_config(name: str, mask: str) -> RelocVGGTConfig:
    """Architectures for export checks and benchmarks (random weights unless loaded).

    ``tiny``: the model's CPU test preset (conv patches, C=64, 2 layers, 56x70 px).
    ``small``: the real layer types incl. the DINOv2 patch embed with a resampled positional
    table (C=128, 4 layers, 2 DINO layers, 84x112 px, 5.5 M parameters).
    ``vggt_1b``: the full VGGT-1B-sized model at 392x518 (about 1 B parameters without the
    depth/point/track heads).
    """
    if name == "tiny":
        return RelocVGGTConfig.tiny(mask=mask)
    if name == "small":
        vggt = VGGTConfig(img_size=112, embed_dim=128, depth=4, num_heads=4, camera_num_heads=4,
                          patch_embed="dinov2", dino_depth=2, dino_num_heads=4,
                          dpt_layers=(0, 1, 2, 3), dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                          track_features=16, track_hidden=32, track_corr_levels=4,
                          enable_depth=False, enable_point=False, enable_track=False)
        return RelocVGGTConfig(vggt=vggt, mask=mask, image_hw=(84, 112), t_freqs=4, rot_freqs=2,
                               fov_freqs=2)
    if name == "vggt_1b":
        return RelocVGGTConfig(mask=mask)
    raise ConfigError(f"preset must be one of {EXPORT_PRESETS}, got {name!r}")


def _image_shape(model: RelocVGGT) -> tuple[int, int, int]:
    h, w = model.config.image_hw
    return 3, h, w


class RelocFullGraph(ExportableGraph):
    """Dense or sparse mask: the whole ``[anchor, db…, query]`` sequence in one forward."""

    input_names = FULL_INPUTS
    output_names = POSE_OUTPUTS

    def __init__(self, model: RelocVGGT) -> None:
        super().__init__()
        self.model = model
        (self.graph_name,) = graph_names(model.config.mask)

    def input_shapes(self, num_keyframes: int) -> dict[str, tuple[int, ...]]:
        return {"images": (1, num_keyframes + 1, *_image_shape(self.model)),
                "known_pose_enc": (1, num_keyframes, 9)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"images": {1: "num_frames"}, "known_pose_enc": {1: KEYFRAME_AXIS},
                "pose_enc": {1: "num_frames"}}

    def model_config(self) -> dict:
        return self.model.config.to_dict()

    def forward(self, images: torch.Tensor, known_pose_enc: torch.Tensor) -> torch.Tensor:
        return self.model(images, known_pose_enc)["pose_enc"]


class RelocKeyframeGraph(ExportableGraph):
    """Cached mask, once per keyframe set: keyframes -> per-layer keys/values + camera tokens."""

    graph_name = KEYFRAME_GRAPH
    input_names = KEYFRAME_INPUTS
    output_names = KV_NAMES

    def __init__(self, model: RelocVGGT) -> None:
        super().__init__()
        self.model = model
        self.encoder = KeyframeEncoder(model)

    def input_shapes(self, num_keyframes: int) -> dict[str, tuple[int, ...]]:
        return {"keyframe_images": (1, num_keyframes, *_image_shape(self.model)),
                "known_pose_enc": (1, num_keyframes, 9)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"keyframe_images": {1: KEYFRAME_AXIS}, "known_pose_enc": {1: KEYFRAME_AXIS},
                "keys": {3: "num_kv_tokens"}, "values": {3: "num_kv_tokens"},
                "camera_tokens": {1: KEYFRAME_AXIS}}

    def model_config(self) -> dict:
        return self.model.config.to_dict()

    def forward(self, keyframe_images: torch.Tensor, known_pose_enc: torch.Tensor):
        return self.encoder(keyframe_images, known_pose_enc)


class RelocQueryGraph(ExportableGraph):
    """Cached mask, once per query image: query + cached keyframe K/V -> poses of all frames."""

    graph_name = QUERY_GRAPH
    input_names = QUERY_INPUTS
    output_names = POSE_OUTPUTS

    def __init__(self, model: RelocVGGT) -> None:
        super().__init__()
        self.model = model
        self.step = QueryStep(model)
        self.keyframes = RelocKeyframeGraph(model)
        with torch.no_grad():
            keys, _, cam = self.keyframes(*self.keyframes.example_inputs(1))
        self.kv_shape = tuple(keys.shape)           # [L, 1, heads, P, d] for K = 1
        self.cam_dim = int(cam.shape[-1])

    def input_shapes(self, num_keyframes: int) -> dict[str, tuple[int, ...]]:
        L, B, H, P, d = self.kv_shape
        kv = (L, B, H, num_keyframes * P, d)
        return {"query_image": (1, 1, *_image_shape(self.model)), "keys": kv, "values": kv,
                "camera_tokens": (1, num_keyframes, self.cam_dim)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"keys": {3: "num_kv_tokens"}, "values": {3: "num_kv_tokens"},
                "camera_tokens": {1: KEYFRAME_AXIS}, "pose_enc": {1: "num_frames"}}

    def model_config(self) -> dict:
        return self.model.config.to_dict()

    def example_inputs(self, num_keyframes: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """A real cache (the keyframe encoder's output on random keyframes), not random K/V."""
        kf_images, kf_poses = self.keyframes.example_inputs(num_keyframes, seed)
        query = torch.rand(self.input_shapes(num_keyframes)["query_image"],
                           generator=torch.Generator().manual_seed(seed + 1000)).to(kf_images.dtype)
        with torch.no_grad():
            keys, values, cam = self.keyframes(kf_images, kf_poses)
        return query, keys, values, cam

    def forward(self, query_image, keys, values, camera_tokens) -> torch.Tensor:
        return self.step(query_image, keys, values, camera_tokens)


@contextlib.contextmanager
def frozen_pos_embed(model: RelocVGGT) -> Iterator[None]:
    """While active, every ``pos_embed_for(H, W)`` of the model returns a buffer precomputed
    for the model's ``image_hw`` (it follows ``.half()``); restored on exit."""
    h, w = model.config.image_hw
    patched = []
    for module in model.modules():
        if callable(getattr(module, "pos_embed_for", None)) and isinstance(module, torch.nn.Module):
            with torch.no_grad():
                table = module.pos_embed_for(h, w).detach().clone()
            module.register_buffer("_export_pos_embed", table, persistent=False)
            module.pos_embed_for = types.MethodType(lambda self, H, W: self._export_pos_embed, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.pos_embed_for          # the class method is visible again
            del module._export_pos_embed


def graphs_for(model: RelocVGGT) -> list[ExportableGraph]:
    """The graphs to export for the model's mask mode (one, or two for ``cached``)."""
    model = model.eval()
    if model.config.mask == "cached":
        return [RelocKeyframeGraph(model), RelocQueryGraph(model)]
    return [RelocFullGraph(model)]


def export_reloc_vggt(model: RelocVGGT, out_dir: str | Path, cfg: ExportConfig = ExportConfig(), *,
                      prefix: str = "", overwrite: bool = False) -> list[Path]:
    """Export every graph of ``model`` into ``out_dir`` as ``<prefix><graph>.onnx`` (+ sidecars)."""
    out_dir = Path(out_dir)
    paths = []
    with frozen_pos_embed(model):
        for graph in graphs_for(model):
            name = graph_file(prefix, graph.graph_name, cfg.precision)
            paths.append(export_onnx(graph, out_dir / name, cfg, overwrite=overwrite,
                                     extra_sidecar={"mask": model.config.mask}))
    return paths


# -- runtime -----------------------------------------------------------------------------------

class RelocNetwork(Protocol):
    """A runnable Reloc-VGGT: the eager model or exported graphs on an engine.

    Inputs are CPU float tensors (``kf_images [1,K,3,H,W]``, ``known [1,K,9]``, ``query
    [1,1,3,H,W]``); outputs are float64 pose encodings ``[K+1, 9]``. Under the ``cached`` mask
    :meth:`encode_keyframes` runs once per keyframe set (the caller keeps its result in one
    :class:`~reloc_vggt_ros.model.kv_cache.KeyframeCache`) and :meth:`query` per image.
    """

    name: str
    config: RelocVGGTConfig
    keyframe_range: tuple[int, int]

    def full(self, kf_images: torch.Tensor, known: torch.Tensor, query: torch.Tensor) -> np.ndarray: ...

    def encode_keyframes(self, kf_images: torch.Tensor, known: torch.Tensor) -> Any: ...

    def query(self, encoded: Any, query: torch.Tensor) -> np.ndarray: ...


def _pose_rows(pose_enc: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(pose_enc, torch.Tensor):
        pose_enc = pose_enc.float().cpu().numpy()
    return np.asarray(pose_enc[0], dtype=np.float64)


class TorchRelocNetwork:
    """The eager model on ``device``; its keyframe encoding (:class:`KeyframeKV`) stays there."""

    name = "torch"
    keyframe_range = (1, 10**6)

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        self.model = model.eval()
        self.config: RelocVGGTConfig = model.config
        self.device = device

    @torch.inference_mode()
    def full(self, kf_images: torch.Tensor, known: torch.Tensor, query: torch.Tensor) -> np.ndarray:
        images = torch.cat([kf_images, query], dim=1).to(self.device)
        return _pose_rows(self.model(images, known.to(self.device))["pose_enc"])

    @torch.inference_mode()
    def encode_keyframes(self, kf_images: torch.Tensor, known: torch.Tensor) -> KeyframeKV:
        return self.model.encode_keyframes(kf_images.to(self.device), known.to(self.device))

    @torch.inference_mode()
    def query(self, encoded: KeyframeKV, query: torch.Tensor) -> np.ndarray:
        return _pose_rows(self.model.forward_query(encoded, query.to(self.device))["pose_enc"])


class EngineRelocNetwork:
    """Exported graph(s) behind inference engines (host arrays in and out).

    ``path`` is any graph of the export (for ``cached`` either of the pair: the other is found
    beside it); ``kind`` as :func:`~.factory.resolve_engine_kind` gives it, ``fallback`` as
    :func:`~.factory.make_engine` takes it.
    """

    def __init__(self, path: Path, kind: str | None = None, fallback: tuple[str, ...] = ()) -> None:
        kind = kind or resolve_engine_kind("auto", path)
        if "torch" in (kind, *fallback):
            raise ConfigError(f"the torch engine runs a .safetensors/.pt checkpoint, not the exported graph "
                              f"{path.name}: drop 'torch' from engine_kind/engine_fallback")
        side = RelocSidecar.read(path)
        self.config = side.config
        self.keyframe_range = side.keyframe_range
        self.engines = {g: make_engine(kind, engine_sources(side.graph_path(g)), fallback=fallback)
                        for g in graph_names(self.config.mask)}
        # e.g. "onnxruntime-cpu"; two names only if one graph of a pair fell back
        self.name = "+".join(dict.fromkeys(e.name for e in self.engines.values()))

    def full(self, kf_images: torch.Tensor, known: torch.Tensor, query: torch.Tensor) -> np.ndarray:
        (engine,) = self.engines.values()
        images = torch.cat([kf_images, query], dim=1)
        return _pose_rows(engine.run(dict(zip(FULL_INPUTS, (images.numpy(), known.numpy()))))[POSE_OUTPUTS[0]])

    def encode_keyframes(self, kf_images: torch.Tensor, known: torch.Tensor) -> dict[str, np.ndarray]:
        out = self.engines[KEYFRAME_GRAPH].run(dict(zip(KEYFRAME_INPUTS, (kf_images.numpy(), known.numpy()))))
        return {n: out[n] for n in KV_NAMES}

    def query(self, encoded: dict[str, np.ndarray], query: torch.Tensor) -> np.ndarray:
        out = self.engines[QUERY_GRAPH].run({QUERY_INPUTS[0]: query.numpy(), **encoded})
        return _pose_rows(out[POSE_OUTPUTS[0]])
