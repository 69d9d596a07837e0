"""Stamp matcher: pairs by stamp within slop, in any arrival order, and counts the unpaired."""

import pytest

pytest.importorskip("rclpy")

from reloc_vggt_ros.errors import ConfigError  # noqa: E402
from reloc_vggt_ros.ros.sync import StampMatcher  # noqa: E402

MS = 1_000_000


def test_pairs_exact_stamps_in_either_order():
    m = StampMatcher(slop_ns=5 * MS)
    assert m.add_a(100 * MS, "img1") is None
    assert m.add_b(100 * MS, "info1") == (100 * MS, "img1", "info1")
    assert m.add_b(200 * MS, "info2") is None
    assert m.add_a(200 * MS, "img2") == (200 * MS, "img2", "info2")
    assert m.pending() == (0, 0)
    assert (m.unmatched_a, m.unmatched_b) == (0, 0)


def test_closest_within_slop_and_older_items_are_discarded():
    m = StampMatcher(slop_ns=5 * MS)
    for t in (100, 200, 300):
        m.add_a(t * MS, f"img{t}")
    assert m.add_b(302 * MS, "info") == (300 * MS, "img300", "info")
    assert m.unmatched_a == 2          # 100 and 200 can never pair any more
    assert m.add_b(400 * MS, "late") is None
    assert m.add_a(410 * MS, "img410") is None   # 10 ms > slop
    assert m.pending() == (1, 1)


def test_missing_partner_overflows_and_is_counted():
    m = StampMatcher(slop_ns=0, depth=3)
    for i in range(10):
        assert m.add_a(i * MS, i) is None
    assert m.unmatched_a == 7 and m.pending() == (3, 0)


def test_invalid_settings():
    with pytest.raises(ConfigError, match="slop"):
        StampMatcher(slop_ns=-1)
    with pytest.raises(ConfigError, match="depth"):
        StampMatcher(slop_ns=0, depth=0)
