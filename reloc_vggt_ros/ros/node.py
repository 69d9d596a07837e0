"""reloc_vggt_node: relocalize a camera against a keyframe database and publish pose + TF.

Lifecycle (REP-2002 managed node): ``configure`` validates parameters, opens the database and
builds the localizer; ``activate`` starts subscriptions, the worker thread and TF timers;
``deactivate`` stops input and drains every queued keyframe; ``cleanup`` closes the database.
Callbacks only pair messages by stamp and hand them to the worker (newest query wins), so
inference never blocks a subscription. Interface and conventions: DESIGN.md §4-5, docs/ros.md.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..dds import ensure_localhost_dds
from ..errors import ConfigError, DataError, RelocError
from ..geometry import Intrinsics, invert_T
from ..keyframes import Keyframe, KeyframeStore
from ..localizer.base import Localizer, PosePrior, RelocResult
from .convert import (camera_info_to_intrinsics, compressed_to_bgr, covariance_problems, image_to_bgr,
                      pose_to_T, pose_with_covariance, stamp_to_ns)
from .diagnostics import NodeStats, to_diagnostic_array
from .mapping import is_new_keyframe
from .params import NodeConfig, declare_params, read_params
from .qos import DIAGNOSTICS_QOS, INITIALPOSE_QOS, KEYFRAME_POSE_QOS, POSE_QOS, sensor_qos
from .sync import StampMatcher
from .tf import TfPublisher, make_tf_lookup
from .worker import Worker

__all__ = ["RelocNode", "main", "NODE_NAME", "build_localizer", "sanitize_covariance"]

NODE_NAME = "reloc_vggt_node"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Frame:
    """A stamp-matched image + camera_info handed to the worker."""

    stamp_ns: int
    image: Any
    info: Any
    received_s: float


def build_localizer(cfg: NodeConfig, store: KeyframeStore) -> Localizer:
    """The configured backend over ``store`` (registry owned by the localizer package)."""
    from ..localizer.registry import make_localizer

    return make_localizer(cfg.backend, store, **cfg.options())


def sanitize_covariance(cov: np.ndarray | None, min_var_m2: float, min_var_rad2: float) -> np.ndarray:
    """Symmetrized 6x6 covariance with variance floors, so a published pose is never over-trusted.

    A missing or non-finite covariance is a backend bug: raise DataError rather than invent one.
    """
    if cov is None:
        raise DataError("backend returned no covariance")
    C = np.asarray(cov, float).reshape(6, 6)
    if not np.all(np.isfinite(C)):
        raise DataError("backend covariance is not finite")
    C = 0.5 * (C + C.T)
    floor = np.array([min_var_m2] * 3 + [min_var_rad2] * 3)
    d = np.diag(C)
    C[np.diag_indices(6)] = np.maximum(d, floor)
    return C


class RelocNode(LifecycleNode):
    """The relocalization node; see the module docstring for the life cycle."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.stats = NodeStats()
        self.cfg: NodeConfig | None = None
        # NB: rclpy.Node owns _services, _timers, _publishers, ...: our attributes must not shadow them
        self._lock = threading.RLock()          # localizer + store: worker vs services
        self._store: KeyframeStore | None = None
        self._localizer: Localizer | None = None
        self._worker: Worker | None = None
        self._subs: list[Any] = []
        self._pubs: list[Any] = []
        self._srvs: list[Any] = []
        self._io_timers: list[Any] = []
        self._tf_pub: TfPublisher | None = None
        self._tf_lookup: Any = None
        self._prior: tuple[PosePrior, float] | None = None
        self._T_map_odom: np.ndarray | None = None
        self._last_size: tuple[int, int] | None = None
        self._kf_poses: list[np.ndarray] = []
        self._active = False
        self._last_warned = ""
        self._map_dirty = False
        try:
            self.cfg = declare_params(self)
        except ConfigError as err:              # reported again (and fatal) at configure
            self.get_logger().error(f"invalid parameters: {err}")
            self.stats.last_reason = f"invalid parameters: {err}"
        self.add_on_set_parameters_callback(self._validate_parameters)
        rate = self.cfg.diagnostics_rate_hz if self.cfg else 1.0
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS,
                                               event_callbacks=self._pub_events())
        self._diag_timer = self.create_timer(1.0 / rate, self.publish_diagnostics)

    # ----------------------------------------------------------------- parameters, events
    def _validate_parameters(self, params: list[Any]) -> SetParametersResult:
        try:
            read_params(self, {p.name: p.value for p in params})
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True, reason="applied at the next configure")

    def _on_incompatible_qos(self, event: Any) -> None:
        self.get_logger().warning(f"incompatible QoS with a peer (policy {event.last_policy_kind})")
        self.stats.warn(f"incompatible QoS with a peer (policy {event.last_policy_kind})")

    def _sub_events(self) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def _pub_events(self) -> PublisherEventCallbacks:
        return PublisherEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.cfg = cfg = read_params(self)
            self.get_logger().info(f"configuring: database={cfg.database_path} backend={cfg.backend} "
                                   f"top_k={cfg.top_k} odom_frame={cfg.odom_frame or '-'} "
                                   f"backend_options={cfg.backend_options or '-'}")
            self._open_database(cfg)
        except (RelocError, ImportError) as err:
            self.get_logger().error(f"configure failed: {err}")
            self.stats.last_reason = f"configure failed: {err}"
            self._close_database()
            return TransitionCallbackReturn.FAILURE
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "/relocalized_pose", POSE_QOS,
                                               event_callbacks=self._pub_events())
        self._pubs = [self._pose_pub]
        self._tf_pub = TfPublisher(self) if cfg.publish_tf else None
        self._tf_lookup = make_tf_lookup(self, tolerance_s=cfg.tf_lookup_timeout_s) if cfg.odom_frame else None
        self._create_services()
        self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(1.0 / cfg.diagnostics_rate_hz, self.publish_diagnostics)
        self.stats.state = "inactive"
        self.stats.last_reason = "configured, not active"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        cfg = self._require_cfg()
        self._worker = Worker(self._handle_frame, self._handle_keyframe, max_keyframes=cfg.mapping_max_queue,
                              min_query_interval_s=1.0 / cfg.max_rate_hz if cfg.max_rate_hz > 0 else 0.0)
        self._worker.start()
        self._image_sync: StampMatcher = StampMatcher(int(cfg.sync_slop_s * 1e9), depth=cfg.qos_depth)
        self._kf_sync: StampMatcher = StampMatcher(int(cfg.sync_slop_s * 1e9), depth=max(cfg.qos_depth, 10))
        qos = sensor_qos(cfg.qos_depth)
        ev = self._sub_events()
        if cfg.use_compressed:
            self._subs.append(self.create_subscription(CompressedImage, "image/compressed", self.image_callback,
                                                       qos, event_callbacks=ev))
        else:
            self._subs.append(self.create_subscription(Image, "image", self.image_callback, qos, event_callbacks=ev))
        self._subs.append(self.create_subscription(CameraInfo, "camera_info", self.camera_info_callback, qos,
                                                   event_callbacks=ev))
        self._subs.append(self.create_subscription(PoseWithCovarianceStamped, "initialpose",
                                                   self.initialpose_callback, INITIALPOSE_QOS, event_callbacks=ev))
        if cfg.mapping_enabled:
            self._subs.append(self.create_subscription(PoseStamped, "keyframe_pose", self.keyframe_pose_callback,
                                                       KEYFRAME_POSE_QOS, event_callbacks=ev))
        if cfg.odom_frame and cfg.publish_tf:
            self._io_timers.append(self.create_timer(1.0 / cfg.tf_publish_rate_hz, self._republish_map_odom))
        self._active = True
        self.stats.state = "active"
        self.stats.last_reason = "waiting for images"
        self.get_logger().info(f"active: {len(self._store or [])} keyframes, "
                               f"{'compressed' if cfg.use_compressed else 'raw'} images")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_io()
        self.stats.state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        self.stats.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_io()
        self._teardown()
        self.stats.state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop_io(self) -> None:
        """Stop input first, then let the worker finish every queued keyframe."""
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for timer in self._io_timers:
            self.destroy_timer(timer)
        self._io_timers = []
        if self._worker is not None:
            pending = self._worker.pending_keyframes()
            if pending:
                self.get_logger().info(f"writing {pending} queued keyframes before stopping")
            self._worker.stop(drain=True)
            self._worker = None

    def _teardown(self) -> None:
        for pub in self._pubs:
            self.destroy_publisher(pub)
        self._pubs = []
        for srv in self._srvs:
            self.destroy_service(srv)
        self._srvs = []
        if self._tf_pub is not None:
            self._tf_pub.destroy(self)
            self._tf_pub = None
        if self._tf_lookup is not None:
            self._tf_lookup.destroy(self)
            self._tf_lookup = None
        self._close_database()

    def _require_cfg(self) -> NodeConfig:
        if self.cfg is None:
            raise ConfigError("node has no valid configuration")
        return self.cfg

    # ----------------------------------------------------------------- database
    def _open_database(self, cfg: NodeConfig) -> None:
        with self._lock:
            self._close_database()
            self._store = KeyframeStore.open(cfg.database_path, readonly=not cfg.mapping_enabled)
            self._kf_poses = list(self._store.poses()[1])
            self.stats.database_size = len(self._store)
            if len(self._store) == 0:
                self.get_logger().warning(f"keyframe database {cfg.database_path} is empty: nothing to "
                                          "localize against until keyframes are added (mapping.enabled)")
                self._localizer = None
                return
            t0 = time.monotonic()
            self._localizer = build_localizer(cfg, self._store)
            self.get_logger().info(f"{cfg.backend} localizer over {len(self._store)} keyframes ready "
                                   f"in {time.monotonic() - t0:.1f} s")

    def _close_database(self) -> None:
        with self._lock:
            self._localizer = None
            if self._store is not None:
                self._store.close()
                self._store = None

    def _create_services(self) -> None:
        try:
            from std_srvs.srv import Trigger
        except ImportError:
            self.get_logger().warning("std_srvs not importable: save/reload services disabled")
            return
        self._srvs = [self.create_service(Trigger, "~/save_database", self._save_callback),
                          self.create_service(Trigger, "~/reload_database", self._reload_callback)]

    def _save_callback(self, request: Any, response: Any) -> Any:
        cfg = self._require_cfg()
        try:
            with self._lock, sqlite3.connect(cfg.database_path) as src:
                if cfg.save_path:
                    with sqlite3.connect(cfg.save_path) as dst:
                        src.backup(dst)
                    response.message = f"copied {self.stats.database_size} keyframes to {cfg.save_path}"
                else:
                    src.execute("PRAGMA wal_checkpoint(FULL)")
                    response.message = f"{self.stats.database_size} keyframes checkpointed in {cfg.database_path}"
            response.success = True
        except sqlite3.Error as err:
            response.success, response.message = False, f"save failed: {err}"
        self.get_logger().info(response.message)
        return response

    def _reload_callback(self, request: Any, response: Any) -> Any:
        try:
            self._open_database(self._require_cfg())
            response.success, response.message = True, f"reloaded {self.stats.database_size} keyframes"
        except RelocError as err:
            response.success, response.message = False, f"reload failed: {err}"
            self.stats.last_reason = response.message
        self.get_logger().info(response.message)
        return response

    # ----------------------------------------------------------------- callbacks (hand off only)
    def image_callback(self, msg: Any) -> None:
        self.stats.on_input()
        stamp = stamp_to_ns(msg.header.stamp)
        before = self._image_sync.unmatched_a
        pair = self._image_sync.add_a(stamp, msg)
        self._note_unmatched(before)
        if pair is not None:
            self._offer(*pair)

    def camera_info_callback(self, msg: Any) -> None:
        before = self._image_sync.unmatched_a
        pair = self._image_sync.add_b(stamp_to_ns(msg.header.stamp), msg)
        self._note_unmatched(before)
        if pair is not None:
            self._offer(*pair)

    def keyframe_pose_callback(self, msg: Any) -> None:
        pair = self._kf_sync.add_b(stamp_to_ns(msg.header.stamp), msg)
        if pair is not None:
            self._offer_keyframe(pair)

    def initialpose_callback(self, msg: Any) -> None:
        cfg = self._require_cfg()
        try:
            if msg.header.frame_id.lstrip("/") != cfg.map_frame:
                raise DataError(f"initialpose frame {msg.header.frame_id!r} is not {cfg.map_frame!r}")
            T = pose_to_T(msg.pose.pose)
        except DataError as err:
            self.get_logger().warning(f"ignoring /initialpose: {err}")
            self.stats.warn(f"ignored initialpose: {err}")
            return
        cov = np.asarray(msg.pose.covariance, float).reshape(6, 6)
        self._prior = (PosePrior(T, cov if np.any(cov) else None), time.monotonic())
        self.get_logger().info(f"prior set at ({T[0, 3]:.2f}, {T[1, 3]:.2f}, {T[2, 3]:.2f}): retrieval narrowed")

    def _note_unmatched(self, before: int) -> None:
        lost = self._image_sync.unmatched_a - before
        if lost > 0:
            self.stats.unmatched_images += lost
            cfg = self._require_cfg()
            reason = (f"no camera_info within {cfg.sync_slop_s:.3f} s of the image stamp "
                      "(is camera_info published with the image's stamp?)")
            if reason != self._last_warned:
                self.get_logger().warning(f"{lost} image(s) dropped: {reason}")
                self._last_warned = reason
            self.stats.on_reject_input(None, reason)

    def _offer(self, stamp_ns: int, image: Any, info: Any) -> None:
        frame = _Frame(stamp_ns, image, info, time.monotonic())
        if self._worker is None:
            return
        if self._worker.offer_query(frame):
            self.stats.dropped = self._worker.dropped
        if self._require_cfg().mapping_enabled:
            pair = self._kf_sync.add_a(stamp_ns, frame)
            if pair is not None:
                self._offer_keyframe(pair)

    def _offer_keyframe(self, pair: tuple[int, _Frame, Any]) -> None:
        if self._worker is not None and self._worker.offer_keyframe(pair):
            self.stats.keyframes_received += 1
        else:
            self.stats.warn("keyframe queue full: keyframe refused")

    # ----------------------------------------------------------------- worker side
    def _decode(self, frame: _Frame) -> tuple[np.ndarray, Intrinsics]:
        """Image + intrinsics, or DataError with the reason the frame is unusable."""
        image = compressed_to_bgr(frame.image) if isinstance(frame.image, CompressedImage) else image_to_bgr(frame.image)
        intr = camera_info_to_intrinsics(frame.info)
        h, w = image.shape[:2]
        if (w, h) != (intr.width, intr.height):
            raise DataError(f"camera_info is for {intr.width}x{intr.height} but the image is {w}x{h}")
        if self._last_size is not None and self._last_size != (w, h):
            text = f"image size changed from {self._last_size[0]}x{self._last_size[1]} to {w}x{h}"
            self.get_logger().warning(text)
            self.stats.warn(text)
        self._last_size = (w, h)
        return image, intr

    def _reject(self, frame: _Frame, reason: str, result: RelocResult | None = None, warn: bool = False) -> None:
        """Count a frame that is not published; log a warning once per new reason (no spam)."""
        if warn and reason != self._last_warned:
            self.get_logger().warning(f"frame {frame.stamp_ns} rejected: {reason}")
        self._last_warned = reason if warn else self._last_warned
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        if result is None:
            self.stats.on_reject_input(frame.stamp_ns, reason)
        else:
            self.stats.on_result(frame.stamp_ns, latency_ms, False, reason, result.confidence, result.num_inliers)
        self.get_logger().debug(f"frame {frame.stamp_ns}: not published: {reason}")

    def _handle_frame(self, frame: _Frame) -> None:
        cfg = self._require_cfg()
        try:
            image, intr = self._decode(frame)
        except DataError as err:
            self._reject(frame, str(err), warn=True)
            return
        with self._lock:
            if self._map_dirty and (self._worker is None or self._worker.pending_keyframes() == 0):
                self._map_dirty = False  # re-index once a keyframe burst is written, not per keyframe
                self._refresh_localizer(cfg)
            if self._localizer is None:
                self._reject(frame, "keyframe database is empty", warn=True)
                return
            try:
                result = self._localizer.localize(image, intr, stamp_ns=frame.stamp_ns, prior=self._current_prior())
            except Exception as err:  # noqa: BLE001 - one failing frame must not go silent or stop the node
                if f"localizer failed: {err}" != self._last_warned:
                    self.get_logger().error(f"localizer failed on frame {frame.stamp_ns}: {err!r}")
                self._reject(frame, f"localizer failed: {err}", warn=True)
                return
        self._publish_result(cfg, frame, result)

    def _publish_result(self, cfg: NodeConfig, frame: _Frame, result: RelocResult) -> None:
        if not result.ok:
            return self._reject(frame, f"{result.status.value}: {result.reason}", result)
        if result.confidence < cfg.min_confidence:
            return self._reject(frame, f"confidence {result.confidence:.2f} < min_confidence {cfg.min_confidence}", result)
        if result.num_inliers < cfg.min_inliers:
            return self._reject(frame, f"{result.num_inliers} inliers < min_inliers {cfg.min_inliers}", result)
        try:
            cov = sanitize_covariance(result.covariance, cfg.min_variance_m2, cfg.min_variance_rad2)
            problems = covariance_problems(cov, cfg.map_frame, cfg.map_frame)
            if problems:
                raise DataError("; ".join(problems))
        except DataError as err:
            return self._reject(frame, f"unusable covariance: {err}", result)
        T_map_cam = np.asarray(result.T_world_cam, float)
        if not self._active:
            return None
        self._pose_pub.publish(pose_with_covariance(T_map_cam, cov, frame.stamp_ns, cfg.map_frame))
        camera_frame = cfg.camera_frame or frame.image.header.frame_id
        self._publish_tf(cfg, T_map_cam, frame.stamp_ns, camera_frame)
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        self.stats.on_result(frame.stamp_ns, latency_ms, True, "localized", result.confidence, result.num_inliers)
        if self._prior is not None and cfg.prior_timeout_s == 0:
            self._prior = None
        return None

    def _publish_tf(self, cfg: NodeConfig, T_map_cam: np.ndarray, stamp_ns: int, camera_frame: str) -> None:
        if self._tf_pub is None or not camera_frame:
            return
        if not cfg.odom_frame:
            self._tf_pub.send(T_map_cam, stamp_ns, cfg.map_frame, camera_frame)
            return
        try:
            T_odom_cam = self._tf_lookup.lookup(cfg.odom_frame, camera_frame, stamp_ns)
        except LookupError as err:
            self.stats.warn(f"no TF {cfg.odom_frame} -> {camera_frame} at the image stamp: {err}")
            return
        self._T_map_odom = T_map_cam @ invert_T(T_odom_cam)
        self._tf_pub.send(self._T_map_odom, stamp_ns + int(cfg.transform_tolerance_s * 1e9),
                          cfg.map_frame, cfg.odom_frame)

    def _republish_map_odom(self) -> None:
        """Keep map->odom alive between fixes, future-dated like nav2 AMCL."""
        cfg = self.cfg
        if self._T_map_odom is None or self._tf_pub is None or cfg is None:
            return
        stamp = self.get_clock().now().nanoseconds + int(cfg.transform_tolerance_s * 1e9)
        self._tf_pub.send(self._T_map_odom, stamp, cfg.map_frame, cfg.odom_frame)

    def _current_prior(self) -> PosePrior | None:
        if self._prior is None:
            return None
        prior, since = self._prior
        timeout = self._require_cfg().prior_timeout_s
        if timeout > 0 and time.monotonic() - since > timeout:
            self._prior = None
            return None
        return prior

    def _handle_keyframe(self, pair: tuple[int, _Frame, Any]) -> None:
        """Add one keyframe if it is far enough from every stored one (never dropped silently)."""
        cfg = self._require_cfg()
        stamp_ns, frame, pose_msg = pair
        try:
            if pose_msg.header.frame_id.lstrip("/") != cfg.map_frame:
                raise DataError(f"keyframe_pose frame {pose_msg.header.frame_id!r} is not {cfg.map_frame!r}")
            T_map_cam = pose_to_T(pose_msg.pose)
            image, intr = self._decode(frame)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise DataError("keyframe image does not encode as JPEG")
        except DataError as err:
            return self._keyframe_outcome(stamp_ns, f"keyframe rejected: {err}", warn=True)
        if not is_new_keyframe(T_map_cam, self._kf_poses, cfg.mapping_min_distance_m, cfg.mapping_min_angle_rad):
            return self._keyframe_outcome(stamp_ns, "keyframe skipped: too close to an existing one")
        kf = Keyframe(name=f"live_{stamp_ns}", image_jpeg=jpeg.tobytes(), intrinsics=intr,
                      T_world_cam=T_map_cam, stamp_ns=stamp_ns)
        with self._lock:
            if self._store is None:
                return self._keyframe_outcome(stamp_ns, "keyframe rejected: no database open", warn=True)
            try:
                kf_id = self._store.add_keyframe(kf)
            except RelocError as err:
                return self._keyframe_outcome(stamp_ns, f"keyframe rejected by the database: {err}", warn=True)
            self._kf_poses.append(T_map_cam)
            self.stats.keyframes_added += 1
            self.stats.database_size = len(self._store)
            self.stats.last_keyframe_reason = f"keyframe {kf_id} added"
            self._map_dirty = True  # re-indexed before the next query, not per keyframe
        return None

    def _keyframe_outcome(self, stamp_ns: int, reason: str, warn: bool = False) -> None:
        self.stats.keyframes_skipped += 1
        self.stats.last_keyframe_reason = reason
        if warn:
            self.get_logger().warning(f"keyframe at {stamp_ns}: {reason}")

    def _refresh_localizer(self, cfg: NodeConfig) -> None:
        """Index keyframes added live (building the localizer when the map was empty)."""
        t0 = time.monotonic()
        try:
            if self._localizer is None:
                self._localizer = build_localizer(cfg, self._store)  # first keyframe of an empty map
            else:
                self._localizer.refresh()
        except (RelocError, ImportError) as err:  # keep mapping; the reason is in diagnostics
            self.stats.warn(f"localizer refresh failed: {err}")
            return
        self.get_logger().info(f"map refreshed: {len(self._store or [])} keyframes in "
                               f"{time.monotonic() - t0:.2f} s")

    # ----------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        if self._worker is not None:
            self.stats.dropped = self._worker.dropped
        self._diag_pub.publish(to_diagnostic_array(self.stats, self.get_name(), self.get_clock().now().to_msg()))


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; queued keyframes are written before exit."""
    ensure_localhost_dds()
    args = sys.argv if argv is None else argv
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = RelocNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.cfg is not None and node.cfg.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.get_logger().info("shutting down")
        node.trigger_shutdown() if node.stats.state not in ("finalized",) else None
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
