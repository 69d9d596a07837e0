"""Settings of the geometric backend: one nested frozen dataclass, its presets, the legacy names.

A leaf module (it imports nothing from the pipeline), so every stage can take its own section:

* ``map`` (:class:`MapSettings`): what ``db build`` computes once per keyframe (features,
  triangulation, vocabulary). :class:`FeatureConfig` and :class:`TriangulationConfig` keep
  their field names and values: the map blobs' fingerprints (``indexing.fingerprints``) are
  computed from them, so existing databases stay valid.
* ``query`` (:class:`QuerySettings`): per query, up to the refined pose: its own features
  (always explicit; the presets fill them), retrieval, matching, PnP, weighted refinement,
  covariance, the relative-pose fallback.
* ``lk`` (:class:`LKRefineSettings`): the Lucas-Kanade sub-pixel refinement of the inliers
  (``lk_refine``). Named ``lk``, not ``tracking``: camera-rate tracking state will take that name.
* ``acceptance`` (:class:`AcceptanceSettings`): when a pose is OK, low-confidence or rejected,
  and the terms of its confidence (``judge``).

Configs are built only through :func:`reloc_vggt_ros.config.from_mapping` with a preset as
``base`` (``registry.make_config("geometric", preset="realtime", query={...})``).
:func:`legacy_options` maps the old flat option names (the node's deprecated YAML-string form).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ...config import merge, require_positive, setting, unflatten
from ...errors import ConfigError

__all__ = ["FeatureConfig", "TriangulationConfig", "MapSettings", "QuerySettings", "LKRefineSettings",
           "AcceptanceSettings", "GeometricConfig", "PRESETS", "legacy_options"]


@dataclass(frozen=True)
class FeatureConfig:
    """SIFT / RootSIFT detector settings (``features.extract_features``)."""

    max_keypoints: int = setting(4096, "strongest keypoints kept")
    max_edge_px: int = setting(1600, "longest image edge the detector sees (0 = native)")
    root_sift: bool = setting(True, "RootSIFT instead of L2-normalised SIFT")
    contrast_threshold: float = setting(0.02, "SIFT contrast threshold")
    edge_threshold: float = setting(10.0, "SIFT edge threshold")
    precise_upscale: bool = setting(True, "exact 2x upscale (OpenCV's default shifts keypoints by ~0.25 px)")
    # OpenCV always doubles the image it is given (2.0, ~3/4 of the detector's work is that first
    # octave); below 2 the working image is shrunk further so that the doubled one is at most
    # this factor of the input, e.g. 1.25 for a 640x480 input = SIFT on 400x300 -> first octave
    # 800x600. An input already reduced by max_edge_px to <= max_upsample/2 is unaffected.
    max_upsample: float = setting(2.0, "finest pyramid level relative to the input image, in [1, 2]")
    octave_layers: int = setting(3, "DoG layers per octave (OpenCV nOctaveLayers)")

    def __post_init__(self) -> None:
        if self.max_keypoints < 16:
            raise ConfigError(f"max_keypoints must be >= 16, got {self.max_keypoints}")
        if self.max_edge_px != 0 and self.max_edge_px < 64:
            raise ConfigError(f"max_edge_px must be 0 (native) or >= 64, got {self.max_edge_px}")
        if not 0.0 < self.contrast_threshold < 1.0:
            raise ConfigError(f"contrast_threshold must be in (0, 1), got {self.contrast_threshold}")
        if not 1.0 <= self.max_upsample <= 2.0:
            raise ConfigError(f"max_upsample must be in [1, 2], got {self.max_upsample}")
        if not 1 <= self.octave_layers <= 8:
            raise ConfigError(f"octave_layers must be in [1, 8], got {self.octave_layers}")
        if self.edge_threshold <= 1.0:
            raise ConfigError(f"edge_threshold must be > 1, got {self.edge_threshold}")


@dataclass(frozen=True)
class TriangulationConfig:
    """Map points per keyframe from its neighbours (``triangulation``)."""

    max_neighbours: int = setting(8, "neighbour keyframes a keyframe is triangulated with")
    max_view_angle_deg: float = setting(75.0, "optical axes further apart than this share too little")
    match_ratio: float = setting(0.8, "ratio test of keyframe-keyframe matches")
    max_epipolar_px: float = setting(2.0, "Sampson distance allowed under the known poses (px)")
    max_reproj_px: float = setting(2.0, "reprojection error allowed per view (px)")
    min_tri_angle_deg: float = setting(1.5, "smallest triangulation angle of a point")
    # A neighbour pair whose median Sampson distance exceeds this factor times the map's median
    # pair value is inconsistent (0 = no check); judged only with >= min_pair_matches matches.
    pair_consistency_factor: float = setting(2.5, "inconsistent pair: median Sampson > this x the map's (0 = off)")
    min_pair_matches: int = setting(30, "matches a pair needs to be judged consistent or not")
    reanchor: bool = setting(True, "re-anchor inconsistent neighbours instead of dropping them")
    # Large maps: a keyframe 10 km away shares no point with this one, but without a limit it is
    # still chosen when too few near ones look the same way (and its pair is matched for nothing).
    max_neighbour_distance_m: float = setting(0.0, "never choose neighbours farther than this (m; 0 = no limit)")

    def __post_init__(self) -> None:
        if self.max_neighbours < 1:
            raise ConfigError(f"max_neighbours must be >= 1, got {self.max_neighbours}")
        if not 0.0 < self.max_view_angle_deg <= 180.0:
            raise ConfigError(f"max_view_angle_deg must be in (0, 180], got {self.max_view_angle_deg}")
        if not 0.0 < self.match_ratio <= 1.0:
            raise ConfigError(f"match_ratio must be in (0, 1], got {self.match_ratio}")
        for name in ("max_epipolar_px", "max_reproj_px"):
            if getattr(self, name) <= 0.0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_tri_angle_deg < 90.0:
            raise ConfigError(f"min_tri_angle_deg must be in [0, 90), got {self.min_tri_angle_deg}")
        if self.pair_consistency_factor != 0.0 and self.pair_consistency_factor <= 1.0:
            raise ConfigError("pair_consistency_factor must be 0 (off) or > 1, got "
                              f"{self.pair_consistency_factor}")
        if not self.max_neighbour_distance_m >= 0.0:
            raise ConfigError(f"max_neighbour_distance_m must be >= 0 (0 = no limit), got {self.max_neighbour_distance_m}")
        if self.min_pair_matches < 8:
            raise ConfigError(f"min_pair_matches must be >= 8, got {self.min_pair_matches}")


@dataclass(frozen=True)
class MapSettings:
    """Map side: computed once per keyframe and stored as blobs (``indexing``)."""

    features: FeatureConfig = setting(factory=FeatureConfig, doc="keyframe features")
    triangulation: TriangulationConfig = setting(factory=TriangulationConfig, doc="keyframe points")
    vocabulary_words: int = setting(64, "VLAD visual words (k-means over the map's descriptors)")
    max_points_per_keyframe: int = setting(0, "match only the N points seen in most views (0 = all)")
    # Large maps (none of these changes a stored blob: no re-index when they change)
    vocabulary_growth: float = setting(2.0, "retrain the vocabulary (and every VLAD) once the map has this many "
                                            "times the keyframes it was trained on (0 = never)")
    cache_mb: float = setting(512.0, "keyframe features and points held for queries (MB; least recently "
                                     "used dropped, reloaded from the database on demand)")
    memory_budget_mb: float = setting(2048.0, "memory the map may hold: the cache plus what stays loaded "
                                              "(global index, poses, graph); a larger map is refused at open")
    exact_index_max: int = setting(2000, "maps up to this many keyframes search VLAD exactly; larger ones "
                                         "through inverted lists (faiss IVF, 8-bit codes), re-ranked exactly")
    index_probe: int = setting(8, "inverted lists the approximate VLAD index scans per query")

    def __post_init__(self) -> None:
        if self.vocabulary_words < 1:
            raise ConfigError(f"vocabulary_words must be >= 1, got {self.vocabulary_words}")
        if self.max_points_per_keyframe < 0:
            raise ConfigError(f"max_points_per_keyframe must be >= 0, got {self.max_points_per_keyframe}")
        if self.vocabulary_growth != 0.0 and self.vocabulary_growth <= 1.0:
            raise ConfigError(f"vocabulary_growth must be 0 (never) or > 1, got {self.vocabulary_growth}")
        if not 0.0 < self.cache_mb <= self.memory_budget_mb:
            raise ConfigError(f"cache_mb must be > 0 and <= memory_budget_mb ({self.memory_budget_mb}), "
                              f"got {self.cache_mb}")
        if self.exact_index_max < 1 or self.index_probe < 1:
            raise ConfigError(f"exact_index_max and index_probe must be >= 1, got {self.exact_index_max}, "
                              f"{self.index_probe}")


@dataclass(frozen=True)
class QuerySettings:
    """Query side, from the image to the refined pose and its covariance."""

    features: FeatureConfig = setting(factory=FeatureConfig, doc="query features (presets set them)")
    top_k: int = setting(8, "keyframes retrieved per query")
    match_ratio: float = setting(0.8, "ratio test of the 2D-3D matches")
    # retrieved keyframes matched concurrently (Python threads, each product on one BLAS thread:
    # the threads sleep when done, unlike OpenBLAS's own workers, which spin)
    match_threads: int = setting(1, "threads matching the retrieved keyframes, 1..16")
    pnp_max_reproj_px: float = setting(4.0, "RANSAC inlier threshold (px)")
    # finer SIFT keypoints are localised better (pnp.keypoint_sigma_px); the covariance is weighted alike
    scale_weighted: bool = setting(False, "refine with each match weighted by its keypoint's size")
    # Map errors (keyframe poses, triangulation) are shared by many correspondences, so the
    # information stops growing like the inlier count: the PnP covariance is scaled by
    # max(1, inliers / max_independent_inliers). 0 disables (pure 2D-noise covariance).
    max_independent_inliers: int = setting(100, "inliers beyond which the covariance stops shrinking (0 = off)")
    relative_fallback: bool = setting(True, "essential-matrix fallback when the map has too few points")
    fallback_min_inliers: int = setting(30, "inliers per keyframe the fallback needs")

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.match_ratio <= 1.0:
            raise ConfigError(f"match_ratio must be in (0, 1], got {self.match_ratio}")
        if not 1 <= self.match_threads <= 16:
            raise ConfigError(f"match_threads must be in [1, 16], got {self.match_threads}")
        if self.pnp_max_reproj_px <= 0:
            raise ConfigError(f"pnp_max_reproj_px must be > 0, got {self.pnp_max_reproj_px}")
        if self.max_independent_inliers < 0:
            raise ConfigError(f"max_independent_inliers must be >= 0, got {self.max_independent_inliers}")
        if self.fallback_min_inliers < 5:
            raise ConfigError(f"fallback_min_inliers must be >= 5, got {self.fallback_min_inliers}")


@dataclass(frozen=True)
class LKRefineSettings:
    """Lucas-Kanade refinement of the PnP inliers (``lk_refine``); needs ``query.scale_weighted``.

    Keyframe images are decoded on first use, the most recently used kept up to ``cache_mb``
    (grayscale, 0.3 MB per 640x480 keyframe).
    """

    enabled: bool = setting(False, "track the inliers' keyframe pixels into the query and refine on them")
    window_px: int = setting(7, "LK window (odd, >= 5)")
    max_shift_px: float = setting(1.0, "a track farther than this from its keypoint is dropped")
    max_fb_px: float = setting(0.25, "forward-backward disagreement allowed (keyframe pixels)")
    # LK moves a window without warping it, which biases the track where the views differ much
    max_angle_deg: float = setting(15.0, "only points seen from keyframe and query within this angle")
    sigma_px: float = setting(0.15, "localisation error of a kept track (px)")
    cache_mb: float = setting(256.0, "keyframe images kept in memory (MB)")

    def __post_init__(self) -> None:
        if self.window_px < 5 or self.window_px % 2 == 0:
            raise ConfigError(f"lk.window_px must be odd and >= 5, got {self.window_px}")
        if not 0.0 < self.max_angle_deg <= 90.0:
            raise ConfigError(f"lk.max_angle_deg must be in (0, 90], got {self.max_angle_deg}")
        require_positive(self, "lk", "max_shift_px", "max_fb_px", "sigma_px", "cache_mb")


@dataclass(frozen=True)
class AcceptanceSettings:
    """When a pose is trusted (``judge``) and the terms of its confidence."""

    min_inliers: int = setting(30, "inliers (one per query keypoint) a pose needs")
    min_confidence: float = setting(0.5, "confidence a pose needs, in [0, 1]")
    inliers_scale: float = setting(40.0, "confidence term 1 - exp(-inliers / inliers_scale)")
    good_inlier_ratio: float = setting(0.25, "inlier ratio at which that confidence term saturates")
    good_spread: float = setting(0.05, "inlier hull / image area at which that term saturates")
    # Look-alike places (``places``): keyframes farther than place_radius median keyframe spacings
    # from the pose belong to another place; their matches get a PnP of their own. A place holding
    # ambiguity_ratio of the best one's inliers at a pose farther than the radius from it makes the
    # answer ambiguous unless exactly one of them fits the prior: within the radius, or within
    # prior_gate_sigmas of the prior's largest position sigma.
    place_radius: float = setting(20.0, "another place: farther than this many median keyframe spacings (0 = off)")
    ambiguity_ratio: float = setting(0.5, "another place with this fraction of the inliers is a rival, (0, 1]")
    prior_gate_sigmas: float = setting(4.0, "a place fits the prior within this many of its position sigmas")

    def __post_init__(self) -> None:
        if self.place_radius < 0:
            raise ConfigError(f"place_radius must be >= 0 (0 = off), got {self.place_radius}")
        if not 0.0 < self.ambiguity_ratio <= 1.0:
            raise ConfigError(f"ambiguity_ratio must be in (0, 1], got {self.ambiguity_ratio}")
        if self.prior_gate_sigmas < 0:
            raise ConfigError(f"prior_gate_sigmas must be >= 0, got {self.prior_gate_sigmas}")
        if self.min_inliers < 6:
            raise ConfigError(f"min_inliers must be >= 6, got {self.min_inliers}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        require_positive(self, "", "inliers_scale", "good_inlier_ratio", "good_spread")


@dataclass(frozen=True)
class GeometricConfig:
    """Everything the geometric backend is configured by (sections: see the module doc)."""

    map: MapSettings = setting(factory=MapSettings, doc="map side")
    query: QuerySettings = setting(factory=QuerySettings, doc="query side")
    lk: LKRefineSettings = setting(factory=LKRefineSettings, doc="LK sub-pixel refinement")
    acceptance: AcceptanceSettings = setting(factory=AcceptanceSettings, doc="when a pose is trusted")
    num_threads: int = setting(0, "OpenCV threads (0 = leave OpenCV's setting alone)")

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ConfigError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.lk.enabled and not self.query.scale_weighted:
            raise ConfigError("lk.enabled needs query.scale_weighted=true (the tracked points enter the "
                              "weighted refinement)")


_FAST_QUERY = FeatureConfig(max_keypoints=1024, max_edge_px=640)
_ACCURATE = FeatureConfig(max_keypoints=8192, max_edge_px=0)

PRESETS: dict[str, GeometricConfig] = {
    "default": GeometricConfig(),
    # map side as default (computed once); queries with 1024 keypoints at <= 640 px: latency first
    "fast": GeometricConfig(query=QuerySettings(features=_FAST_QUERY)),
    "accurate": GeometricConfig(map=MapSettings(features=_ACCURATE), query=QuerySettings(features=_ACCURATE)),
    # map as default; queries as fast but the pyramid never finer than 1.1x the input (a 640x480
    # query: SIFT on 352x264, about 4x cheaper than fast's 1280x960 first octave; a 1536x1024
    # one is unaffected) and only keypoints of contrast >= 0.04 (the 1024 strongest of a large
    # image are above it anyway), the pose refined with each match weighted by its keypoint's
    # size, the inliers' keyframe observations tracked into the query (LK) and refined on, the
    # keyframes matched on 2 threads. Meets the accuracy bar at native size at a fraction of
    # fast's cost (docs/geometric.md); what the node ships.
    "realtime": GeometricConfig(
        query=QuerySettings(features=FeatureConfig(max_keypoints=1024, max_edge_px=640, max_upsample=1.1,
                                                   contrast_threshold=0.04),
                            scale_weighted=True, match_threads=2),
        lk=LKRefineSettings(enabled=True)),
}


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


# old flat name -> dotted name in the nested config (feature fields are handled apart)
_LEGACY: dict[str, str] = {
    **{n: f"map.triangulation.{n}" for n in _names(TriangulationConfig) if n != "match_ratio"},
    "vocabulary_words": "map.vocabulary_words", "max_points_per_keyframe": "map.max_points_per_keyframe",
    **{n: f"query.{n}" for n in ("top_k", "match_ratio", "match_threads", "pnp_max_reproj_px", "scale_weighted",
                                 "max_independent_inliers", "relative_fallback", "fallback_min_inliers")},
    "refine_lk": "lk.enabled", **{f"lk_{n}": f"lk.{n}" for n in _names(LKRefineSettings) if n != "enabled"},
    # the acceptance settings the flat form had (later ones, e.g. place_radius, are nested only)
    **{n: f"acceptance.{n}" for n in ("min_inliers", "min_confidence", "inliers_scale", "good_inlier_ratio",
                                      "good_spread")},
    "num_threads": "num_threads", "preset": "preset",
}


def legacy_options(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested options for the old flat names (the node's deprecated ``backend_options`` form).

    A feature field (``max_keypoints``) set the map features, and the query features too where
    the preset's query features were "the map's" (default, accurate: the presets whose query
    features equal their map features); ``query_<feature field>`` sets the query features only.
    Nested sections given as such pass through. Unknown names are ConfigErrors.
    """
    preset = flat.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"unknown geometric preset {preset!r}; choose from {sorted(PRESETS)}")
    base = PRESETS[preset]
    follows = base.query.features == base.map.features
    feature_fields = _names(FeatureConfig)
    dotted: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key in ("map", "query", "lk", "acceptance") and isinstance(value, Mapping):
            nested = merge(nested, {key: value})
        elif key in feature_fields:
            dotted[f"map.features.{key}"] = value
            if follows:
                dotted.setdefault(f"query.features.{key}", value)
        elif key.startswith("query_") and key[6:] in feature_fields:
            dotted[f"query.features.{key[6:]}"] = value
        elif key in _LEGACY:
            dotted[_LEGACY[key]] = value
        else:
            raise ConfigError(f"unknown option {key!r} for the geometric backend; valid flat names: "
                              f"{sorted(set(_LEGACY) | feature_fields)} (or query_<feature field>)")
    return merge(nested, unflatten(dotted))
