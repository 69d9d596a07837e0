"""reloc_vggt_node: relocalize a camera against a keyframe database and publish pose + TF.

Wiring only (nav2 AMCL style): parameters, topics, services, timers and the lifecycle. The
policy — acceptance, covariance, map->odom, prior expiry, live mapping, saving — is the ROS-free
:class:`~reloc_vggt_ros.session.Session`; this node decodes messages for it and turns its
decisions into messages and diagnostics.

Lifecycle (REP-2002 managed node): ``configure`` validates parameters, opens the database and
builds the localizer; ``activate`` starts subscriptions, the worker thread and TF timers;
``deactivate`` stops input and drains every queued keyframe; ``cleanup`` closes the database.
Callbacks only pair messages by stamp and hand them to the worker (newest query wins), so
inference never blocks a subscription. Frames follow REP-105 like nav2 AMCL: poses in and out
are of ``base_frame`` (the camera with ``base_frame: ''``), converted through TF; every stamp the
node makes is on its ROS clock (``use_sim_time`` honoured), and a backwards time jump (a bag
loop) resets TF, prior and map->odom. With ``rig.cameras`` each camera has its own image +
camera_info pair; frames are grouped by stamp (``rig_sync``) and each group is one rig query of the
base pose. Interface and conventions: docs/ros.md.
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..dds import ensure_localhost_dds
from ..errors import ConfigError, DataError, RelocError
from ..geometry import Intrinsics
from ..keyframes import KeyframeStore
from ..keyframes.sync import FleetSync
from ..localizer import registry
from ..localizer.base import Localizer
from ..localizer.geometric.rig import RigCamera, RigFrame
from ..mapfree.registry import make_mapfree_localizer, weights_options
from ..session import KeyframeOutcome, Published, Rejected, Session, camera_pose, check_stamp
from ..session.map_free import MapFreeLocalizerAdapter
from .convert import (camera_info_to_intrinsics, compressed_to_bgr, image_to_bgr, pose_to_T, pose_with_covariance,
                      stamp_to_ns)
from .diagnostics import NodeStats, to_diagnostic_array
from .executor import make_executor
from .params import NodeConfig, declare_backend, check_overrides, declare_params, read_backend_config, read_params
from .qos import DIAGNOSTICS_QOS, INITIALPOSE_QOS, KEYFRAME_POSE_QOS, POSE_QOS, sensor_qos
from .rig_sync import RigInputs, RigSet
from .sync import StampMatcher
from .tf import TfPublisher, make_tf_lookup
from .worker import Worker

__all__ = ["RelocNode", "main", "NODE_NAME"]

NODE_NAME = "reloc_vggt_node"


@dataclass(frozen=True)
class _Frame:
    """A stamp-matched image + camera_info handed to the worker."""

    stamp_ns: int
    image: Any
    info: Any
    received_s: float
    epoch: int = 0          # ROS-time epoch (bumped by a backwards jump): older frames are stale


@dataclass(frozen=True)
class _RigQuery:
    """The stamp-grouped frames of a camera rig (``rig.cameras``), handed to the worker as one query."""

    stamp_ns: int
    frames: dict[str, _Frame]
    missing: list[str]
    received_s: float
    epoch: int = 0


class RelocNode(LifecycleNode):
    """The relocalization node; see the module docstring for the life cycle."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.stats = NodeStats()
        self.cfg: NodeConfig | None = None
        # NB: rclpy.Node owns _services, _timers, _publishers, ...: our attributes must not shadow them
        self._session: Session | None = None
        self._worker: Worker | None = None
        self._fleet: FleetSync | None = None
        self._subs: list[Any] = []
        self._pubs: list[Any] = []
        self._srvs: list[Any] = []
        self._io_timers: list[Any] = []
        self._tf_pub: TfPublisher | None = None
        self._tf_lookup: Any = None
        self._T_map_odom: np.ndarray | None = None   # the last one sent, kept alive by a timer
        self._time_epoch = 0
        self._jump_handle: Any = None
        self._map_free: MapFreeLocalizerAdapter | None = None    # mode map_free: the reference holder
        self._rig: RigInputs | None = None                       # rig.cameras: per camera pairing + grouping
        self._last_T_map_cam: np.ndarray | None = None           # the last published pose
        self._active = False
        self._last_warned = ""
        self._last_warning_kind = ""
        self._init_parameters()
        self._init_diagnostics(self.cfg.diagnostics_rate_hz if self.cfg else 1.0)

    # ----------------------------------------------------------------- init checklist
    def _init_parameters(self) -> None:
        """Declare every parameter (node + the backend's namespace); validate each later set."""
        try:
            self.cfg = declare_params(self)
            read_backend_config(self, self.cfg)
        except (ConfigError, ImportError) as err:  # reported again (and fatal) at configure
            self.get_logger().error(f"invalid parameters: {err}")
            self.stats.last_reason = f"invalid parameters: {err}"
        self.add_on_set_parameters_callback(self._validate_parameters)

    def _init_diagnostics(self, rate_hz: float) -> None:
        if not hasattr(self, "_diag_pub"):
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS,
                                                   event_callbacks=self._pub_events())
        else:
            self.destroy_timer(self._diag_timer)
        # wall-clock rate (a paused or slow sim clock must not silence diagnostics), ROS-clock stamps
        self._diag_timer = self.create_timer(1.0 / rate_hz, self.publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _init_session(self, cfg: NodeConfig) -> None:
        """Validate the backend settings, open the database and build the localizer."""
        if cfg.mode == "map_free":
            return self._init_map_free(cfg)
        declare_backend(self, cfg.backend)
        check_overrides(self, cfg.backend)
        if cfg.backend_options:
            self.get_logger().warning(f"backend_options is deprecated: set {cfg.backend}.* parameters "
                                      f"(e.g. {cfg.backend}: {{preset: realtime}}) instead")
        backend_cfg = read_backend_config(self, cfg)

        def build(store: KeyframeStore) -> Localizer:
            return registry.make_localizer(cfg.backend, store, config=backend_cfg)

        self._close_session()
        self._session = Session(cfg, build, clock=lambda: self.get_clock().now().nanoseconds / 1e9,
                                on_warning=self._warn, log=self.get_logger())
        self._session.open(cfg.database_path, readonly=not cfg.mapping.enabled)
        self.stats.database_size = self._session.size
        self._init_fleet(cfg)

    def _init_fleet(self, cfg: NodeConfig) -> None:
        """Optional background sync of the database with a fleet map (fleet.url); state in /diagnostics."""
        session = self._session
        if cfg.fleet.url and session is not None:
            self._fleet = FleetSync(cfg.fleet, cfg.database_path, position=session.position,
                                    on_pulled=lambda n: session.keyframes_added_elsewhere())
            self._fleet.start()

    def _init_map_free(self, cfg: NodeConfig) -> None:
        """Build the map-free backend and load the configured reference; a reference that does not
        load leaves the node up, waiting for ~/set_reference, with the reason in diagnostics."""
        backend = make_mapfree_localizer(cfg.map_free.backend, weights_options(cfg.map_free.backend, cfg.engine))
        self._close_session()
        self._map_free = MapFreeLocalizerAdapter(backend, cfg.map_free.window)
        self._last_T_map_cam = None
        self._session = Session(cfg, lambda store: backend, clock=lambda: self.get_clock().now().nanoseconds / 1e9,
                                on_warning=self._warn, log=self.get_logger())
        self._session.attach(self._map_free)
        self.stats.map_free = True
        try:
            self.get_logger().info(f"map_free ({backend.name}): {self._map_free.load(cfg.map_free)}")
        except DataError as err:
            self._warn(f"map-free reference not loaded: {err}")
        self._note_reference()

    def _note_reference(self) -> None:
        ref = self._map_free.reference if self._map_free is not None else None
        self.stats.reference = ref.name if ref is not None else ""

    def _init_publishers(self) -> None:
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "/relocalized_pose", POSE_QOS,
                                               event_callbacks=self._pub_events())
        self._pubs = [self._pose_pub]

    def _init_transforms(self, cfg: NodeConfig) -> None:
        """TF out (map->odom or map->base), TF in (extrinsic, odom, poses in other frames), and the
        reset on a backwards jump of ROS time (tf2_ros's buffer does the same)."""
        self._tf_pub = TfPublisher(self) if cfg.publish_tf else None
        self._tf_lookup = make_tf_lookup(self, tolerance_s=cfg.tf_lookup_timeout_s)
        if self._jump_handle is None:
            self._jump_handle = self.get_clock().create_jump_callback(
                JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
                post_callback=self._on_time_jump)

    def _init_services(self) -> None:
        try:
            from std_srvs.srv import Trigger
        except ImportError:
            self.get_logger().warning("std_srvs not importable: save/reload services disabled")
            return
        self._srvs = [self.create_service(Trigger, "~/save_database", self._save_callback),
                      self.create_service(Trigger, "~/reload_database", self._reload_callback)]
        if self._map_free is not None:
            self._srvs.append(self.create_service(Trigger, "~/set_reference", self._set_reference_callback))
        if self._require_cfg().tracking.enabled:
            self._srvs.append(self.create_service(Trigger, "~/relocalize", self._relocalize_callback))

    def _init_worker(self, cfg: NodeConfig) -> None:
        # while tracking, frames wait in order (a tracked frame is cheap); throttled, the newest wins
        backlog = cfg.tracking.enabled and cfg.max_rate_hz <= 0
        self._worker = Worker(self._handle_frame, self._handle_keyframe, max_keyframes=cfg.mapping.max_queue,
                              min_query_interval_s=1.0 / cfg.max_rate_hz if cfg.max_rate_hz > 0 else 0.0,
                              max_queries=cfg.tracking.queue_depth if backlog else 1,
                              keep_backlog=lambda: self._session is not None and self._session.has_track)
        self._worker.start()

    def _init_subscriptions(self, cfg: NodeConfig) -> None:
        self._image_sync: StampMatcher = StampMatcher(int(cfg.sync_slop_s * 1e9), depth=cfg.qos_depth)
        self._kf_sync: StampMatcher = StampMatcher(int(cfg.sync_slop_s * 1e9), depth=max(cfg.qos_depth, 10))
        qos, ev = sensor_qos(cfg.qos_depth), self._sub_events()
        image_type, image_topic = (CompressedImage, "image/compressed") if cfg.use_compressed else (Image, "image")
        self._subs = [self.create_subscription(PoseWithCovarianceStamped, "initialpose", self.initialpose_callback,
                                               INITIALPOSE_QOS, event_callbacks=ev)]
        if cfg.rig.cameras:
            self._rig = RigInputs(cfg.rig, int(cfg.sync_slop_s * 1e9), depth=max(cfg.qos_depth, 10))
            self.stats.cameras = {c: "no image received yet" for c in cfg.rig.cameras}
            for cam in cfg.rig.cameras:
                on_image = functools.partial(self.rig_image_callback, cam)
                on_info = functools.partial(self.rig_info_callback, cam)
                self._subs += [
                    self.create_subscription(image_type, f"{cam}/{image_topic}", on_image, qos, event_callbacks=ev),
                    self.create_subscription(CameraInfo, f"{cam}/camera_info", on_info, qos, event_callbacks=ev)]
        else:
            self._rig = None
            self._subs += [
                self.create_subscription(image_type, image_topic, self.image_callback, qos, event_callbacks=ev),
                self.create_subscription(CameraInfo, "camera_info", self.camera_info_callback, qos, event_callbacks=ev)]
        if cfg.mapping.enabled:
            self._subs.append(self.create_subscription(PoseStamped, "keyframe_pose", self.keyframe_pose_callback,
                                                       KEYFRAME_POSE_QOS, event_callbacks=ev))

    def _init_timers(self, cfg: NodeConfig) -> None:
        if cfg.odom_frame and cfg.publish_tf:
            self._io_timers.append(self.create_timer(1.0 / cfg.tf_publish_rate_hz, self._republish_map_odom))

    # ----------------------------------------------------------------- parameters, events
    def _validate_parameters(self, params: list[Any]) -> SetParametersResult:
        """Refuse a bad value with the ConfigError text (and a runtime change of the preset)."""
        changes = {p.name: p.value for p in params}
        if not all(self.has_parameter(name) for name in changes):
            return SetParametersResult(successful=True, reason="declared now, validated at configure")
        try:
            cfg = read_params(self, changes)
            preset = f"{cfg.backend}.preset"
            if preset in changes and self.has_parameter(preset) and changes[preset] != self.get_parameter(preset).value:
                raise ConfigError(f"{preset} is fixed at start (the {cfg.backend}.* defaults come from it); "
                                  "restart the node with the new preset")
            read_backend_config(self, cfg, changes)
        except (ConfigError, ImportError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True, reason="applied at the next configure")

    def _on_incompatible_qos(self, event: Any) -> None:
        self._warn(f"incompatible QoS with a peer (policy {event.last_policy_kind})")

    def _sub_events(self) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def _pub_events(self) -> PublisherEventCallbacks:
        return PublisherEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def _on_time_jump(self, jump: Any) -> None:
        """ROS time went backwards (a bag loop, a restarted simulator): everything stamped in the
        abandoned timeline goes — /tf (not /tf_static), the prior, map->odom, unpaired and queued
        frames — and frames received before the jump are never published."""
        self._time_epoch += 1
        if self._tf_lookup is not None:
            self._tf_lookup.clear()
        self._T_map_odom = None
        if self._session is not None:
            self._session.reset_time()
        for sync in (getattr(self, "_image_sync", None), getattr(self, "_kf_sync", None), self._rig):
            if sync is not None:
                sync.clear()
        self._warn(f"ROS time jumped back {-jump.delta.nanoseconds / 1e9:.3f} s (bag loop?): TF buffer, prior and "
                   "map->odom reset, frames from before the jump dropped")

    def _warn(self, text: str) -> None:
        """An operator-facing warning: in diagnostics, and logged once per kind (numbers aside, so
        a TF gap growing frame by frame is one log line)."""
        kind = re.sub(r"\d+(\.\d+)?", "#", text)
        if kind != self._last_warning_kind:
            self.get_logger().warning(text)
            self._last_warning_kind = kind
        self.stats.warn(text)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.cfg = cfg = read_params(self)
            self.get_logger().info(f"configuring: mode={cfg.mode} database={cfg.database_path} backend={cfg.backend} "
                                   f"top_k={cfg.top_k} odom_frame={cfg.odom_frame or '-'}")
            self._init_session(cfg)
        except (RelocError, ImportError) as err:
            self.get_logger().error(f"configure failed: {err}")
            self.stats.last_reason = f"configure failed: {err}"
            self._close_session()
            return TransitionCallbackReturn.FAILURE
        self._init_publishers()
        self._init_transforms(cfg)
        self._init_services()
        self._init_diagnostics(cfg.diagnostics_rate_hz)
        self.stats.state = "inactive"
        self.stats.last_reason = "configured, not active"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        cfg = self._require_cfg()
        self._init_worker(cfg)
        self._init_subscriptions(cfg)
        self._init_timers(cfg)
        self._active = True
        self.stats.state = "active"
        self.stats.last_reason = "waiting for images"
        self.get_logger().info(f"active: {self._session.size if self._session else 0} keyframes, "
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
        self._close_session()

    def _close_session(self) -> None:
        if self._fleet is not None:
            self._fleet.stop()
            self._fleet = None
        if self._session is not None:
            self._session.close()
            self._session = None
        self._map_free = None

    def _require_cfg(self) -> NodeConfig:
        if self.cfg is None:
            raise ConfigError("node has no valid configuration")
        return self.cfg

    # ----------------------------------------------------------------- services
    def _save_callback(self, request: Any, response: Any) -> Any:
        try:
            if self._session is None:
                raise DataError("no database open")
            response.success, response.message = True, self._session.save(self._require_cfg().save_path or None)
        except RelocError as err:
            response.success, response.message = False, f"save failed: {err}"
        self.get_logger().info(response.message)
        return response

    def _relocalize_callback(self, request: Any, response: Any) -> Any:
        """Tracking: relocalize the next frame (gated like every fix) instead of tracking it."""
        if self._session is None:
            response.success, response.message = False, "no database open"
        else:
            response.success, response.message = True, self._session.relocalize_next()
        self.get_logger().info(response.message)
        return response

    def _reload_callback(self, request: Any, response: Any) -> Any:
        try:
            if self._session is None:
                raise DataError("no database open")
            self._session.reload()
            self.stats.database_size = self._session.size
            response.success, response.message = True, f"reloaded {self.stats.database_size} keyframes"
        except (RelocError, ImportError) as err:
            response.success, response.message = False, f"reload failed: {err}"
            self.stats.last_reason = response.message
        self.get_logger().info(response.message)
        return response

    def _set_reference_callback(self, request: Any, response: Any) -> Any:
        """Remember this place: the last localized frame becomes the map-free reference."""
        try:
            if self._map_free is None:
                raise DataError("set_reference needs mode map_free")
            response.success, response.message = True, self._map_free.remember_place(self._last_T_map_cam)
            self._note_reference()
        except RelocError as err:
            response.success, response.message = False, f"set_reference failed: {err}"
            self.stats.warn(response.message)
        self.get_logger().info(response.message)
        return response

    # ----------------------------------------------------------------- callbacks (hand off only)
    def image_callback(self, msg: Any) -> None:
        self.stats.on_input()
        stamp = stamp_to_ns(msg.header.stamp)
        cfg = self._require_cfg()
        try:
            check_stamp(stamp, self.get_clock().now().nanoseconds, cfg.max_future_stamp_s)
        except DataError as err:
            return self._reject_input(str(err))
        before = self._image_sync.unmatched_a
        pair = self._image_sync.add_a(stamp, msg)
        self._note_unmatched(before)
        if pair is not None:
            self._offer(*pair)

    def camera_info_callback(self, msg: Any) -> None:
        before, before_info = self._image_sync.unmatched_a, self._image_sync.unmatched_b
        pair = self._image_sync.add_b(stamp_to_ns(msg.header.stamp), msg)
        self._note_unmatched(before)
        if self._image_sync.unmatched_b > before_info:  # the queue is bounded: a flood only drops
            self._warn(f"{self._image_sync.unmatched_b} camera_info dropped without a matching image "
                       f"(sync queue depth {self._image_sync.depth})")
        if pair is not None:
            self._offer(*pair)

    def rig_image_callback(self, camera: str, msg: Any) -> None:
        """An image of rig camera ``camera``: paired with its camera_info, then grouped by stamp."""
        self.stats.on_input()
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            check_stamp(stamp, self.get_clock().now().nanoseconds, self._require_cfg().max_future_stamp_s)
        except DataError as err:
            return self._reject_input(f"camera {camera!r}: {err}")
        self._offer_rig_sets(camera, lambda: self._rig.add_image(camera, stamp, msg, self._frame))

    def rig_info_callback(self, camera: str, msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self._offer_rig_sets(camera, lambda: self._rig.add_info(camera, stamp, msg, self._frame))

    def _offer_rig_sets(self, camera: str, add: Any) -> None:
        """Run ``add`` on the rig inputs; count images lost unpaired; hand each released set on."""
        if self._rig is None:
            return
        before = self._rig.unmatched[camera]
        sets = add()
        self._count_unmatched(self._rig.unmatched[camera] - before, camera)
        for rig_set in sets:
            self._offer_rig(rig_set)

    def _frame(self, stamp_ns: int, image: Any, info: Any) -> _Frame:
        return _Frame(stamp_ns, image, info, time.monotonic(), self._time_epoch)

    def _offer_rig(self, rig_set: RigSet[_Frame]) -> None:
        frames = {c: f for c, (_, f) in rig_set.frames.items()}
        query = _RigQuery(rig_set.stamp_ns, frames, rig_set.missing, min(f.received_s for f in frames.values()),
                          self._time_epoch)
        for cam in rig_set.missing:
            self.stats.cameras[cam] = f"missing from the rig query at {rig_set.stamp_ns} (no image within " \
                                      f"{self._require_cfg().rig.slop_s:.3f} s of it)"
        self._offer_query(query)

    def keyframe_pose_callback(self, msg: Any) -> None:
        """Bring the pose (base_frame, or the camera, in its header frame) into map through TF at
        its stamp, or reject it with the reason at once (not after pairing)."""
        stamp = stamp_to_ns(msg.header.stamp)
        cfg = self._require_cfg()
        try:
            check_stamp(stamp, self.get_clock().now().nanoseconds, cfg.max_future_stamp_s, what="keyframe_pose")
            T_map_base, _ = self._pose_in_map(msg.pose, None, msg.header.frame_id, stamp, "keyframe_pose")
        except DataError as err:
            return self._keyframe_outcome(stamp, KeyframeOutcome(False, f"keyframe rejected: {err}", warn=True))
        pair = self._kf_sync.add_b(stamp, T_map_base)
        if pair is not None:
            self._offer_keyframe(pair)

    def initialpose_callback(self, msg: Any) -> None:
        """A prior as nav2 AMCL takes it: base_frame's pose in the header frame, through TF (the
        session turns it into the camera's with each query's extrinsic)."""
        try:
            cov = np.asarray(msg.pose.covariance, float).reshape(6, 6)
            if not np.all(np.isfinite(cov)):
                raise DataError("initialpose covariance is not finite")
            T, cov = self._pose_in_map(msg.pose.pose, cov, msg.header.frame_id, stamp_to_ns(msg.header.stamp),
                                       "initialpose")
        except DataError as err:
            self.get_logger().warning(f"ignoring /initialpose: {err}")
            self.stats.warn(f"ignored initialpose: {err}")
            return
        if self._session is not None:
            self._session.set_prior(T, cov)
        self.get_logger().info(f"prior set at ({T[0, 3]:.2f}, {T[1, 3]:.2f}, {T[2, 3]:.2f}): retrieval narrowed")

    def _pose_in_map(self, pose: Any, cov: np.ndarray | None, frame_id: str, stamp_ns: int,
                     what: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A pose (and its covariance) given in ``frame_id``, in map through TF at ``stamp_ns``
        (0: the latest); DataError naming the missing TF."""
        cfg = self._require_cfg()
        T = pose_to_T(pose)
        frame = frame_id.lstrip("/")
        if not frame:
            raise DataError(f"{what} has no header.frame_id")
        try:
            T_map_frame = None if frame == cfg.map_frame else self._tf(cfg.map_frame, frame, stamp_ns, what)()
        except LookupError as err:
            raise DataError(f"{what} in frame {frame!r}: {err}") from err
        return camera_pose(T, cov, T_map_frame)

    def _reject_input(self, reason: str) -> None:
        """A message refused in its callback: the reason in diagnostics, logged once per kind."""
        self.stats.on_reject_input(None, reason)
        self._warn(reason)

    def _note_unmatched(self, before: int) -> None:
        self._count_unmatched(self._image_sync.unmatched_a - before)

    def _count_unmatched(self, lost: int, camera: str = "") -> None:
        """Images dropped without a camera_info (of rig camera ``camera``): counted, with the reason."""
        if lost <= 0:
            return
        self.stats.unmatched_images += lost
        cfg = self._require_cfg()
        reason = (f"{f'camera {camera!r}: ' if camera else ''}no camera_info within {cfg.sync_slop_s:.3f} s of the "
                  "image stamp (is camera_info published with the image's stamp?)")
        if camera:                   # a rig camera: in its own diagnostics value and in last_warning
            self.stats.cameras[camera] = reason
            self.stats.warn(reason)
        if reason != self._last_warned:
            self.get_logger().warning(f"{lost} image(s) dropped: {reason}")
            self._last_warned = reason
        for _ in range(lost):  # each image counts, or received - processed - dropped drifts up
            self.stats.on_reject_input(None, reason)

    def _offer(self, stamp_ns: int, image: Any, info: Any) -> None:
        self._offer_query(self._frame(stamp_ns, image, info))

    def _offer_query(self, frame: _Frame | _RigQuery) -> None:
        """The newest query to the worker; in mapping mode also to the keyframe_pose pairing."""
        if self._worker is None:
            return
        if self._worker.offer_query(frame):
            self.stats.dropped = self._worker.dropped
        if self._require_cfg().mapping.enabled:
            pair = self._kf_sync.add_a(frame.stamp_ns, frame)
            if pair is not None:
                self._offer_keyframe(pair)

    def _offer_keyframe(self, pair: tuple[int, _Frame, Any]) -> None:
        if self._worker is not None and self._worker.offer_keyframe(pair):
            self.stats.keyframes_received += 1
        else:
            self.stats.warn("keyframe queue full: keyframe refused")

    # ----------------------------------------------------------------- worker side: decode, ask, publish
    def _decode(self, frame: _Frame) -> tuple[np.ndarray, Intrinsics]:
        """Image + intrinsics, or DataError with the reason the frame is unusable (size checked first)."""
        max_pixels = self._require_cfg().max_image_pixels
        decode = compressed_to_bgr if isinstance(frame.image, CompressedImage) else image_to_bgr
        image = decode(frame.image, max_pixels)
        return image, camera_info_to_intrinsics(frame.info, (image.shape[1], image.shape[0]))

    def _handle_frame(self, frame: _Frame | _RigQuery) -> None:
        cfg = self._require_cfg()
        session = self._session
        if session is None:
            return self._reject(frame, Rejected("no database open", warn=True))
        if frame.epoch != self._time_epoch:
            return self._reject(frame, Rejected("frame from before the ROS time jump: not published", warn=True))
        if isinstance(frame, _RigQuery):
            return self._handle_rig(cfg, session, frame)
        try:
            image, intr = self._decode(frame)
        except DataError as err:
            return self._reject(frame, Rejected(str(err), warn=True))
        camera_frame = cfg.camera_frame or frame.image.header.frame_id
        if cfg.base_frame and not camera_frame:
            return self._reject(frame, Rejected("image has no header.frame_id and camera_frame is '': the camera "
                                                f"extrinsic {cfg.base_frame} -> camera cannot be looked up", warn=True))
        base_frame = cfg.base_frame or camera_frame
        extrinsic = self._tf(cfg.base_frame, camera_frame, frame.stamp_ns, "the camera extrinsic",
                             " (publish it, e.g. robot_state_publisher, or set base_frame '' to publish the "
                             "camera pose)") if cfg.base_frame else None
        odom = (self._tf(cfg.odom_frame, base_frame, frame.stamp_ns, "odometry")
                if cfg.odom_frame and base_frame else None)      # tracking and Track 2 use it without publish_tf too
        decision = session.localize(image, intr, frame.stamp_ns, odom,
                                    keyframes_pending=self._worker.pending_keyframes() if self._worker else 0,
                                    T_base_cam=extrinsic, camera=camera_frame)
        return self._finish(cfg, frame, decision, base_frame)

    def _handle_rig(self, cfg: NodeConfig, session: Session, query: _RigQuery) -> None:
        """Decode each camera's frame and look up its extrinsic (a camera that fails is left out,
        with its reason), then one rig query of the base pose; per-camera outcome in diagnostics."""
        frames, problems = [], {}
        for cam, frame in query.frames.items():
            try:
                image, intr = self._decode(frame)
                T_base_cam = self._tf(cfg.base_frame, frame.image.header.frame_id, frame.stamp_ns,
                                      f"the extrinsic of camera {cam!r}")()
            except (DataError, LookupError) as err:
                problems[cam] = str(err)
                continue
            frames.append(RigFrame(RigCamera(cam, T_base_cam), image, intr))
        for cam, why in problems.items():
            self.stats.cameras[cam] = f"left out of the rig query: {why}"
        if not frames:
            return self._reject(query, Rejected("no usable camera in the rig query: " +
                                                "; ".join(f"{c}: {w}" for c, w in problems.items()), warn=True))
        odom = (self._tf(cfg.odom_frame, cfg.base_frame, query.stamp_ns, "odometry")
                if cfg.odom_frame else None)
        decision = session.localize_rig(frames, query.stamp_ns, odom,
                                        keyframes_pending=self._worker.pending_keyframes() if self._worker else 0)
        result = decision.result
        for cam, d in ((result.diagnostics.get("cameras") or {}) if result is not None else {}).items():
            self.stats.cameras[cam] = (f"{d.get('num_inliers', 0)} inliers of {d.get('num_matches_2d3d', 0)} "
                                       f"2D-3D matches, {d.get('num_features', 0)} features")
        return self._finish(cfg, query, decision, cfg.base_frame)

    def _finish(self, cfg: NodeConfig, frame: _Frame | _RigQuery, decision: Published | Rejected,
                base_frame: str) -> None:
        """Publish the session's decision, unless it rejected the frame or ROS time jumped back meanwhile."""
        if isinstance(decision, Rejected):
            return self._reject(frame, decision)
        if frame.epoch != self._time_epoch:
            return self._reject(frame, Rejected("frame from before the ROS time jump: not published", warn=True))
        return self._publish(cfg, frame, decision, base_frame)

    def _tf(self, target: str, source: str, stamp_ns: int, what: str, hint: str = "") -> Any:
        """``T_target_source`` at ``stamp_ns``, looked up when called (the session calls it once the
        pose is accepted, so TF has had the inference time to arrive); LookupError with the reason."""
        def lookup() -> np.ndarray:
            if target == source:
                return np.eye(4)
            try:
                return self._tf_lookup.lookup(target, source, stamp_ns)
            except LookupError as err:
                raise LookupError(f"no TF {target} -> {source} ({what}) at the stamp: {err}{hint}") from err
        return lookup

    def _reject(self, frame: _Frame | _RigQuery, decision: Rejected) -> None:
        """Count a frame that is not published; log a warning once per new reason (no spam)."""
        reason, result = decision.reason, decision.result
        if decision.error is not None and reason != self._last_warned:
            self.get_logger().error(f"localizer failed on frame {frame.stamp_ns}: {decision.error!r}")
        if decision.warn and reason != self._last_warned:
            self.get_logger().warning(f"frame {frame.stamp_ns} rejected: {reason}")
        self._last_warned = reason if decision.warn else self._last_warned
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        if result is None:
            self.stats.on_reject_input(frame.stamp_ns, reason)
        else:
            self.stats.on_result(frame.stamp_ns, latency_ms, False, reason, result.confidence, result.num_inliers,
                                 *_tracking(result))
        self.get_logger().debug(f"frame {frame.stamp_ns}: not published: {reason}")

    def _publish(self, cfg: NodeConfig, frame: _Frame | _RigQuery, decision: Published, base_frame: str) -> None:
        if not self._active:
            return
        self._last_T_map_cam = decision.T_map_cam  # before the pose goes out: a caller that saw it finds it
        self._pose_pub.publish(pose_with_covariance(decision.T_map_base, decision.covariance, frame.stamp_ns,
                                                    cfg.map_frame))
        if self._tf_pub is not None and base_frame:
            if not cfg.odom_frame:
                self._tf_pub.send(decision.T_map_base, frame.stamp_ns, cfg.map_frame, base_frame)
            elif decision.T_map_odom is not None:
                self._tf_pub.send(decision.T_map_odom, frame.stamp_ns + int(cfg.transform_tolerance_s * 1e9),
                                  cfg.map_frame, cfg.odom_frame)
                self._T_map_odom = decision.T_map_odom  # after the fix-stamped one: the timer never precedes it
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        result = decision.result
        self.stats.on_result(frame.stamp_ns, latency_ms, True, "localized", result.confidence, result.num_inliers,
                             *_tracking(result))

    def _republish_map_odom(self) -> None:
        """Keep map->odom alive between fixes, future-dated like nav2 AMCL."""
        cfg, T_map_odom = self.cfg, self._T_map_odom
        if T_map_odom is None or self._tf_pub is None or cfg is None:
            return
        stamp = self.get_clock().now().nanoseconds + int(cfg.transform_tolerance_s * 1e9)
        self._tf_pub.send(T_map_odom, stamp, cfg.map_frame, cfg.odom_frame)

    def _handle_keyframe(self, pair: tuple[int, _Frame | _RigQuery, Any]) -> None:
        """Hand one posed image (each camera's of a rig query) to the session; every outcome is
        counted with its reason."""
        stamp_ns, query, T_map_base = pair      # in map since its arrival (keyframe_pose_callback)
        cfg = self._require_cfg()
        frames = query.frames if isinstance(query, _RigQuery) else {"": query}
        for cam, frame in frames.items():
            self._keyframe_outcome(stamp_ns, self._keyframe(cfg, cam, frame, T_map_base))

    def _keyframe(self, cfg: NodeConfig, camera: str, frame: _Frame, T_map_base: np.ndarray) -> KeyframeOutcome:
        """One camera's keyframe: its pose through its extrinsic (the database keeps camera poses)."""
        camera_frame = cfg.camera_frame or frame.image.header.frame_id
        which = f" of camera {camera!r}" if camera else ""
        try:
            T_map_cam = T_map_base
            if cfg.base_frame:
                T_map_cam = T_map_base @ self._tf(cfg.base_frame, camera_frame, frame.stamp_ns,
                                                  f"the camera extrinsic{which}")()
            image, intr = self._decode(frame)
        except (LookupError, DataError) as err:
            return KeyframeOutcome(False, f"keyframe{which} rejected: {err}", warn=True)
        if self._session is None:
            return KeyframeOutcome(False, "keyframe rejected: no database open", warn=True)
        return self._session.add_keyframe(image, intr, T_map_cam, frame.stamp_ns, camera=camera)

    def _keyframe_outcome(self, stamp_ns: int, outcome: KeyframeOutcome) -> None:
        self.stats.last_keyframe_reason = outcome.reason
        if outcome.added:
            if self._fleet is not None:
                self._fleet.poke()
            self.stats.keyframes_added += 1
            self.stats.database_size = self._session.size if self._session else 0
            return
        self.stats.keyframes_skipped += 1
        if outcome.warn:
            self.get_logger().warning(f"keyframe at {stamp_ns}: {outcome.reason}")

    # ----------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        if self._worker is not None:
            self.stats.dropped = self._worker.dropped
        if self._rig is not None:
            after_s = self._require_cfg().rig.silent_after_s
            for cam in self._rig.silent():
                self.stats.cameras[cam] = (f"silent: no image for more than {after_s:.1f} s "
                                           f"({self._rig.frames_in[cam]} received)")
        fleet = self._fleet.status() if self._fleet is not None else None
        self._diag_pub.publish(to_diagnostic_array(self.stats, self.get_name(), self.get_clock().now().to_msg(), fleet))


def _tracking(result: Any) -> tuple[str, str]:
    """(tracking state, served by) of a result for the diagnostics ('' without tracking)."""
    return result.diagnostics.get("tracking_state", ""), result.diagnostics.get("served_by", "")


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; queued keyframes are written before exit.

    ``argv`` (default ``sys.argv``) is what ``ros2 run reloc_vggt_ros reloc_vggt_node --ros-args ...``
    or ``ros2 launch`` gives: the program name, then ROS arguments only, parsed by rcl. The node has
    no options of its own, so anything else is refused (exit code 2) rather than silently ignored.
    """
    ensure_localhost_dds()
    args = sys.argv if argv is None else argv
    try:
        own = remove_ros_args(args)[1:]
        if not own:
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.UnknownROSArgsError as err:
        print(f"ERROR: {NODE_NAME}: unknown ROS argument(s) {err} after --ros-args (ROS takes -r/--remap FROM:=TO, "
              "-p/--param NAME:=VALUE, --params-file FILE, --log-level LEVEL, -e/--enclave NAME, ...)", file=sys.stderr)
        return 2
    except _rclpy.RCLError as err:
        print(f"ERROR: {NODE_NAME}: bad ROS arguments {' '.join(args[1:])!r}: {err}", file=sys.stderr)
        return 2
    if own:
        print(f"ERROR: {NODE_NAME} takes no arguments of its own, got {' '.join(own)!r}; ROS arguments go "
              "after --ros-args (e.g. --ros-args -r image:=/cam/image_raw -p top_k:=8)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = RelocNode()
    executor = make_executor()
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
