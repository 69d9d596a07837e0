"""The escalation cascade on real temple images: cheap first, the fuller pass when weak, the budget."""

from __future__ import annotations

import pytest

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.localizer.geometric import PRESETS
from reloc_vggt_ros.localizer.tracking import Cascade, CascadeSettings, full_pass


def test_full_pass_shares_the_map_with_other_query_settings(realtime) -> None:
    full = full_pass(realtime, CascadeSettings())
    assert full._state is realtime._state                       # no second index
    assert full.config.query.features == PRESETS["default"].query.features
    assert full.config.query.top_k == 2 * realtime.config.query.top_k
    assert full_pass(realtime, CascadeSettings(enabled=False)) is None
    with pytest.raises(ConfigError, match="not a geometric preset"):
        CascadeSettings(full_preset="bogus")


def test_weak_cheap_answer_escalates_and_a_strong_one_does_not(stream, realtime) -> None:
    f, img, intr = stream(1)[0]
    full = full_pass(realtime, CascadeSettings())
    strong = Cascade(realtime, full, CascadeSettings(weak_below_inliers=0, budget_ms=0)).localize(img, intr)
    assert strong.ok and strong.diagnostics["cascade"] == "cheap" and "escalated" not in strong.diagnostics
    weak = Cascade(realtime, full, CascadeSettings(weak_below_inliers=10**6, budget_ms=0)).localize(img, intr)
    assert weak.ok and weak.diagnostics["cascade"] == "full" and "weak" in weak.diagnostics["escalated"]
    assert weak.diagnostics["full_ms"] > 0 and pose_error(weak.T_world_cam, f.T_world_cam)[0] < 2e-3


def test_the_budget_skips_a_fuller_pass_that_would_not_fit(stream, realtime) -> None:
    _, img, intr = stream(1)[0]
    full = full_pass(realtime, CascadeSettings())
    tight = Cascade(realtime, full, CascadeSettings(weak_below_inliers=10**6, budget_ms=1.0))
    res = tight.localize(img, intr)                 # the cheap pass alone takes longer than 1 ms
    assert res.ok and res.diagnostics["cascade"] == "cheap" and "over the budget" in res.diagnostics["cascade_skipped"]
    loose = Cascade(realtime, full, CascadeSettings(weak_below_inliers=10**6, budget_ms=1e6))
    assert loose.localize(img, intr).diagnostics["cascade"] == "full"
