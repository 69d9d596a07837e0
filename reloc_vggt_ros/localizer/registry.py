"""Backend registry: the node, ``db build`` and the benchmarks create localizers only through here.

Each backend is one :class:`BackendSpec` in :data:`BACKENDS`: its config dataclass (nested,
frozen, built with :func:`reloc_vggt_ros.config.from_mapping`), its named presets, its factory
and, if it precomputes per-keyframe data, its indexer. Specs import their backend lazily so that,
e.g., the geometric backend never imports torch.

Options are one nested mapping per backend (``{"preset": "realtime", "query": {...}}``); the
keys every caller may pass whatever the backend (``top_k``, ``engine``, ``engine_kind``,
``engine_fallback``) are mapped onto the backend's own field names by ``aliases``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..config import from_mapping, merge, unflatten
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..keyframes import KeyframeStore
    from .base import Localizer

__all__ = ["BackendSpec", "BACKENDS", "backend_names", "config_type", "presets", "make_config",
           "legacy_options", "make_localizer", "index_database"]


@dataclass(frozen=True)
class BackendSpec:
    """How to configure, build and index one backend (callables import lazily)."""

    config: Callable[[], type]
    build: Callable[["KeyframeStore", Any], "Localizer"]
    presets: Callable[[], Mapping[str, Any]] = dict
    index: Callable[["KeyframeStore", Any, int], None] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)      # caller key -> (dotted) config field
    # old flat option names (the deprecated YAML-string form) -> the nested mapping
    legacy: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None


def _geometric_config() -> type:
    from .geometric import GeometricConfig

    return GeometricConfig


def _geometric_presets() -> Mapping[str, Any]:
    from .geometric import PRESETS

    return PRESETS


def _geometric_build(store: "KeyframeStore", config: Any) -> "Localizer":
    from .geometric import GeometricLocalizer

    return GeometricLocalizer(store, config)


def _geometric_index(store: "KeyframeStore", config: Any, jobs: int = 1) -> None:
    from .geometric import index_store

    index_store(store, config.map, jobs=jobs)


def _geometric_legacy(flat: Mapping[str, Any]) -> dict[str, Any]:
    from .geometric import legacy_options

    return legacy_options(flat)


def _reloc_vggt_config() -> type:
    from .vggt.reloc_vggt import RelocVGGTLocalizerConfig

    return RelocVGGTLocalizerConfig


def _reloc_vggt_build(store: "KeyframeStore", config: Any) -> "Localizer":
    from .vggt.reloc_vggt import RelocVGGTLocalizer

    return RelocVGGTLocalizer(store, config)


def _vggt_align_config() -> type:
    from .vggt.vggt_align import VGGTAlignConfig

    return VGGTAlignConfig


def _vggt_align_build(store: "KeyframeStore", config: Any) -> "Localizer":
    from .vggt.vggt_align import VGGTAlignLocalizer

    return VGGTAlignLocalizer(store, config)


def _pairwise_config() -> type:
    from .pairwise import PairwiseConfig

    return PairwiseConfig


def _pairwise_build(store: "KeyframeStore", config: Any) -> "Localizer":
    from .pairwise import PairwiseLocalizer

    return PairwiseLocalizer(store, config)


_VGGT_ALIASES = {"top_k": "num_keyframes", "engine": "weights"}

BACKENDS: dict[str, BackendSpec] = {
    "geometric": BackendSpec(_geometric_config, _geometric_build, _geometric_presets, _geometric_index,
                             aliases={"top_k": "query.top_k"}, legacy=_geometric_legacy),
    "reloc_vggt": BackendSpec(_reloc_vggt_config, _reloc_vggt_build, aliases=_VGGT_ALIASES),
    "vggt_align": BackendSpec(_vggt_align_config, _vggt_align_build, aliases=_VGGT_ALIASES),
    # the geometric map's blobs (config.map): _geometric_index indexes them alike
    "pairwise": BackendSpec(_pairwise_config, _pairwise_build, index=_geometric_index),
}


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def _spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise ConfigError(f"unknown localizer backend {name!r}; available: {backend_names()}")
    return BACKENDS[name]


def config_type(name: str) -> type:
    """The config dataclass of backend ``name``."""
    return _spec(name).config()


def presets(name: str) -> Mapping[str, Any]:
    """Preset name -> config instance of backend ``name`` (empty if it has none)."""
    return _spec(name).presets()


def make_config(name: str, **options: Any) -> Any:
    """Backend ``name``'s config: preset ``options["preset"]`` (default ``"default"`` where the
    backend has presets) overridden by the other options (nested mappings); ConfigError names
    the backend and lists the valid keys of an unknown one."""
    spec = _spec(name)
    opts = dict(options)
    for alias, target in spec.aliases.items():
        if alias in opts:
            value = opts.pop(alias)
            nested = unflatten({target: value})       # a dotted target names a field of a section
            *section, leaf = target.split(".")
            node: Any = opts
            for part in section:
                node = node.get(part, {}) if isinstance(node, Mapping) else {}
            if isinstance(node, Mapping) and leaf in node:
                raise ConfigError(f"{name}: {alias!r} and {target!r} set the same option; give one")
            opts = merge(opts, nested)
    preset = opts.pop("preset", None)
    table = spec.presets()
    if preset is not None and preset not in table:
        raise ConfigError(f"unknown {name} preset {preset!r}; choose from {sorted(table)}" if table
                          else f"the {name} backend has no presets (got preset {preset!r})")
    base = table.get(preset or "default")
    return from_mapping(spec.config(), opts, name, base=base)


def legacy_options(name: str, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nested options from the old flat option names (deprecated ``backend_options`` form)."""
    spec = _spec(name)
    return spec.legacy(flat) if spec.legacy is not None else dict(flat)


def _config(name: str, options: dict[str, Any]) -> Any:
    config = options.pop("config", None)
    if config is not None:
        if options:
            raise ConfigError(f"{name}: pass either config= or options, not both (got {sorted(options)})")
        if not isinstance(config, config_type(name)):
            raise ConfigError(f"{name}: config must be a {config_type(name).__name__}, got {type(config).__name__}")
        return config
    return make_config(name, **options)


def make_localizer(name: str, store: "KeyframeStore", **options: Any) -> "Localizer":
    """The backend ``name`` over ``store``, from options (see :func:`make_config`) or ``config=``."""
    return _spec(name).build(store, _config(name, options))


def index_database(store: "KeyframeStore", backend_name: str, jobs: int = 1, **options: Any) -> None:
    """Precompute ``backend_name``'s per-keyframe data into ``store`` (no-op if it has none);
    ``jobs`` > 1 extracts the missing per-keyframe data in that many worker processes."""
    spec = _spec(backend_name)
    config = _config(backend_name, options)
    if spec.index is not None:
        spec.index(store, config, jobs)
