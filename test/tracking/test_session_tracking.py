"""Session with ``tracking.enabled``: tracked poses published with map->odom, /initialpose resets."""

from __future__ import annotations

import numpy as np

from reloc_vggt_ros.geometry import invert_T, pose_error
from reloc_vggt_ros.localizer.registry import make_localizer
from reloc_vggt_ros.localizer.tracking import TrackingConfig, TrackingLocalizer
from reloc_vggt_ros.session import Published, Session, SessionConfig


def test_session_publishes_tracked_poses_and_a_prior_restarts_from_relocalization(stream, temple_store) -> None:
    session = Session(SessionConfig(tracking=TrackingConfig(enabled=True)),
                      lambda store: make_localizer("geometric", store, preset="realtime", top_k=5))
    session.open(temple_store.path, readonly=True)
    assert isinstance(session._localizer, TrackingLocalizer)
    frames = stream(12)
    decisions = [session.localize(img, intr, f.stamp_ns, f.T_odom_cam) for f, img, intr in frames[:10]]
    assert all(isinstance(d, Published) for d in decisions)
    served = [d.result.diagnostics["served_by"] for d in decisions]
    assert served[0] == "relocalization" and served[1:].count("tracking") >= 8
    f, _, _ = frames[9]
    assert np.allclose(decisions[-1].T_map_odom, decisions[-1].T_map_cam @ invert_T(f.T_odom_cam))
    assert session.relocalize_next() == "the next frame is relocalized"
    f, img, intr = frames[10]
    d = session.localize(img, intr, f.stamp_ns, f.T_odom_cam)
    assert isinstance(d, Published) and d.result.diagnostics["served_by"] == "relocalization"
    assert any("relocalized (d^2" in n for n in d.result.diagnostics["tracking_notes"])   # gated, not reset
    session.set_prior(frames[11][0].T_world_cam, np.eye(6) * 1e-2)
    f, img, intr = frames[11]
    d = session.localize(img, intr, f.stamp_ns, f.T_odom_cam)
    assert isinstance(d, Published) and d.result.diagnostics["served_by"] == "relocalization"
    assert pose_error(d.T_map_cam, f.T_world_cam)[0] < 2e-3
    session.close()


def test_tracking_off_is_the_plain_backend(temple_store) -> None:
    session = Session(SessionConfig(), lambda store: make_localizer("geometric", store, preset="realtime"))
    session.open(temple_store.path, readonly=True)
    assert not isinstance(session._localizer, TrackingLocalizer)
    assert "tracking is off" in session.relocalize_next()
    session.close()
