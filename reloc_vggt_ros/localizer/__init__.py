"""Pipelines that turn (query image, keyframes) into a pose with covariance."""

from .base import Localizer, PosePrior, RelocResult, RelocStatus

__all__ = ["Localizer", "PosePrior", "RelocResult", "RelocStatus"]
