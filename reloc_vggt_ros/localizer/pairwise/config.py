"""Settings of the ``pairwise`` backend (one frozen dataclass; built through the registry)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import setting
from ...errors import ConfigError
from ..geometric.config import FeatureConfig, MapSettings
from ..geometric.relative_pose import TwoViewSettings

__all__ = ["PairwiseConfig"]


@dataclass(frozen=True)
class PairwiseConfig:
    """Query -> top-k keyframes relative poses, rotation averaging, intersection of the rays.

    ``map`` is the geometric backend's map section: the keyframe features, vocabulary and VLAD
    are the same blobs (a database indexed for ``geometric`` serves ``pairwise`` as it is).
    """

    map: MapSettings = setting(factory=MapSettings, doc="keyframe features / VLAD (the geometric map)")
    features: FeatureConfig = setting(factory=FeatureConfig, doc="query features")
    top_k: int = setting(12, "keyframes retrieved (VLAD) and paired with the query")
    two_view: TwoViewSettings = setting(factory=lambda: TwoViewSettings(guided=False),
                                        doc="matching and essential matrix per pair")
    refine: bool = setting(True, "refine the fused pose on all inlier matches of the kept pairs")
    max_rotation_deviation_deg: float = setting(3.0, "a pair's rotation this far from the mean is an outlier")
    max_ray_angle_deg: float = setting(3.0, "a pair's direction this far from the intersection is an outlier")
    direction_sigma_deg: float = setting(0.1, "floor of a pair's translation-direction error (1 sigma)")
    rotation_sigma_deg: float = setting(0.05, "floor of the fused rotation's error (1 sigma)")
    min_pairs: int = setting(2, "consistent pairs an OK pose needs (>= 2: one ray has no scale)")
    min_ray_angle_deg: float = setting(2.0, "the rays must span at least this angle (else no depth along them)")
    min_confidence: float = setting(0.5, "confidence an OK pose needs")
    inliers_scale: float = setting(40.0, "confidence 1 - exp(-median pair inliers / inliers_scale)")

    def __post_init__(self) -> None:
        if self.top_k < 2:
            raise ConfigError(f"top_k must be >= 2 (rays from >= 2 keyframes fix the position), got {self.top_k}")
        if self.min_pairs < 2:
            raise ConfigError(f"min_pairs must be >= 2, got {self.min_pairs}")
        for name in ("max_rotation_deviation_deg", "max_ray_angle_deg", "direction_sigma_deg",
                     "rotation_sigma_deg", "min_ray_angle_deg", "inliers_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
