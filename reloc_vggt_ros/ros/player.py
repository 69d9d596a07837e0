"""Play a bag into live ROS topics (``ros2 bag play`` is not on PyPI).

Messages are published as the raw CDR bytes stored in the bag, so nothing is re-encoded.
Publishers are reliable (they deliver to best-effort subscribers too); ``/tf_static`` is
transient local (depth 100) like a static broadcaster, so a node that starts after the player
still gets the static tree. With ``clock_hz`` the player is the ROS time source, as
``ros2 bag play --clock``: ``/clock`` carries the bag time of the message being played, before
each message and at ``clock_hz`` while waiting. ``rate`` scales the bag's timing; ``step``
(lockstep) lets a caller wait between images, e.g. for the node's answer — bag time (and so a
``use_sim_time`` node's clock) stands still meanwhile. ``loops`` replays the bag again from its
start, so bag time jumps back, as ``ros2 bag play --loop`` does.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy

from ..data.bag import TF_STATIC_TOPIC, BagMessage, read_bag
from ..errors import DataError
from .qos import TF_STATIC_QOS

__all__ = ["message_class", "BagPlayer"]

logger = logging.getLogger(__name__)

PLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # rclpy's /clock reader is best effort


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as err:
        raise DataError(f"message type {msgtype} is not available in this ROS install: {err}") from err


class BagPlayer:
    """Publishes the messages of a bag on a node; ``remap`` renames topics; ``clock_hz`` > 0
    also publishes ``/clock``."""

    def __init__(self, node: Any, bag: Path | str, remap: dict[str, str] | None = None,
                 topics: Iterable[str] | None = None, clock_hz: float = 0.0) -> None:
        self.node = node
        self.messages: list[BagMessage] = list(read_bag(bag, set(topics) if topics else None))
        if not self.messages:
            raise DataError(f"{bag}: no messages to play")
        if clock_hz < 0:
            raise DataError(f"clock rate must be >= 0 Hz, got {clock_hz}")
        self.remap = remap or {}
        self.publishers: dict[str, Any] = {}
        for m in self.messages:
            if m.topic not in self.publishers:
                qos = TF_STATIC_QOS if m.topic == TF_STATIC_TOPIC else PLAY_QOS
                self.publishers[m.topic] = node.create_publisher(message_class(m.msgtype),
                                                                 self.remap.get(m.topic, m.topic), qos)
        self._clock_period = 1.0 / clock_hz if clock_hz > 0 else 0.0
        self._clock_pub = None
        if clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, "/clock", CLOCK_QOS)
        self._clock_sent = 0.0

    def wait_for_subscribers(self, topic: str, timeout_s: float, spin: Callable[[float], None],
                             alive: Callable[[], bool] = lambda: True) -> bool:
        """Spin until ``topic`` (a bag topic, or ``/clock``) has a subscriber (or timeout /
        ``alive()`` turns False)."""
        pub = self._clock_pub if topic == "/clock" else self.publishers[topic]
        deadline = time.monotonic() + timeout_s
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline or not alive():
                return False
            spin(0.05)
        return True

    def publish_clock(self, t_ns: int, force: bool = True) -> None:
        """``/clock`` = ``t_ns`` (with ``force`` False only if a clock period has passed)."""
        if self._clock_pub is None:
            return
        now = time.monotonic()
        if force or now - self._clock_sent >= self._clock_period:
            from builtin_interfaces.msg import Time

            sec, nanosec = divmod(int(t_ns), 1_000_000_000)
            self._clock_pub.publish(self._clock_cls(clock=Time(sec=sec, nanosec=nanosec)))
            self._clock_sent = now

    def play(self, rate: float, spin: Callable[[float], None],
             on_published: Callable[[BagMessage, float], None] | None = None,
             step: Callable[[BagMessage], None] | None = None, step_topic: str | None = None,
             loops: int = 1) -> int:
        """Publish everything ``loops`` times (0 = until interrupted); ``rate`` > 0 keeps bag
        timing scaled by ``rate``, 0 = no waiting.

        ``on_published(msg, wall_time)`` is called after each publish; ``step(msg)`` after each
        message on ``step_topic`` (lockstep). Returns the number of messages published.
        """
        n, loop = 0, 0
        while loops == 0 or loop < loops:
            n += self._play_once(rate, spin, on_published, step, step_topic)
            loop += 1
        return n

    def _play_once(self, rate: float, spin: Callable[[float], None],
                   on_published: Callable[[BagMessage, float], None] | None,
                   step: Callable[[BagMessage], None] | None, step_topic: str | None) -> int:
        t0_bag, t0_wall = self.messages[0].t_ns, time.monotonic()
        for m in self.messages:
            if rate > 0:
                due = t0_wall + (m.t_ns - t0_bag) / 1e9 / rate
                while (left := due - time.monotonic()) > 0:
                    bag_now = t0_bag + int((time.monotonic() - t0_wall) * rate * 1e9)
                    self.publish_clock(min(bag_now, m.t_ns), force=False)
                    spin(min(left, self._clock_period or 0.01, 0.01))
            self.publish_clock(m.t_ns)
            self.publishers[m.topic].publish(m.raw)
            now = time.monotonic()
            if on_published is not None:
                on_published(m, now)
            if step is not None and m.topic == step_topic:
                step(m)
        return len(self.messages)
