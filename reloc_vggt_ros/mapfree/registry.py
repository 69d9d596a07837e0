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
           "make_mapfree_config", "make_mapfree_localizer"]


@dataclass(frozen=True)
class MapFreeSpec:
    """How to configure and build one map-free backend (callables import lazily)."""

    config: Callable[[], type]
    build: Callable[[Any], MapFreeLocalizer]
    weights_free: bool = True


def _geometric_config() -> type:
    from .geometric import GeometricMapFreeConfig

    return GeometricMapFreeConfig


def _geometric_build(config: Any) -> MapFreeLocalizer:
    from .geometric import GeometricMapFree

    return GeometricMapFree(config)


MAPFREE_BACKENDS: dict[str, MapFreeSpec] = {
    "geometric": MapFreeSpec(_geometric_config, _geometric_build),
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
    return from_mapping(_spec(name).config(), dict(options or {}), f"mapfree.{name}")


def make_mapfree_localizer(name: str = DEFAULT_MAPFREE_BACKEND, options: Mapping[str, Any] | None = None
                           ) -> MapFreeLocalizer:
    return _spec(name).build(make_mapfree_config(name, options))
