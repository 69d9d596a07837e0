"""The executor every rclpy process of this package spins: the node, bag playback, ``evaluate``, benches.

rclpy's events executor where this rclpy has it (the kilted and jazzy wheels do): it waits in C++,
where the single-threaded executor rebuilds its wait set in Python on every ``spin_once`` and so
holds the GIL for much of each callback. In the node that GIL is what the frame worker's thread
needs: on 2 cores with a 30 Hz stream the single-threaded executor doubled the tracked frames'
latency (``bench/stream.py``). The single-threaded executor otherwise.
"""

from __future__ import annotations

from typing import Any

from rclpy.executors import Executor, SingleThreadedExecutor

__all__ = ["make_executor"]


def make_executor(context: Any = None) -> Executor:
    """An executor on ``context`` (rclpy's default context when None)."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)
