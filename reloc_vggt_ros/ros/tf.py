"""TF: publish transforms, and look up ``odom -> camera`` at an image stamp.

tf2_ros is used when it imports (a full ROS install). The PyPI wheels have no tf2_ros, so
:class:`TransformBuffer` is a small stand-in: it keeps /tf edges for ``cache_s`` seconds and
/tf_static edges forever, walks the frame tree and interpolates each dynamic edge at the asked
stamp (linear translation, geodesic rotation), refusing to extrapolate beyond ``tolerance_ns``.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

import numpy as np

from ..geometry import interpolate_T, invert_T
from .convert import stamp_to_ns, transform_stamped, transform_to_T
from .qos import TF_QOS, TF_STATIC_QOS

__all__ = ["TransformBuffer", "interpolate_T", "TfListener", "TfPublisher", "make_tf_lookup"]


class _Edge:
    """Time-stamped transforms parent <- child, kept sorted by stamp."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.poses: list[np.ndarray] = []
        self.static = False

    def add(self, stamp_ns: int, T: np.ndarray, static: bool, cache_ns: int) -> None:
        if static:
            self.static, self.stamps, self.poses = True, [0], [T]
            return
        i = bisect.bisect_right(self.stamps, stamp_ns)
        if i > 0 and self.stamps[i - 1] == stamp_ns:
            self.poses[i - 1] = T
        else:
            self.stamps.insert(i, stamp_ns)
            self.poses.insert(i, T)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        del self.stamps[:cut], self.poses[:cut]

    def at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        if self.static or stamp_ns == 0:  # stamp 0 = the latest, as in tf2
            return self.poses[-1]
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            return self.poses[i]
        if 0 < i < len(self.stamps):
            s0, s1 = self.stamps[i - 1], self.stamps[i]
            return interpolate_T(self.poses[i - 1], self.poses[i], (stamp_ns - s0) / (s1 - s0))
        nearest = 0 if i == 0 else len(self.stamps) - 1
        gap = abs(self.stamps[nearest] - stamp_ns)
        if gap <= tolerance_ns:
            return self.poses[nearest]
        side = "before the oldest" if i == 0 else "after the newest"
        raise LookupError(f"stamp is {gap / 1e9:.3f} s {side} transform (no extrapolation)")


class TransformBuffer:
    """Frame tree with interpolation; thread-safe (callbacks add, the worker looks up)."""

    def __init__(self, cache_s: float = 10.0, tolerance_s: float = 0.0) -> None:
        self._cache_ns = int(cache_s * 1e9)
        self._tolerance_ns = int(tolerance_s * 1e9)
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._parent: dict[str, str] = {}
        self._lock = threading.Lock()

    def set_transform(self, T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str,
                      static: bool = False) -> None:
        with self._lock:
            self._parent[child] = parent  # a frame has one parent (REP-105 tree)
            self._edges.setdefault((parent, child), _Edge()).add(stamp_ns, np.asarray(T_parent_child, float),
                                                                   static, self._cache_ns)

    def add_message(self, msg: Any, static: bool = False) -> None:
        """Add every transform of a tf2_msgs/TFMessage."""
        for tr in msg.transforms:
            self.set_transform(transform_to_T(tr.transform), stamp_to_ns(tr.header.stamp),
                               tr.header.frame_id.lstrip("/"), tr.child_frame_id.lstrip("/"), static)

    def clear(self) -> None:
        """Forget every /tf transform, keep /tf_static (tf2's reset on a backwards time jump)."""
        with self._lock:
            for key in [k for k, e in self._edges.items() if not e.static]:
                del self._edges[key]
                if self._parent.get(key[1]) == key[0]:
                    del self._parent[key[1]]

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns`` (0: the latest); LookupError saying which link is missing."""
        with self._lock:
            up_t, up_s = self._chain(target), self._chain(source)
            common = next((f for f in up_s if f in up_t), None)
            if common is None:
                raise LookupError(f"frames {target!r} and {source!r} are not connected in TF")
            T_common_source = self._walk(up_s[: up_s.index(common) + 1], stamp_ns)
            T_common_target = self._walk(up_t[: up_t.index(common) + 1], stamp_ns)
        return invert_T(T_common_target) @ T_common_source

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent and len(chain) < 100:
            chain.append(self._parent[chain[-1]])
        return chain

    def _walk(self, chain: list[str], stamp_ns: int) -> np.ndarray:
        """T_root_leaf along chain [leaf, ..., root]."""
        T = np.eye(4)
        for child, parent in zip(chain[:-1], chain[1:]):
            try:
                T = self._edges[(parent, child)].at(stamp_ns, self._tolerance_ns) @ T
            except LookupError as err:
                raise LookupError(f"{parent} -> {child}: {err}") from None
        return T


class TfListener:
    """Feeds a :class:`TransformBuffer` from /tf and /tf_static (the tf2_ros-free path)."""

    def __init__(self, node: Any, buffer: TransformBuffer) -> None:
        from tf2_msgs.msg import TFMessage

        self.buffer = buffer
        self._subs = [
            node.create_subscription(TFMessage, "/tf", lambda m: buffer.add_message(m, False), TF_QOS),
            node.create_subscription(TFMessage, "/tf_static", lambda m: buffer.add_message(m, True), TF_STATIC_QOS),
        ]

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        return self.buffer.lookup(target, source, stamp_ns)

    def clear(self) -> None:
        self.buffer.clear()

    def destroy(self, node: Any) -> None:
        for sub in self._subs:
            node.destroy_subscription(sub)
        self._subs = []


class _Tf2RosLookup:
    """The same interface over tf2_ros.Buffer, used when tf2_ros is importable."""

    def __init__(self, node: Any, cache_s: float, tolerance_s: float) -> None:
        import tf2_ros
        from rclpy.duration import Duration

        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
        self._listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        self._tolerance_s = tolerance_s

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        from rclpy.time import Time

        try:
            tr = self.buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
        except Exception as err:  # noqa: BLE001 - tf2 raises several exception types
            raise LookupError(str(err)) from err
        return transform_to_T(tr.transform)

    def clear(self) -> None:
        self.buffer.clear()  # tf2 keeps static transforms on clear, as TransformBuffer does

    def destroy(self, node: Any) -> None:
        self._listener.unregister()


def make_tf_lookup(node: Any, cache_s: float = 10.0, tolerance_s: float = 0.0) -> Any:
    """tf2_ros when importable, else the /tf + /tf_static listener above."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return TfListener(node, TransformBuffer(cache_s, tolerance_s))
    return _Tf2RosLookup(node, cache_s, tolerance_s)


class TfPublisher:
    """Publishes transforms on /tf (dynamic) as TFMessage."""

    def __init__(self, node: Any) -> None:
        from tf2_msgs.msg import TFMessage

        self._cls = TFMessage
        self._pub = node.create_publisher(TFMessage, "/tf", TF_QOS)

    def send(self, T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> None:
        self._pub.publish(self._cls(transforms=[transform_stamped(T_parent_child, stamp_ns, parent, child)]))

    def destroy(self, node: Any) -> None:
        node.destroy_publisher(self._pub)
