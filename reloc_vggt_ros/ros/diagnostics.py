"""Node health in one place: counters, rates and latency percentiles, and the /diagnostics message.

:class:`NodeStats` is plain Python (thread-safe) so it is tested without ROS; ``to_status``
renders it as a diagnostic_msgs/DiagnosticStatus. The message carries *why* the last frame was
not published, so a silent node is never a mystery.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NodeStats", "to_diagnostic_array"]

OK, WARN, ERROR = 0, 1, 2


@dataclass
class NodeStats:
    """Counters updated by callbacks and the worker; read by the diagnostics timer."""

    window: int = 100
    received: int = 0
    processed: int = 0
    published: int = 0
    rejected: int = 0
    dropped: int = 0
    unmatched_images: int = 0
    keyframes_added: int = 0
    keyframes_skipped: int = 0
    keyframes_received: int = 0
    database_size: int = 0
    last_confidence: float = 0.0
    last_inliers: int = 0
    last_stamp_ns: int = 0
    last_reason: str = "no image received yet"
    last_warning: str = ""
    last_keyframe_reason: str = ""
    state: str = "unconfigured"
    tracking_state: str = ""             # tracking / relocalizing / lost (tracking.enabled), else ''
    served_by: str = ""                  # last frame: tracking / relocalization / none (tracking.enabled)
    frames_tracked: int = 0              # published poses that came from tracking
    reference: str = ""           # mode map_free: the current reference ("" = none)
    map_free: bool = False
    cameras: dict[str, str] = field(default_factory=dict)   # rig.cameras: each camera's last outcome
    _arrivals: deque = field(default_factory=deque, repr=False)
    _latencies_ms: deque = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_input(self, now_s: float | None = None) -> None:
        with self._lock:
            self.received += 1
            self._arrivals.append(time.monotonic() if now_s is None else now_s)
            while len(self._arrivals) > self.window:
                self._arrivals.popleft()

    def on_result(self, stamp_ns: int, latency_ms: float, published: bool, reason: str,
                  confidence: float = 0.0, inliers: int = 0, tracking_state: str = "", served_by: str = "") -> None:
        with self._lock:
            self.tracking_state, self.served_by = tracking_state, served_by
            self.frames_tracked += int(published and served_by == "tracking")
            self.processed += 1
            self.published += int(published)
            self.rejected += int(not published)
            self.last_stamp_ns = stamp_ns
            self.last_reason = reason
            self.last_confidence, self.last_inliers = float(confidence), int(inliers)
            self._latencies_ms.append(float(latency_ms))
            while len(self._latencies_ms) > self.window:
                self._latencies_ms.popleft()

    def on_reject_input(self, stamp_ns: int | None, reason: str) -> None:
        """A frame that never reached the localizer (bad encoding, size mismatch, no camera_info)."""
        with self._lock:
            self.processed += 1
            self.rejected += 1
            if stamp_ns is not None:
                self.last_stamp_ns = stamp_ns
            self.last_reason = reason

    def warn(self, text: str) -> None:
        with self._lock:
            self.last_warning = text

    def input_rate_hz(self, now_s: float | None = None) -> float:
        """Arrival rate over the recent window (0 once input stopped for > 2 s)."""
        with self._lock:
            arrivals = list(self._arrivals)
        now = time.monotonic() if now_s is None else now_s
        if len(arrivals) < 2 or now - arrivals[-1] > 2.0:
            return 0.0
        return (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)

    def latency_ms(self) -> tuple[float, float]:
        """(p50, p95) of recent processing latencies in ms; NaN before the first result."""
        with self._lock:
            lat = np.array(self._latencies_ms, float)
        if lat.size == 0:
            return float("nan"), float("nan")
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))

    def snapshot(self) -> dict[str, Any]:
        p50, p95 = self.latency_ms()
        with self._lock:
            values = {k: getattr(self, k) for k in (
                "state", "received", "processed", "published", "rejected", "dropped", "unmatched_images",
                "keyframes_received", "keyframes_added", "keyframes_skipped", "database_size",
                "last_confidence", "last_inliers", "last_stamp_ns", "last_reason", "last_warning",
                "last_keyframe_reason", "tracking_state", "served_by", "frames_tracked")}
            if self.map_free:
                values["reference"] = self.reference or "none"
            values.update({f"camera {c}": v for c, v in self.cameras.items()})
        values.update(input_rate_hz=self.input_rate_hz(), latency_ms_p50=p50, latency_ms_p95=p95)
        return values

    def has_map(self) -> bool:
        """Something to localize against: keyframes, or a map-free reference."""
        return bool(self.reference) if self.map_free else self.database_size > 0

    def level(self) -> int:
        if self.state != "active" or not self.has_map():
            return ERROR if self.state == "active" else WARN
        return OK if self.last_reason == "localized" else WARN


def to_diagnostic_array(stats: NodeStats, node_name: str, stamp: Any, fleet: dict[str, Any] | None = None) -> Any:
    """diagnostic_msgs/DiagnosticArray with the status ``<node>: relocalization``, and ``<node>: fleet
    sync`` when the node syncs with a fleet map (``fleet``: ``FleetSync.status()``)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    snap = stats.snapshot()
    status = DiagnosticStatus()
    status.level = bytes([stats.level()])
    status.name = f"{node_name}: relocalization"
    status.hardware_id = node_name
    status.message = snap["last_reason"] if stats.has_map() or snap["state"] != "active" \
        else ("no map-free reference set" if stats.map_free else "keyframe database is empty")
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in snap.items()]
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    if fleet is not None:
        sync = DiagnosticStatus(name=f"{node_name}: fleet sync", hardware_id=node_name, message=fleet["message"])
        sync.level = bytes([{"ok": OK, "warn": WARN}.get(fleet["level"], ERROR)])
        sync.values = [KeyValue(key=k, value=_fmt(v)) for k, v in fleet.items() if k not in ("level", "message")]
        msg.status.append(sync)
    return msg


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
