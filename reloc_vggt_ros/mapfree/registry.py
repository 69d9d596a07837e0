"""Map-free backend registry: name -> config type + factory (the CLI, benches and node use it).

Options are one nested mapping per backend, validated by :func:`reloc_vggt_ros.config.from_mapping`
(unknown keys listed); ``engine`` is accepted for every learned backend as its ``weights``.
Specs import their backend lazily, so the weights-free ones never import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import from_mapping
from ..errors import ConfigError
from .base import MapFreeLocalizer

__all__ = ["MapFreeSpec", "MAPFREE_BACKENDS", "mapfree_backend_names", "make_mapfree_config",
           "make_mapfree_localizer"]


@dataclass(frozen=True)
class MapFreeSpec:
    """How to configure and build one map-free backend (callables import lazily)."""

    config: Callable[[], type]
    build: Callable[[Any], MapFreeLocalizer]
    base: Callable[[], Any] | None = None         # the config the options override (default: the type's)
    learned: bool = False                         # takes ``engine`` as its weights


def _depth_pnp() -> MapFreeSpec:
    def config() -> type:
        from .depth_pnp import DepthPnPConfig
        return DepthPnPConfig

    def build(cfg: Any) -> MapFreeLocalizer:
        from .depth_pnp import DepthPnPLocalizer
        return DepthPnPLocalizer(cfg)
    return MapFreeSpec(config, build)


def _point_map(pose_from: str) -> MapFreeSpec:
    def config() -> type:
        from .learned import PointMapConfig
        return PointMapConfig

    def build(cfg: Any) -> MapFreeLocalizer:
        from .learned import PointMapLocalizer
        return PointMapLocalizer(cfg)
    return MapFreeSpec(config, build, base=lambda: config()(pose_from=pose_from), learned=True)


def _reloc_vggt_k1() -> MapFreeSpec:
    def config() -> type:
        from .learned import RelocVGGTK1Config
        return RelocVGGTK1Config

    def build(cfg: Any) -> MapFreeLocalizer:
        from .learned import RelocVGGTK1Localizer
        return RelocVGGTK1Localizer(cfg)
    return MapFreeSpec(config, build, learned=True)


MAPFREE_BACKENDS: dict[str, MapFreeSpec] = {
    "depth_pnp": _depth_pnp(),
    "vggt_pointmap": _point_map("camera"),
    "vggt_pnp": _point_map("pnp"),
    "reloc_vggt_k1": _reloc_vggt_k1(),
}


def mapfree_backend_names() -> list[str]:
    return sorted(MAPFREE_BACKENDS)


def _spec(name: str) -> MapFreeSpec:
    if name not in MAPFREE_BACKENDS:
        raise ConfigError(f"unknown map-free backend {name!r}; available: {mapfree_backend_names()}")
    return MAPFREE_BACKENDS[name]


def make_mapfree_config(name: str, **options: Any) -> Any:
    """Backend ``name``'s config from nested options (``engine`` = ``weights`` of a learned one)."""
    spec = _spec(name)
    opts = dict(options)
    engine = opts.pop("engine", None)
    if engine:
        if not spec.learned:
            raise ConfigError(f"the map-free backend {name!r} takes no weights (engine {engine!r})")
        if "weights" in opts:
            raise ConfigError(f"{name}: 'engine' and 'weights' set the same option; give one")
        opts["weights"] = engine
    return from_mapping(spec.config(), opts, name, base=spec.base() if spec.base else None)


def make_mapfree_localizer(name: str, config: Any = None, **options: Any) -> MapFreeLocalizer:
    """The map-free backend ``name`` from ``config`` or from options (see :func:`make_mapfree_config`)."""
    if config is not None and options:
        raise ConfigError(f"{name}: pass either config= or options, not both (got {sorted(options)})")
    return _spec(name).build(config if config is not None else make_mapfree_config(name, **options))
