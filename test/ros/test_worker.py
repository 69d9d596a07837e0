"""Worker: newest query wins (drops counted), keyframes are FIFO and drained on stop."""

import threading
import time

import pytest

pytest.importorskip("rclpy")

from reloc_vggt_ros.ros.worker import NewestSlot, Worker  # noqa: E402


def test_newest_slot_keeps_latest_and_counts_drops():
    slot = NewestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take() == 3 and slot.take() is None
    assert (slot.offered, slot.dropped) == (3, 2)


def _flood_while_blocked(**worker_options) -> tuple[list, Worker]:
    """Frames 1..19 offered while the handler is blocked on frame 0; the frames it then saw."""
    seen, gate = [], threading.Event()

    def handle(q):
        gate.wait(5)
        seen.append(q)

    w = Worker(handle, lambda k: None, **worker_options)
    w.start()
    w.offer_query(0)
    time.sleep(0.05)        # worker is now blocked on frame 0
    for i in range(1, 20):
        w.offer_query(i)
    gate.set()
    deadline = time.monotonic() + 5
    while not w.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    return seen, w


def test_slow_handler_sees_newest_frames_only():
    seen, w = _flood_while_blocked()
    assert seen == [0, 19]
    assert w.dropped == 18


def test_stop_drains_every_keyframe_and_skips_stale_query():
    written, queries = [], []

    def slow_keyframe(k):
        time.sleep(0.01)
        written.append(k)

    w = Worker(queries.append, slow_keyframe, max_keyframes=100)
    for i in range(30):
        assert w.offer_keyframe(i)
    w.start()
    w.offer_query("q")
    w.stop(drain=True)
    assert written == list(range(30))
    assert w.pending_keyframes() == 0


def test_full_keyframe_queue_refuses_and_counts():
    w = Worker(lambda q: None, lambda k: None, max_keyframes=2)
    assert w.offer_keyframe(1) and w.offer_keyframe(2)
    assert not w.offer_keyframe(3)
    assert w.keyframes_dropped == 1


def test_handler_exception_does_not_kill_worker():
    seen = []

    def handle(q):
        if q == "bad":
            raise ValueError("boom")
        seen.append(q)

    w = Worker(handle, lambda k: None)
    w.start()
    w.offer_query("bad")
    time.sleep(0.05)
    w.offer_query("good")
    time.sleep(0.05)
    w.stop()
    assert seen == ["good"]


def test_query_throttle_keeps_newest_and_never_delays_keyframes():
    seen, kfs = [], []
    w = Worker(lambda q: seen.append((q, time.monotonic())), lambda k: kfs.append((k, time.monotonic())),
               min_query_interval_s=0.3)
    w.start()
    t0 = time.monotonic()
    w.offer_query(0)
    time.sleep(0.05)
    for i in range(1, 6):                  # all inside the 0.3 s interval: only the newest survives
        w.offer_query(i)
    w.offer_keyframe("kf")
    time.sleep(0.5)
    w.stop()
    assert [q for q, _ in seen] == [0, 5]
    assert seen[1][1] - seen[0][1] >= 0.29
    assert kfs[0][0] == "kf" and kfs[0][1] - t0 < 0.2      # handled at once, not after the throttle


def test_backlog_is_answered_in_order_while_the_consumer_is_cheap():
    """Frames that arrive while ``keep_backlog`` says so (tracking holds a track) wait, up to
    ``max_queries``, and are answered oldest first; without it only the newest is (the rest
    counted as dropped); a frame arriving without it drops the backlog (no answer late behind a
    relocalization)."""
    seen, w = _flood_while_blocked(max_queries=4, keep_backlog=lambda: True)
    assert seen == [0, 16, 17, 18, 19] and w.dropped == 15
    seen, w = _flood_while_blocked(max_queries=4, keep_backlog=lambda: False)
    assert seen == [0, 19] and w.dropped == 18

    slot = NewestSlot(depth=3)
    for i in range(3):
        slot.put(i, backlog=True)
    assert slot.put(3, backlog=False) and slot.dropped == 3 and slot.take(newest_only=False) == 3
