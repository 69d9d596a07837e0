"""Play a bag into live ROS topics (``ros2 bag play`` is not on PyPI).

Messages are published as the raw CDR bytes stored in the bag, so nothing is re-encoded.
Publishers are reliable (they deliver to best-effort subscribers too). ``rate`` scales the
bag's timing; ``step`` (lockstep) lets a caller wait between images, e.g. for the node's answer.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy

from ..data.bag import BagMessage, read_bag
from ..errors import DataError

__all__ = ["message_class", "BagPlayer"]

logger = logging.getLogger(__name__)

PLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as err:
        raise DataError(f"message type {msgtype} is not available in this ROS install: {err}") from err


class BagPlayer:
    """Publishes the messages of a bag on a node; ``remap`` renames topics."""

    def __init__(self, node: Any, bag: Path | str, remap: dict[str, str] | None = None,
                 topics: Iterable[str] | None = None) -> None:
        self.node = node
        self.messages: list[BagMessage] = list(read_bag(bag, set(topics) if topics else None))
        if not self.messages:
            raise DataError(f"{bag}: no messages to play")
        self.remap = remap or {}
        self.publishers: dict[str, Any] = {}
        for m in self.messages:
            if m.topic not in self.publishers:
                self.publishers[m.topic] = node.create_publisher(message_class(m.msgtype),
                                                                 self.remap.get(m.topic, m.topic), PLAY_QOS)

    def wait_for_subscribers(self, topic: str, timeout_s: float, spin: Callable[[float], None],
                             alive: Callable[[], bool] = lambda: True) -> bool:
        """Spin until ``topic`` has a subscriber (or timeout / ``alive()`` turns False)."""
        pub = self.publishers[topic]
        deadline = time.monotonic() + timeout_s
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline or not alive():
                return False
            spin(0.05)
        return True

    def play(self, rate: float, spin: Callable[[float], None],
             on_published: Callable[[BagMessage, float], None] | None = None,
             step: Callable[[BagMessage], None] | None = None, step_topic: str | None = None) -> int:
        """Publish everything; ``rate`` > 0 keeps bag timing scaled by ``rate``, 0 = no waiting.

        ``on_published(msg, wall_time)`` is called after each publish; ``step(msg)`` after each
        message on ``step_topic`` (lockstep). Returns the number of messages published.
        """
        t0_bag, t0_wall = self.messages[0].t_ns, time.monotonic()
        for m in self.messages:
            if rate > 0:
                due = t0_wall + (m.t_ns - t0_bag) / 1e9 / rate
                while (left := due - time.monotonic()) > 0:
                    spin(min(left, 0.01))
            self.publishers[m.topic].publish(m.raw)
            now = time.monotonic()
            if on_published is not None:
                on_published(m, now)
            if step is not None and m.topic == step_topic:
                step(m)
        return len(self.messages)
