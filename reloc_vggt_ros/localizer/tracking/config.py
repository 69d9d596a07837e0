"""Settings of camera-rate tracking: the tracker, the motion prior, the gate and the cascade.

A leaf module (only ``config``, ``errors``, the gate's probabilities and the geometric presets' names). The node reads them as its ``tracking.*``
parameters (``session.SessionConfig.tracking``); everything is off unless ``tracking.enabled``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config import require_non_negative, require_positive, setting
from ...errors import ConfigError
from ...geometry.gating import GATE_PROBABILITIES
from ..geometric.config import PRESETS as GEOMETRIC_PRESETS

__all__ = ["CascadeSettings", "GateSettings", "MotionSettings", "TrackerSettings", "TrackingConfig"]


@dataclass(frozen=True)
class CascadeSettings:
    """Cheap query first; a fuller pass over the same map where it fails or is weak (``cascade``).

    A cheap answer the backend's own judge does not call OK (no match, or LOW_CONFIDENCE: too few
    inliers, low confidence, ambiguous places) always escalates. An OK one is weak, and escalated,
    when either rule says so: ``weak_below_inliers`` (little evidence) or
    ``weak_above_expected_error`` (evidence too coarse for the map: median inlier depth / (focal
    px x sqrt(inliers)) over the map's keyframe spacing, e.g. a half-size image). Each was chosen
    leave-one-scene-out on the four shared scenes at three sizes (``python -m bench.cascade``,
    docs/tracking.md): 100-150 and 0.001-0.0015 per fold, 150 and 0.001 on all of them; the
    inlier rule alone left one held-out 320x240 answer (100 inliers, 2.9 cm) unescalated.
    """

    enabled: bool = setting(True, "run a fuller pass when the cheap query fails or is weak")
    full_preset: str = setting("default", "geometric preset of the fuller pass (query side; the map is shared)")
    full_top_k: int = setting(0, "keyframes the fuller pass retrieves (0 = twice the cheap pass's)")
    weak_below_inliers: int = setting(150, "an OK cheap answer with fewer inliers is weak and escalated "
                                          "(0 = escalate failures only)")
    weak_above_expected_error: float = setting(0.001, "an OK cheap answer whose expected position error (median "
                                                     "inlier depth / (focal px x sqrt(inliers))) is above this "
                                                     "fraction of the map's keyframe spacing is weak and escalated "
                                                     "(0 = off)")
    budget_ms: float = setting(500.0, "escalate only if the cheap pass's time plus the fuller pass's expected "
                                      "time fits (0 = no limit)")

    def __post_init__(self) -> None:
        require_non_negative(self, "tracking.cascade", "full_top_k", "weak_below_inliers", "weak_above_expected_error",
                      "budget_ms")
        if self.full_preset not in GEOMETRIC_PRESETS:
            raise ConfigError(f"tracking.cascade.full_preset {self.full_preset!r} is not a geometric preset; "
                              f"choose from {sorted(GEOMETRIC_PRESETS)}")


@dataclass(frozen=True)
class GateSettings:
    """Consistency gating of every pose before it is published (``gate``)."""

    probability: float = setting(0.999, "chi-square (6 DoF) probability of the Mahalanobis gate: one of "
                                        f"{list(GATE_PROBABILITIES)}")
    confirm_fixes: int = setting(3, "fixes in a row, consistent with each other, that overrule the prediction "
                                    "(kidnap recovery)")
    min_sigma_m: float = setting(0.01, "position sigma floor of each pose in the gate (unmodelled map/track "
                                       "errors), m")
    min_sigma_rad: float = setting(0.01, "rotation sigma floor of each pose in the gate, rad")
    reference_timeout_s: float = setting(1.0, "a reference pose older than this gates nothing: the next OK fix "
                                              "is taken as is (state lost)")

    def __post_init__(self) -> None:
        if self.probability not in GATE_PROBABILITIES:
            raise ConfigError(f"tracking.gate.probability must be one of {list(GATE_PROBABILITIES)}, got {self.probability}")
        if self.confirm_fixes < 1:
            raise ConfigError(f"tracking.gate.confirm_fixes must be >= 1, got {self.confirm_fixes}")
        require_positive(self, "tracking.gate", "min_sigma_m", "min_sigma_rad", "reference_timeout_s")


@dataclass(frozen=True)
class MotionSettings:
    """The motion prior between frames: odometry when given, else constant velocity (``motion``)."""

    odometry_sigma_per_m: float = setting(0.05, "odometry position error per metre travelled")
    odometry_sigma_rad_per_rad: float = setting(0.05, "odometry rotation error per radian turned")
    odometry_sigma_m_per_sqrt_s: float = setting(0.01, "odometry position random walk, m/sqrt(s)")
    odometry_sigma_rad_per_sqrt_s: float = setting(0.01, "odometry rotation random walk, rad/sqrt(s)")
    velocity_sigma_m_per_sqrt_s: float = setting(0.1, "constant-velocity model position random walk, m/sqrt(s)")
    velocity_sigma_rad_per_sqrt_s: float = setting(0.1, "constant-velocity model rotation random walk, "
                                                        "rad/sqrt(s)")
    max_speed_m_s: float = setting(10.0, "odometry moving faster than this between frames has jumped: not used")
    max_turn_rad_s: float = setting(6.0, "odometry turning faster than this between frames has jumped: not used")

    def __post_init__(self) -> None:
        require_non_negative(self, "tracking.motion", "odometry_sigma_per_m", "odometry_sigma_rad_per_rad",
                      "odometry_sigma_m_per_sqrt_s", "odometry_sigma_rad_per_sqrt_s",
                      "velocity_sigma_m_per_sqrt_s", "velocity_sigma_rad_per_sqrt_s")
        require_positive(self, "tracking.motion", "max_speed_m_s", "max_turn_rad_s")


@dataclass(frozen=True)
class TrackerSettings:
    """Frame-to-frame LK of the last fix's inliers and PnP on them (``tracker``)."""

    window_px: int = setting(15, "LK window (odd)")
    pyramid_levels: int = setting(3, "LK pyramid levels above the image")
    max_fb_px: float = setting(0.5, "forward-backward disagreement a track may have (px)")
    sigma_px: float = setting(0.1, "error LK tracking adds to a point's error at the fix (px)")
    max_reproj_px: float = setting(2.0, "PnP inlier threshold on tracked points (px)")
    min_inliers: int = setting(30, "tracking fails below this many PnP inliers")
    refresh_fraction: float = setting(0.5, "relocalize (new map points) once fewer than this fraction of the "
                                           "fix's inliers are still tracked")
    max_view_change_deg: float = setting(5.0, "relocalize once the tracked points are seen from this many "
                                              "degrees away from the fix's view (0 = never for this reason)")
    max_reproj_rms_px: float = setting(1.5, "tracking fails when the inliers' RMS reprojection error is larger")
    max_position_sigma_m: float = setting(0.05, "tracking fails when the pose's largest position sigma is larger")
    max_brightness_change: float = setting(0.25, "a relative jump of the mean brightness between frames "
                                                 "(exposure change) stops LK: relocalize")

    def __post_init__(self) -> None:
        if self.window_px < 5 or self.window_px % 2 == 0:
            raise ConfigError(f"tracking.tracker.window_px must be odd and >= 5, got {self.window_px}")
        if not 0 <= self.pyramid_levels <= 8:
            raise ConfigError(f"tracking.tracker.pyramid_levels must be in 0..8, got {self.pyramid_levels}")
        if self.min_inliers < 6:
            raise ConfigError(f"tracking.tracker.min_inliers must be >= 6, got {self.min_inliers}")
        if not 0.0 <= self.refresh_fraction < 1.0:
            raise ConfigError(f"tracking.tracker.refresh_fraction must be in [0, 1), got {self.refresh_fraction}")
        require_non_negative(self, "tracking.tracker", "max_view_change_deg")
        require_positive(self, "tracking.tracker", "max_fb_px", "sigma_px", "max_reproj_px", "max_reproj_rms_px",
                  "max_position_sigma_m", "max_brightness_change")


@dataclass(frozen=True)
class TrackingConfig:
    """Camera-rate localization (docs/tracking.md); the node's ``tracking.*`` parameters."""

    enabled: bool = setting(False, "track between relocalizations, gate every pose, cascade the queries")
    relocalize_every_s: float = setting(1.0, "a full relocalization at least this often while tracking "
                                             "(0 = only when tracking degrades)")
    relocalize_in_background: bool = setting(True, "while the track is healthy, relocalize on a background "
                                                   "thread and keep answering frames by tracking")
    background_process: bool = setting(True, "run those background relocalizations in a worker process (its "
                                             "own read-only copy of the map: no GIL shared with tracking)")
    queue_depth: int = setting(3, "frames the node keeps waiting while it holds a track, answered in order "
                                  "(a tracked frame is cheap; it bounds how late one can be: depth x frame "
                                  "period); without a track the newest frame wins")
    tracker: TrackerSettings = setting(factory=TrackerSettings, doc="frame-to-frame tracking")
    motion: MotionSettings = setting(factory=MotionSettings, doc="motion prior")
    gate: GateSettings = setting(factory=GateSettings, doc="consistency gate")
    cascade: CascadeSettings = setting(factory=CascadeSettings, doc="escalation cascade")

    def __post_init__(self) -> None:
        require_non_negative(self, "tracking", "relocalize_every_s")
        if not 1 <= self.queue_depth <= 100:
            raise ConfigError(f"tracking.queue_depth must be in 1..100, got {self.queue_depth}")
