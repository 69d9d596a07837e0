"""RigSync: rig frames grouped by stamp; complete sets at once, a silent camera never blocks the rest."""

import pytest

from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.ros.rig_sync import RigSync

MS = 1_000_000
CAMS = ["front", "left", "right"]


def test_complete_sets_go_out_at_once_within_the_slop() -> None:
    sync: RigSync[str] = RigSync(CAMS, slop_ns=5 * MS, wait_ns=200 * MS)
    assert sync.add("front", 1000 * MS, "f0") == []
    assert sync.add("left", 1002 * MS, "l0") == []
    assert sync.add("right", 1030 * MS, "r-late") == []          # outside the slop: a set of its own
    (s,) = sync.add("right", 999 * MS, "r0")
    assert s.complete and s.stamp_ns == 1000 * MS
    assert s.frames == {"front": (1000 * MS, "f0"), "left": (1002 * MS, "l0"), "right": (999 * MS, "r0")}
    assert list(s.frames) == CAMS                                 # rig order, whatever the arrival order


def test_a_camera_that_stops_publishing_gives_partial_sets_naming_it() -> None:
    sync: RigSync[int] = RigSync(CAMS, slop_ns=5 * MS, wait_ns=150 * MS)
    released = []
    for k in range(10):                                         # 10 Hz; "right" dies after frame 2
        for cam in CAMS if k < 3 else CAMS[:2]:
            released += sync.add(cam, (1000 + 100 * k) * MS, k)
    complete = [s for s in released if s.complete]
    partial = [s for s in released if not s.complete]
    assert [s.stamp_ns for s in complete] == [(1000 + 100 * k) * MS for k in range(3)]
    # each later instant goes out once newer frames are wait_ns ahead of it, without "right"
    assert [s.stamp_ns for s in partial] == [(1000 + 100 * k) * MS for k in range(3, 8)]
    assert all(s.missing == ["right"] and list(s.frames) == ["front", "left"] for s in partial)
    assert sync.silent_cameras(500 * MS) == ["right"] and sync.silent_cameras(700 * MS) == []


def test_stale_incomplete_sets_are_dropped_and_counted_and_bad_config_refused() -> None:
    sync: RigSync[int] = RigSync(CAMS, slop_ns=5 * MS, wait_ns=1000 * MS)
    sync.add("front", 1000 * MS, 0)                               # never completed
    for cam in CAMS:
        out = sync.add(cam, 1100 * MS, 1)
    assert [s.stamp_ns for s in out] == [1100 * MS] and sync.dropped_sets == 1
    with pytest.raises(ConfigError, match="uniquely named"):
        RigSync(["a", "a"], slop_ns=0, wait_ns=0)
    with pytest.raises(ConfigError, match="not in the rig"):
        sync.add("rear", 1200 * MS, 2)
