"""``tracking.*`` node parameters: validated like every other (a bad value names itself)."""

import pytest

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.ros.params import config_from_parameters


def test_tracking_parameters_are_validated() -> None:
    cfg = config_from_parameters({"database_path": "x.db", "tracking.enabled": True, "tracking.gate.confirm_fixes": 5})
    assert cfg.tracking.enabled and cfg.tracking.gate.confirm_fixes == 5
    for name, value, message in [("tracking.gate.probability", 0.5, "tracking.gate.probability must be one of"),
                                 ("tracking.gate.confirm_fixes", 0, "confirm_fixes must be >= 1"),
                                 ("tracking.tracker.window_px", 14, "window_px must be odd"),
                                 ("tracking.cascade.budget_ms", -1.0, "budget_ms must be >= 0"),
                                 ("tracking.motion.max_speed_m_s", 0.0, "max_speed_m_s must be > 0"),
                                 ("tracking.cascade.full_preset", "bogus", "is not a geometric preset")]:
        with pytest.raises(ConfigError, match=message):
            config_from_parameters({"database_path": "x.db", name: value})
    with pytest.raises(ConfigError, match="unknown parameters: tracking.gate.sigmas"):
        config_from_parameters({"database_path": "x.db", "tracking.gate.sigmas": 3.0})
