"""Weights-free geometric backend: one module per stage, ``localizer.py`` runs them in order."""

from .indexing import index_store
from .localizer import PRESETS, GeometricConfig, GeometricLocalizer

__all__ = ["GeometricConfig", "GeometricLocalizer", "PRESETS", "index_store"]
