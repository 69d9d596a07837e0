"""The node's policy without ROS: localize -> accept -> covariance -> map->odom, prior, live mapping.

A :class:`Session` owns the keyframe store and the localizer built over it. It takes decoded
inputs (a BGR image, :class:`Intrinsics`, a stamp and the TF it needs: the camera extrinsic
base->camera and, in odom mode, odom->base) and returns a small typed decision —
:class:`Published` (pose, covariance, map->odom) or :class:`Rejected` (with the reason) — that
the node turns into messages and diagnostics. Time is an injected clock (the node's ROS clock,
so sim time too), so prior expiry is tested without sleeping.

Frames (REP-105, as nav2 AMCL): the database and the backends work in camera poses; what is
published is the pose of the robot's base frame, ``T_map_base = T_map_cam · inv(T_base_cam)``,
with the covariance carried through the extrinsic's adjoint (``geometry.pose_covariance``). A
missing extrinsic rejects the frame with the reason — never a silent identity. Without a base
frame (``T_base_cam`` None) the camera pose is published, as before.

One judge: the backend alone decides whether a pose is good (its thresholds are backend
options); the session publishes iff ``result.ok`` and the covariance passes the checks a fusing
filter needs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..config import require_non_negative, require_positive, setting
from ..errors import ConfigError, DataError, RelocError
from ..geometry import Intrinsics, invert_T, pose_delta, transform_pose_covariance
from ..keyframes import Keyframe, KeyframeStore
from ..localizer.base import Localizer, PosePrior, RelocResult
from ..localizer.geometric.rig import RigFrame
from ..localizer.tracking import TrackingConfig, TrackingLocalizer
from .covariance import covariance_problems, sanitize_covariance
from .mapping import is_new_keyframe

__all__ = ["MappingConfig", "SessionConfig", "Published", "Rejected", "KeyframeOutcome", "Session", "base_pose",
           "camera_pose"]

logger = logging.getLogger(__name__)

LocalizerFactory = Callable[[KeyframeStore], Localizer]
Transform = np.ndarray | Callable[[], np.ndarray]   # a 4x4, or a TF lookup that may raise LookupError

# an extrinsic that moves more than this between frames is reported (TF round-trips are exact)
EXTRINSIC_CHANGE_M = 1e-3
EXTRINSIC_CHANGE_DEG = 0.05


def size_mismatch(image: np.ndarray, intrinsics: Intrinsics) -> str:
    """Why ``intrinsics`` do not describe ``image`` ('' when their sizes agree)."""
    h, w = image.shape[:2]
    if (w, h) != (intrinsics.width, intrinsics.height):
        return f"camera_info is for {intrinsics.width}x{intrinsics.height} but the image is {w}x{h}"
    return ""


def _resolve(T: Transform) -> np.ndarray:
    return np.asarray(T() if callable(T) else T, float)


def _odom_camera(T_odom_base: Transform | None, T_base_cam: Transform | None) -> Transform | None:
    """odom -> camera for the tracker's motion prior: odometry moves the base, the camera rides on it."""
    if T_odom_base is None:
        return None

    def odom_cam() -> np.ndarray:
        T = _resolve(T_odom_base)
        return T if T_base_cam is None else T @ _resolve(T_base_cam)
    return odom_cam


def base_pose(T_map_cam: np.ndarray, cov_cam: np.ndarray, T_base_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The base pose in map and its covariance from the camera's (adjoint of the extrinsic)."""
    T_cam_base = invert_T(T_base_cam)
    return T_map_cam @ T_cam_base, transform_pose_covariance(cov_cam, T_map_cam, T_c_d=T_cam_base)


def camera_pose(T_frame_base: np.ndarray, cov: np.ndarray | None, T_map_frame: np.ndarray | None = None,
                T_base_cam: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A base pose given in another frame (``/initialpose`` in odom, a ``keyframe_pose``) as the
    camera pose in map the database and backends use, with its covariance carried along."""
    T_map_base = (np.eye(4) if T_map_frame is None else T_map_frame) @ T_frame_base
    T_map_cam = T_map_base if T_base_cam is None else T_map_base @ T_base_cam
    if cov is None or not np.any(cov):
        return T_map_cam, cov
    return T_map_cam, transform_pose_covariance(cov, T_frame_base, T_a_b=T_map_frame, T_c_d=T_base_cam)


@dataclass(frozen=True)
class MappingConfig:
    """Live mapping: which posed images become keyframes."""

    enabled: bool = setting(False, "add keyframes from keyframe_pose + images")
    min_distance_m: float = setting(0.25, "a new keyframe must be this far from every keyframe ...")
    min_angle_rad: float = setting(0.26, "... or rotated this much from the nearest one")
    max_queue: int = setting(1000, "keyframes waiting to be written before new ones are refused")
    refresh_in_background: bool = setting(True, "re-index new keyframes on a background thread while queries "
                                                "use the previous map (false: on the frame path, one map in memory)")

    def __post_init__(self) -> None:
        require_non_negative(self, "mapping", "min_distance_m", "min_angle_rad")
        if self.max_queue < 1:
            raise ConfigError(f"mapping.max_queue must be >= 1, got {self.max_queue}")
        if self.min_angle_rad > math.pi:
            raise ConfigError(f"mapping.min_angle_rad is in radians (<= pi), got {self.min_angle_rad}")


@dataclass(frozen=True)
class SessionConfig:
    """The policy settings (the node's parameters of the same names)."""

    min_variance_m2: float = setting(1e-6, "floor on positional variances of the published covariance (m^2)")
    min_variance_rad2: float = setting(1e-6, "floor on rotational variances of the published covariance (rad^2)")
    prior_timeout_s: float = setting(30.0, "an /initialpose prior narrows retrieval this long; "
                                           "0 = until the next fix")
    max_image_pixels: int = setting(25_000_000, "images with more pixels (width x height, from the message "
                                                "or the JPEG/PNG header) are rejected before decoding")
    max_future_stamp_s: float = setting(5.0, "images stamped further ahead of the node clock are rejected; "
                                             "0 = no check (zero stamps are always rejected)")
    mapping: MappingConfig = setting(factory=MappingConfig, doc="live mapping")
    tracking: TrackingConfig = setting(factory=TrackingConfig, doc="camera-rate tracking, gating and cascade")

    def __post_init__(self) -> None:
        if self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if not self.max_future_stamp_s >= 0:
            raise ConfigError(f"max_future_stamp_s must be >= 0, got {self.max_future_stamp_s}")
        require_positive(self, "", "min_variance_m2", "min_variance_rad2")
        if not self.prior_timeout_s >= 0:
            raise ConfigError(f"prior_timeout_s must be >= 0, got {self.prior_timeout_s}")


@dataclass(frozen=True)
class Published:
    """A pose to publish: the base (or, without a base frame, the camera) in map, its sanitized
    covariance, the camera pose it came from, and map->odom in odom mode."""

    T_map_base: np.ndarray
    covariance: np.ndarray
    result: RelocResult
    T_map_odom: np.ndarray | None = None
    T_map_cam: np.ndarray | None = None


@dataclass(frozen=True)
class Rejected:
    """A frame that is not published, and why."""

    reason: str
    result: RelocResult | None = None      # None: the backend never answered (bad input, empty map)
    warn: bool = False                     # a problem for the operator (log it), not a weak view
    error: BaseException | None = None     # the backend raised this


@dataclass(frozen=True)
class KeyframeOutcome:
    """What happened to one offered keyframe."""

    added: bool
    reason: str
    warn: bool = False
    kf_id: int | None = None


class Session:
    """Store + localizer + policy state (prior, known keyframe poses, pending re-index).

    Thread-safe: the node's worker localizes and adds keyframes while services save or reload.
    ``on_warning`` receives operator-facing warnings (image size change, TF lookup failure,
    refresh failure); ``log`` gets info messages (any object with ``info``/``warning``).
    """

    def __init__(self, config: SessionConfig, build_localizer: LocalizerFactory,
                 clock: Callable[[], float] = time.monotonic,
                 on_warning: Callable[[str], None] | None = None, log: Any = logger) -> None:
        self.config = config
        self._build = build_localizer
        self._clock = clock
        self._on_warning = on_warning or logger.warning
        self._log = log
        self._lock = threading.RLock()
        self._store: KeyframeStore | None = None
        self._localizer: Localizer | None = None
        self._kf_poses: list[np.ndarray] = []
        self._dirty = False
        self._prior: tuple[PosePrior, float] | None = None
        self._last_size: tuple[int, int] | None = None
        self._last_extrinsic: dict[str, np.ndarray] = {}   # per camera frame
        self._last_fix: np.ndarray | None = None   # camera centre of the last published pose (fleet sync)
        self._refresher: threading.Thread | None = None

    # ----------------------------------------------------------------- database
    def open(self, path: Path | str, readonly: bool) -> None:
        """Open (or re-open) the database and build the localizer over it (none if it is empty).

        KeyframeDBError / ConfigError / ImportError propagate: the node's configure fails on them.
        """
        with self._lock:
            self.close()
            self._store = KeyframeStore.open(path, readonly=readonly)
            self._kf_poses = list(self._store.poses()[1])
            self._dirty = False
            if len(self._store) == 0:
                self._log.warning(f"keyframe database {path} is empty: nothing to localize against "
                                  "until keyframes are added (mapping.enabled)")
                return
            t0 = time.monotonic()
            self._localizer = self._make_localizer()
            self._log.info(f"{self._localizer.name} localizer over {len(self._store)} keyframes ready "
                           f"in {time.monotonic() - t0:.1f} s")

    def attach(self, localizer: Localizer) -> None:
        """Drive ``localizer`` with no keyframe database (map-free mode: no store, no mapping)."""
        with self._lock:
            self.close()
            self._localizer = localizer

    def reload(self) -> None:
        """Re-open the same database (keyframes written by another process become visible)."""
        with self._lock:
            if self._store is None:
                raise DataError("no database open")
            self.open(self._store.path, self._store.readonly)

    @property
    def has_track(self) -> bool:
        """Camera-rate tracking holds a track: the next frame is cheap (no lock: a hint for the
        node's queue)."""
        localizer = self._localizer
        return isinstance(localizer, TrackingLocalizer) and localizer.has_track

    def close(self) -> None:
        self.wait_for_refresh()
        with self._lock:
            close = getattr(self._localizer, "close", None)   # tracking's background worker process
            if callable(close):
                close()
            self._localizer = None
            if self._store is not None:
                self._store.close()
                self._store = None

    @property
    def size(self) -> int:
        """Keyframes in the open database (0 when none is open)."""
        with self._lock:
            return len(self._store) if self._store is not None else 0

    def keyframes_added_elsewhere(self) -> None:
        """Another connection (the fleet sync) wrote keyframes into the file: re-index before the next query."""
        with self._lock:
            if self._store is not None:
                self._kf_poses = list(self._store.poses()[1])
                self._dirty = True

    def position(self) -> np.ndarray | None:
        """Where the camera is believed to be: the last published pose, else the prior, else None."""
        prior = self.current_prior()
        with self._lock:
            if self._last_fix is not None:
                return self._last_fix
        return None if prior is None else prior.T_world_cam[:3, 3].copy()

    @property
    def path(self) -> Path | None:
        return self._store.path if self._store is not None else None

    def save(self, target: Path | str | None = None) -> str:
        """Copy the database to ``target`` (SQLite backup API) or checkpoint it in place; the
        message says which. KeyframeDBError on failure."""
        with self._lock:
            if self._store is None:
                raise DataError("no database open")
            self._store.backup(target or None)
            if target:
                return f"copied {len(self._store)} keyframes to {target}"
            return f"{len(self._store)} keyframes checkpointed in {self._store.path}"

    # ----------------------------------------------------------------- prior
    def set_prior(self, T_map_base: np.ndarray, covariance: np.ndarray | None = None) -> PosePrior:
        """A prior for the next queries: the pose of the published frame (the base, or the camera
        without a base frame), turned into the camera's by each query's extrinsic (an all-zero
        covariance means none was given)."""
        cov = None if covariance is None or not np.any(covariance) else np.asarray(covariance, float).reshape(6, 6)
        prior = PosePrior(np.asarray(T_map_base, float), cov)
        with self._lock:
            self._prior = (prior, self._clock())
            if isinstance(self._localizer, TrackingLocalizer):
                self._localizer.reset()     # the operator says where we are: relocalize from it
        return prior

    def relocalize_next(self) -> str:
        """A full relocalization for the next frame instead of tracking (the ``~/relocalize`` service)."""
        with self._lock:
            if not isinstance(self._localizer, TrackingLocalizer):
                return "tracking is off: every frame is relocalized already"
            self._localizer.relocalize_next()
        return "the next frame is relocalized"

    def current_prior(self) -> PosePrior | None:
        """The prior unless it expired (``prior_timeout_s`` > 0 and older than that)."""
        with self._lock:
            if self._prior is None:
                return None
            prior, since = self._prior
            timeout = self.config.prior_timeout_s
            if timeout > 0 and self._clock() - since > timeout:
                self._prior = None
                return None
            return prior

    def reset_time(self) -> None:
        """Time jumped back (a bag loop): forget the prior and the last extrinsic, both stamped
        in the time that no longer is."""
        with self._lock:
            self._prior = None
            self._last_extrinsic.clear()

    # ----------------------------------------------------------------- queries
    def check_frame(self, image: np.ndarray, intrinsics: Intrinsics) -> None:
        """DataError if the intrinsics are for another image size; a warning when the size changes."""
        bad = size_mismatch(image, intrinsics)
        if bad:
            raise DataError(bad)
        h, w = image.shape[:2]
        if self._last_size is not None and self._last_size != (w, h):
            self._on_warning(f"image size changed from {self._last_size[0]}x{self._last_size[1]} to {w}x{h}")
        self._last_size = (w, h)

    def localize(self, image: np.ndarray, intrinsics: Intrinsics, stamp_ns: int,
                 T_odom_base: Transform | None = None, keyframes_pending: int = 0,
                 T_base_cam: Transform | None = None, camera: str = "") -> Published | Rejected:
        """One query through the whole policy.

        ``T_base_cam`` is the camera extrinsic (base -> camera optical frame) at ``stamp_ns``;
        None publishes the camera pose; ``camera`` names the camera (its frame), whose extrinsic
        is expected not to move between frames. ``T_odom_base`` (odom mode) is odom -> base (the camera
        without a base frame) at ``stamp_ns``. Each may be a callable looked up only once the
        pose is accepted (TF has had the inference time to arrive) that raises LookupError: a
        missing extrinsic rejects the frame, a missing odom->base is a warning and the pose is
        still published. The map is re-indexed if keyframes were added and none is pending
        (once per burst): off the frame path (:meth:`_start_refresh`) where the backend swaps
        its map in atomically.
        """
        try:
            self.check_frame(image, intrinsics)
        except DataError as err:
            return Rejected(str(err), warn=True)
        with self._lock:
            if self._dirty and keyframes_pending == 0:
                self._start_refresh()
            if self._localizer is None:
                return Rejected("keyframe database is empty", warn=True)
            prior = self.current_prior()
            if prior is not None and T_base_cam is not None:   # the prior is the base's: the camera's is needed
                try:
                    T_base_cam = _resolve(T_base_cam)
                except LookupError as err:
                    return Rejected(str(err), warn=True)
                prior = PosePrior(*camera_pose(prior.T_world_cam, prior.covariance, T_base_cam=T_base_cam))
            try:
                if isinstance(self._localizer, TrackingLocalizer) or getattr(self._localizer, "uses_odometry", False):
                    result = self._localizer.localize(image, intrinsics, stamp_ns, prior,
                                                      _odom_camera(T_odom_base, T_base_cam))
                else:
                    result = self._localizer.localize(image, intrinsics, stamp_ns=stamp_ns, prior=prior)
            except Exception as err:  # noqa: BLE001 - one failing frame must not go silent or stop the node
                return Rejected(f"localizer failed: {err}", warn=True, error=err)
        return self.accept(result, T_odom_base, T_base_cam, camera)

    def localize_rig(self, frames: list[RigFrame], stamp_ns: int, T_odom_base: Transform | None = None,
                     keyframes_pending: int = 0) -> Published | Rejected:
        """One rig query (the images of the cameras present, each with its extrinsic) through the
        policy: the backend solves the base pose directly (``localize_rig``), so the prior is the
        base's and the published pose needs no extrinsic; the rest is :meth:`accept`'s."""
        for f in frames:
            bad = size_mismatch(f.image_bgr, f.intrinsics)
            if bad:
                return Rejected(f"camera {f.camera.name!r}: {bad}", warn=True)
            self._extrinsic(np.asarray(f.camera.T_base_cam, float), f.camera.name)
        with self._lock:
            if self._dirty and keyframes_pending == 0:
                self._start_refresh()
            if self._localizer is None:
                return Rejected("keyframe database is empty", warn=True)
            if not hasattr(self._localizer, "localize_rig"):
                return Rejected(f"the {self._localizer.name} backend cannot localize a camera rig "
                                "(rig.cameras needs backend geometric)", warn=True)
            try:
                result = self._localizer.localize_rig(frames, stamp_ns=stamp_ns, prior=self.current_prior())
            except Exception as err:  # noqa: BLE001 - one failing query must not go silent or stop the node
                return Rejected(f"localizer failed: {err}", warn=True, error=err)
        return self.accept(result, T_odom_base)

    def accept(self, result: RelocResult, T_odom_base: Transform | None = None,
               T_base_cam: Transform | None = None, camera: str = "") -> Published | Rejected:
        """Publish iff the backend said OK, the extrinsic is known and the covariance is usable;
        the base pose and its covariance, map->odom in odom mode."""
        if not result.ok:
            return Rejected(f"{result.status.value}: {result.reason}", result)
        T_map_cam = np.asarray(result.T_world_cam, float)
        try:
            cov = sanitize_covariance(result.covariance, self.config.min_variance_m2, self.config.min_variance_rad2)
            problems = covariance_problems(cov, "map", "map")
            if problems:
                raise DataError("; ".join(problems))
        except DataError as err:
            return Rejected(f"unusable covariance: {err}", result)
        T_map_base = T_map_cam
        if T_base_cam is not None:
            try:
                T_bc = self._extrinsic(_resolve(T_base_cam), camera)
            except LookupError as err:
                return Rejected(str(err), result, warn=True)
            T_map_base, cov = base_pose(T_map_cam, cov, T_bc)
        T_map_odom = None
        if T_odom_base is not None:
            try:
                T_map_odom = T_map_base @ invert_T(_resolve(T_odom_base))
            except LookupError as err:
                self._on_warning(str(err))
        with self._lock:
            if self._prior is not None and self.config.prior_timeout_s == 0:
                self._prior = None  # used by this fix
            self._last_fix = T_map_cam[:3, 3].copy()
        return Published(T_map_base, cov, result, T_map_odom, T_map_cam)

    def _extrinsic(self, T_base_cam: np.ndarray, camera: str) -> np.ndarray:
        """The extrinsic, with a warning when it moved since this camera's last frame (a camera
        declared static whose TF changes: a /tf publisher of it, or two /tf_static publishers
        disagreeing)."""
        with self._lock:
            last, self._last_extrinsic[camera] = self._last_extrinsic.get(camera), T_base_cam
        if last is not None:
            d = pose_delta(last, T_base_cam)
            moved_m, turned_deg = float(np.linalg.norm(d[:3])), float(np.degrees(np.linalg.norm(d[3:])))
            if moved_m > EXTRINSIC_CHANGE_M or turned_deg > EXTRINSIC_CHANGE_DEG:
                of = f" of {camera}" if camera else ""
                self._on_warning(f"camera extrinsic{of} changed by {moved_m * 1e3:.1f} mm / {turned_deg:.2f} deg "
                                 "since the last frame: is the camera mount static? (check who publishes its TF)")
        return T_base_cam

    # ----------------------------------------------------------------- live mapping
    def add_keyframe(self, image: np.ndarray, intrinsics: Intrinsics, T_map_cam: np.ndarray,
                     stamp_ns: int, camera: str = "") -> KeyframeOutcome:
        """Store a posed image if it is far enough from every stored keyframe (never silently);
        ``camera`` names a rig camera (the keyframes of one instant differ by it)."""
        T = np.asarray(T_map_cam, float)
        try:
            self.check_frame(image, intrinsics)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise DataError("keyframe image does not encode as JPEG")
        except DataError as err:
            return KeyframeOutcome(False, f"keyframe rejected: {err}", warn=True)
        m = self.config.mapping
        with self._lock:
            if not is_new_keyframe(T, self._kf_poses, m.min_distance_m, m.min_angle_rad):
                return KeyframeOutcome(False, "keyframe skipped: too close to an existing one")
            if self._store is None:
                return KeyframeOutcome(False, "keyframe rejected: no database open", warn=True)
            name = f"live_{camera}_{stamp_ns}" if camera else f"live_{stamp_ns}"
            kf = Keyframe(name=name, image_jpeg=jpeg.tobytes(), intrinsics=intrinsics, T_world_cam=T, stamp_ns=stamp_ns)
            try:
                kf_id = self._store.add_keyframe(kf)
            except RelocError as err:
                return KeyframeOutcome(False, f"keyframe rejected by the database: {err}", warn=True)
            self._kf_poses.append(T)
            self._dirty = True  # re-indexed before the next query, not per keyframe
        return KeyframeOutcome(True, f"keyframe {kf_id} added", kf_id=kf_id)

    def _make_localizer(self, store: KeyframeStore | None = None) -> Localizer:
        """The backend over the open store (or ``store``), wrapped in camera-rate tracking when enabled."""
        localizer = self._build(store or self._store)
        return TrackingLocalizer(localizer, self.config.tracking) if self.config.tracking.enabled else localizer

    def _start_refresh(self) -> None:
        """Index keyframes added live (building the localizer when the map was empty), under the
        session lock. A backend that swaps its map in atomically (``concurrent_refresh``, the
        geometric one) refreshes on a background thread, so queries keep answering from the old
        map meanwhile (at 2k keyframes a refresh took ~15 s on the frame path); one refresh at a
        time, keyframes added during it start the next. The first build of an empty map stays on
        the frame path: there is no old map to answer from, and the query that triggered it gets
        the new one."""
        if self._refresher is not None and self._refresher.is_alive():
            return                                   # still dirty: the next query starts the next one
        self._dirty = False
        store, localizer = self._store, self._localizer
        if localizer is None or not self.config.mapping.refresh_in_background or not _concurrent_refresh(localizer):
            self._refresh(store, localizer)
            return
        self._refresher = threading.Thread(target=self._refresh, args=(store, localizer), name="map-refresh",
                                           daemon=True)
        self._refresher.start()

    def wait_for_refresh(self, timeout: float | None = None) -> bool:
        """Wait for a background refresh to finish; False if it still runs after ``timeout``."""
        refresher = self._refresher
        if refresher is not None:
            refresher.join(timeout)
            return not refresher.is_alive()
        return True

    @property
    def refreshing(self) -> bool:
        """A background refresh is running (queries use the map before it)."""
        return self._refresher is not None and self._refresher.is_alive()

    def _refresh(self, store: KeyframeStore | None, localizer: Localizer | None) -> None:
        t0 = time.monotonic()
        try:
            if localizer is None:
                localizer = self._make_localizer(store)   # first keyframes of an empty map
            else:
                localizer.refresh()
        except (RelocError, ImportError) as err:  # keep mapping; the reason is in diagnostics
            self._on_warning(f"localizer refresh failed: {err}")
            return
        with self._lock:
            if self._store is not store:             # closed or re-opened meanwhile: not ours to set
                return
            self._localizer = localizer
        self._log.info(f"map refreshed: {self.size} keyframes in {time.monotonic() - t0:.2f} s")


def _concurrent_refresh(localizer: Localizer) -> bool:
    """Whether ``refresh()`` may run beside ``localize()`` (the backend swaps its map in as one
    snapshot); a tracking wrapper refreshes its backend, so the backend decides."""
    inner = getattr(localizer, "relocalizer", localizer)
    return bool(getattr(inner, "concurrent_refresh", False))
