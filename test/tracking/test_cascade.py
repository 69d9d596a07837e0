"""The escalation cascade on real temple images: cheap first, the fuller pass when weak, the budget."""

from __future__ import annotations

import numpy as np
import pytest

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.localizer.geometric import PRESETS
from reloc_vggt_ros.localizer.tracking import Cascade, CascadeSettings, full_pass
from reloc_vggt_ros.localizer.tracking.cascade import expected_error


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


def test_expected_error_escalates_a_coarse_answer(stream, realtime) -> None:
    """The expected error (1 px per inlier over the map's keyframe spacing) doubles when the same
    view is seen at half the resolution, and escalates an OK answer above the bar (0: rule off)."""
    import cv2

    f, img, intr = stream(1)[0]
    full = full_pass(realtime, CascadeSettings())
    off = Cascade(realtime, full, CascadeSettings(weak_below_inliers=0, weak_above_expected_error=0, budget_ms=0))
    res = off.localize(img, intr)
    assert res.ok and res.diagnostics["cascade"] == "cheap"
    half_img, half_intr = cv2.resize(img, (320, 240), interpolation=cv2.INTER_AREA), intr.scaled(0.5, 0.5)
    half = realtime.localize(half_img, half_intr)
    baseline = off.baseline_m()
    e_full, e_half = expected_error(res, intr, baseline), expected_error(half, half_intr, baseline)
    n_full, n_half = (len(r.diagnostics["correspondences"].x2d) for r in (res, half))
    assert half.ok and 0 < e_full < 0.001 and 1.7 < e_half / e_full * np.sqrt(n_half / n_full) < 2.3
    strict = Cascade(realtime, full, CascadeSettings(weak_below_inliers=0, weak_above_expected_error=e_full / 2,
                                                     budget_ms=0))
    esc = strict.localize(img, intr)
    assert esc.diagnostics["cascade"] == "full" and "expected error" in esc.diagnostics["escalated"]


def test_the_fuller_pass_takes_the_refreshed_map_without_indexing_it_again(tmp_path, temple, monkeypatch) -> None:
    """Keyframes added live are indexed once (by the cheap pass's refresh); the fuller pass takes that map."""
    from reloc_vggt_ros.keyframes import KeyframeStore
    from reloc_vggt_ros.keyframes.build import keyframe_from_posed
    from reloc_vggt_ros.localizer.geometric import localizer as geometric
    from reloc_vggt_ros.localizer.registry import make_localizer

    recs, _ = temple
    store = KeyframeStore.create(tmp_path / "live.db", units="m", creator="test_cascade")
    store.add_keyframes([keyframe_from_posed(r) for r in recs[:3]])
    cheap = make_localizer("geometric", store, preset="realtime", top_k=5)
    cascade = Cascade(cheap, full_pass(cheap, CascadeSettings()), CascadeSettings())
    calls = []
    real = geometric.index_store
    monkeypatch.setattr(geometric, "index_store", lambda *a, **k: calls.append(1) or real(*a, **k))
    store.add_keyframes([keyframe_from_posed(recs[3])])
    cascade.refresh()
    assert len(calls) == 1 and cascade.full._state is cheap._state and len(cheap._state.retriever) == 4
    store.close()
