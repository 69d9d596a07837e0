"""Weights-free geometric backend: one module per stage, ``localizer.py`` runs them in order."""

from .config import PRESETS, GeometricConfig, legacy_options
from .indexing import index_store
from .localizer import GeometricLocalizer
from .rig import RigCamera, RigFrame

__all__ = ["GeometricConfig", "GeometricLocalizer", "PRESETS", "RigCamera", "RigFrame", "index_store",
           "legacy_options"]
