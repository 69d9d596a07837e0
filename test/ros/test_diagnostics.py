"""Diagnostics: counters, rate and latency percentiles, and the DiagnosticArray rendering."""

import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402

from reloc_vggt_ros.ros.diagnostics import ERROR, OK, WARN, NodeStats, to_diagnostic_array  # noqa: E402


def test_rate_latency_and_counts():
    s = NodeStats(window=100)
    for i in range(11):
        s.on_input(now_s=100.0 + i * 0.1)           # 10 Hz
    assert abs(s.input_rate_hz(now_s=101.05) - 10.0) < 1e-6
    assert s.input_rate_hz(now_s=110.0) == 0.0       # input stopped
    for ms in range(1, 101):
        s.on_result(ms, float(ms), ms % 2 == 0, "localized" if ms % 2 == 0 else "no_match: x", 0.5, 40)
    p50, p95 = s.latency_ms()
    assert abs(p50 - 50.5) < 1e-9 and abs(p95 - 95.05) < 1e-9
    assert (s.processed, s.published, s.rejected) == (100, 50, 50)


def test_levels_and_message():
    s = NodeStats()
    assert s.level() == WARN                          # unconfigured
    s.state = "active"
    assert s.level() == ERROR                         # active with an empty database
    s.database_size = 10
    s.on_reject_input(5, "unsupported image encoding '16UC1'")
    assert s.level() == WARN
    s.on_result(6, 10.0, True, "localized", 0.9, 100)
    assert s.level() == OK
    s.on_reject_input(7, "camera_info is for 640x480 but the image is 320x240")
    msg = to_diagnostic_array(s, "reloc_vggt_node", Time(sec=1))
    st = msg.status[0]
    values = {kv.key: kv.value for kv in st.values}
    assert st.name == "reloc_vggt_node: relocalization"
    assert st.message == "camera_info is for 640x480 but the image is 320x240"
    assert st.level == bytes([WARN])
    for key in ("input_rate_hz", "latency_ms_p50", "latency_ms_p95", "dropped", "last_confidence",
                "last_inliers", "database_size", "last_reason", "last_stamp_ns"):
        assert key in values
    assert values["database_size"] == "10" and values["last_stamp_ns"] == "7"
