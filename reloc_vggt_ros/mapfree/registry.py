"""Map-free backend registry: name -> config type and factory (the CLI, the bench and the node
create map-free localizers only through here; learned backends add their own entry)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from ..config import from_mapping
from ..errors import ConfigError
from .base import MapFreeLocalizer

__all__ = ["MapFreeSpec", "MAPFREE_BACKENDS", "DEFAULT_MAPFREE_BACKEND", "mapfree_backend_names",
           "make_mapfree_config", "make_mapfree_localizer", "weights_options"]


@dataclass(frozen=True)
class MapFreeSpec:
    """How to configure and build one map-free backend (callables import lazily)."""

    config: Callable[[], type]
    build: Callable[[Any], MapFreeLocalizer]
    weights_free: bool = True
    base: Callable[[], Any] | None = None      # the config the options override (a preset); None: defaults


def _geometric_config() -> type:
    from .geometric import GeometricMapFreeConfig

    return GeometricMapFreeConfig


def _geometric_build(config: Any) -> MapFreeLocalizer:
    from .geometric import GeometricMapFree

    return GeometricMapFree(config)


def _depth_pnp_config() -> type:
    from .depth_pnp import DepthPnPConfig

    return DepthPnPConfig


def _depth_pnp_build(config: Any) -> MapFreeLocalizer:
    from .depth_pnp import DepthPnPLocalizer

    return DepthPnPLocalizer(config)


def _point_map_config() -> type:
    from .learned import PointMapConfig

    return PointMapConfig


def _point_map_build(config: Any) -> MapFreeLocalizer:
    from .learned import PointMapLocalizer

    return PointMapLocalizer(config)


def _reloc_vggt_k1_config() -> type:
    from .learned import RelocVGGTK1Config

    return RelocVGGTK1Config


def _reloc_vggt_k1_build(config: Any) -> MapFreeLocalizer:
    from .learned import RelocVGGTK1Localizer

    return RelocVGGTK1Localizer(config)


MAPFREE_BACKENDS: dict[str, MapFreeSpec] = {
    "geometric": MapFreeSpec(_geometric_config, _geometric_build),
    "depth_pnp": MapFreeSpec(_depth_pnp_config, _depth_pnp_build),
    # learned (mapfree/learned.py): VGGT point-map alignment, its MASt3R-style PnP variant, Reloc-VGGT K = 1
    "vggt_pointmap": MapFreeSpec(_point_map_config, _point_map_build, weights_free=False,
                                 base=lambda: _point_map_config()(pose_from="camera")),
    "vggt_pnp": MapFreeSpec(_point_map_config, _point_map_build, weights_free=False,
                            base=lambda: _point_map_config()(pose_from="pnp")),
    "reloc_vggt_k1": MapFreeSpec(_reloc_vggt_k1_config, _reloc_vggt_k1_build, weights_free=False),
}
DEFAULT_MAPFREE_BACKEND = "geometric"      # the best weights-free one


def mapfree_backend_names() -> list[str]:
    return sorted(MAPFREE_BACKENDS)


def _spec(name: str) -> MapFreeSpec:
    if name not in MAPFREE_BACKENDS:
        raise ConfigError(f"unknown map-free backend {name!r}; available: {mapfree_backend_names()}")
    return MAPFREE_BACKENDS[name]


def make_mapfree_config(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Backend ``name``'s config from nested options (unknown keys rejected, valid ones listed)."""
    spec = _spec(name)
    return from_mapping(spec.config(), dict(options or {}), f"mapfree.{name}", base=spec.base() if spec.base else None)


def make_mapfree_localizer(name: str = DEFAULT_MAPFREE_BACKEND, options: Mapping[str, Any] | None = None
                           ) -> MapFreeLocalizer:
    return _spec(name).build(make_mapfree_config(name, options))


def weights_options(name: str, weights: str) -> dict[str, Any]:
    """``{"weights": weights}`` for a learned backend ({} when ``weights`` is ''); ConfigError for
    weights given to a weights-free one."""
    if not weights:
        return {}
    if _spec(name).weights_free:
        raise ConfigError(f"the map-free backend {name!r} takes no weights (engine {weights!r})")
    return {"weights": weights}
