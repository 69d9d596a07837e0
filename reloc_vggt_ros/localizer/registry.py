"""Backend registry: the node, ``db build`` and the benchmarks create localizers only through here.

Adding a backend is one line in :data:`FACTORIES` (and one in :data:`INDEXERS` if it precomputes
per-keyframe data). Factories import their backend lazily so that, e.g., the geometric backend
never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..keyframes import KeyframeStore
    from .base import Localizer

__all__ = ["FACTORIES", "INDEXERS", "make_localizer", "index_database", "backend_names"]


def _geometric(store: "KeyframeStore", **options: Any) -> "Localizer":
    from .geometric.localizer import GeometricConfig, GeometricLocalizer

    return GeometricLocalizer(store, GeometricConfig.from_options(**options))


def _index_geometric(store: "KeyframeStore", **options: Any) -> None:
    from .geometric.localizer import GeometricConfig, index_store

    index_store(store, GeometricConfig.from_options(**options))


def _reloc_vggt(store: "KeyframeStore", **options: Any) -> "Localizer":
    from .vggt.reloc_vggt import RelocVGGTLocalizer, RelocVGGTLocalizerConfig
    from .vggt.common import config_from_options

    return RelocVGGTLocalizer(store, config_from_options(RelocVGGTLocalizerConfig, "reloc_vggt", options))


def _vggt_align(store: "KeyframeStore", **options: Any) -> "Localizer":
    from .vggt.vggt_align import VGGTAlignConfig, VGGTAlignLocalizer
    from .vggt.common import config_from_options

    return VGGTAlignLocalizer(store, config_from_options(VGGTAlignConfig, "vggt_align", options))


# name -> factory(store, **options) -> Localizer
FACTORIES: dict[str, Callable[..., "Localizer"]] = {
    "geometric": _geometric,
    "reloc_vggt": _reloc_vggt,    # options: engine/weights (required), top_k, device, ...
    "vggt_align": _vggt_align,
}

# name -> indexer(store, **options) -> None; backends without map-side data need no entry
INDEXERS: dict[str, Callable[..., None]] = {
    "geometric": _index_geometric,
}


def backend_names() -> list[str]:
    return sorted(FACTORIES)


def make_localizer(name: str, store: "KeyframeStore", **options: Any) -> "Localizer":
    """The backend ``name`` over ``store``; ConfigError for an unknown name or option."""
    if name not in FACTORIES:
        raise ConfigError(f"unknown localizer backend {name!r}; available: {backend_names()}")
    return FACTORIES[name](store, **options)


def index_database(store: "KeyframeStore", backend_name: str, **options: Any) -> None:
    """Precompute ``backend_name``'s per-keyframe data into ``store`` (no-op if it has none)."""
    if backend_name not in FACTORIES:
        raise ConfigError(f"unknown localizer backend {backend_name!r}; available: {backend_names()}")
    indexer = INDEXERS.get(backend_name)
    if indexer is not None:
        indexer(store, **options)
