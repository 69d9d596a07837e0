"""Camera-rate localization: tracking between relocalizations, consistency gating, escalation cascade.

See :mod:`.localizer` for the stages and docs/tracking.md for the settings and results.
"""

from .cascade import Cascade, full_pass
from .config import CascadeSettings, GateSettings, MotionSettings, TrackerSettings, TrackingConfig
from .localizer import TrackingLocalizer

__all__ = ["Cascade", "full_pass", "CascadeSettings", "GateSettings", "MotionSettings", "TrackerSettings",
           "TrackingConfig", "TrackingLocalizer"]
