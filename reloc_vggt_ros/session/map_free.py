"""The node's map-free mode without ROS: one posed reference instead of a keyframe database.

:class:`MapFreeLocalizerAdapter` makes a map-free backend (``mapfree.registry``) a
:class:`~reloc_vggt_ros.localizer.base.Localizer` that the ordinary :class:`Session` drives
(``Session.attach``), so acceptance, covariance floors and map->odom are those of every mode.

The reference comes from the ``map_free.*`` settings (an image file, its intrinsics and pose in
the map frame, optionally a depth file), or at run time from the **current frame** — the last
image the node localized — by :meth:`MapFreeLocalizerAdapter.remember_place` ("remember this
place"). Its pose is then the camera pose of the last published fix, or the identity when none
was published (the map frame becomes that camera's frame). A frame-set reference has no depth: its scale is unknown
unless the backend has another source. Until a reference is set every frame is answered
NO_MATCH with the reason (a reference file that failed to load names why).

With odometry (the node's ``odom_frame``) and ``window`` > 1, each frame is localized jointly
with the frames before it (``localize_sequence``, Track 2): the sequence's own motion gives the
metric scale a remembered place (no depth) lacks.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import setting
from ..errors import ConfigError, DataError
from ..geometry import Intrinsics, T_from_quat_t, quat_xyzw_to_wxyz
from ..localizer.base import PosePrior, RelocResult, RelocStatus
from ..mapfree.base import MapFreeLocalizer, QueryFrame, Reference, SecondView
from ..mapfree.registry import DEFAULT_MAPFREE_BACKEND

__all__ = ["MapFreeConfig", "MapFreeLocalizerAdapter"]


@dataclass(frozen=True)
class MapFreeConfig:
    """``mode: map_free`` settings: the backend and the reference (parameters ``map_free.*``)."""

    backend: str = setting(DEFAULT_MAPFREE_BACKEND, "map-free backend (see mapfree.registry); learned ones take "
                                                    "engine as weights")
    reference_image: str = setting("", "reference image file; '' = none until ~/set_reference remembers a frame")
    reference_intrinsics: tuple[float, ...] = setting((), "fx fy cx cy of the reference image (pixels); "
                                                          "required with reference_image")
    reference_pose: tuple[float, ...] = setting((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                                "x y z qx qy qz qw of the reference camera (optical frame) in map_frame")
    reference_depth: str = setting("", "depth image of the reference (16-bit PNG/TIFF or float .npy in metres); "
                                       "'' = none (scale unknown)")
    depth_unit: float = setting(0.001, "metres per count of a 16-bit depth image (0.001 = millimetres)")
    second_image: str = setting("", "a second posed image of the place (stereo pair, another photo): the metric "
                                    "scale, triangulated, when there is no reference_depth (geometric backend); "
                                    "'' = none")
    second_intrinsics: tuple[float, ...] = setting((), "fx fy cx cy of second_image (pixels); required with it")
    second_pose: tuple[float, ...] = setting((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                             "x y z qx qy qz qw of the second image's camera (optical frame) in "
                                             "map_frame, metric")
    window: int = setting(0, "with odometry (odom_frame): each frame localized jointly with up to window-1 "
                             "frames before it (Track 2, metric scale from odometry); 0 or 1 = each frame alone")

    def __post_init__(self) -> None:
        if not self.backend.strip():
            raise ConfigError("map_free.backend must name a map-free backend, got ''")
        if self.reference_image and len(self.reference_intrinsics) != 4:
            raise ConfigError(f"map_free.reference_intrinsics must be [fx, fy, cx, cy] with reference_image, "
                              f"got {list(self.reference_intrinsics)}")
        for name in ("reference_pose", "second_pose"):
            pose = getattr(self, name)
            if len(pose) != 7 or not all(math.isfinite(v) for v in pose):
                raise ConfigError(f"map_free.{name} must be 7 finite numbers x y z qx qy qz qw, got {list(pose)}")
            if np.linalg.norm(pose[3:]) < 1e-9:
                raise ConfigError(f"map_free.{name} quaternion is zero")
        if self.second_image and (not self.reference_image or len(self.second_intrinsics) != 4):
            raise ConfigError("map_free.second_image needs map_free.reference_image and second_intrinsics "
                              f"[fx, fy, cx, cy], got {list(self.second_intrinsics)}")
        if self.reference_depth and not self.reference_image:
            raise ConfigError("map_free.reference_depth is set but map_free.reference_image is not")
        if not self.depth_unit > 0:
            raise ConfigError(f"map_free.depth_unit must be > 0, got {self.depth_unit}")
        if not 0 <= self.window <= 20:
            raise ConfigError(f"map_free.window must be in 0..20, got {self.window}")

    def reference_T(self, pose: tuple[float, ...] | None = None) -> np.ndarray:
        """``T_map_cam`` of the reference (or of ``pose``; the parameter is xyzw, ROS order)."""
        pose = self.reference_pose if pose is None else pose
        q = quat_xyzw_to_wxyz(np.asarray(pose[3:], float))
        return T_from_quat_t(q / np.linalg.norm(q), np.asarray(pose[:3], float))


class MapFreeLocalizerAdapter:
    """A map-free backend as the Session's localizer, plus the reference it answers against."""

    uses_odometry = True       # the Session hands it odom -> camera at each frame's stamp

    def __init__(self, backend: MapFreeLocalizer, window: int = 0) -> None:
        self.backend = backend
        self.name = f"map_free:{backend.name}"
        self._window: deque[QueryFrame] = deque(maxlen=max(window, 1))
        self.missing = "no map-free reference set: give map_free.reference_image or call ~/set_reference"
        self._reference: Reference | None = None
        self._last: tuple[np.ndarray, Intrinsics, int] | None = None
        self._lock = threading.Lock()

    @property
    def reference(self) -> Reference | None:
        return self._reference

    def load(self, config: MapFreeConfig) -> str:
        """Set the reference of the settings (none: keep waiting); DataError says why it cannot."""
        from ..mapfree.reference import check_reference, load_reference

        if not config.reference_image:
            return "no reference image configured; waiting for ~/set_reference"
        try:
            ref = load_reference(config.reference_image, config.reference_intrinsics, config.reference_T(),
                                 config.reference_depth, config.depth_unit)
            depth = "depth image" if ref.depth_m is not None else "no depth"
            if config.second_image and ref.depth_m is None:
                second = load_reference(config.second_image, config.second_intrinsics,
                                        config.reference_T(config.second_pose))
                ref = check_reference(dataclasses.replace(
                    ref, second=SecondView(second.image_bgr, second.intrinsics, second.T_world_cam)))
                depth = f"scale from the second image {second.name}"
            self.set_reference(ref)
        except DataError as err:
            self.missing = f"no map-free reference: {err}"
            raise
        h, w = ref.image_bgr.shape[:2]
        return f"map-free reference {ref.name} ({w}x{h}, {depth})"

    def set_reference(self, reference: Reference) -> None:
        """Give ``reference`` to the backend (DataError leaves the previous reference in place)."""
        with self._lock:
            self.backend.set_reference(reference)
            self._reference = reference

    def remember_place(self, T_map_cam: np.ndarray | None) -> str:
        """The last localized frame becomes the reference, at ``T_map_cam`` (None: identity)."""
        last = self._last
        if last is None:
            raise DataError("no frame received yet: nothing to remember")
        image, intrinsics, stamp_ns = last
        T = np.eye(4) if T_map_cam is None else np.asarray(T_map_cam, float)
        self.set_reference(Reference(image, intrinsics, T, None, name=f"frame_{stamp_ns}"))
        where = "the last published pose" if T_map_cam is not None else "the identity (nothing published yet)"
        return f"reference set from frame {stamp_ns} at {where}, no depth"

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None,
                 odom_camera: np.ndarray | Callable[[], np.ndarray] | None = None) -> RelocResult:
        """Track 1, or with odometry and ``window`` > 1 Track 2 over the recent frames (the last
        frame's result); a frame without odometry (no TF yet) breaks the sequence."""
        self._last = (image_bgr, intrinsics, stamp_ns)
        T_odom_cam = None
        if odom_camera is not None and self._window.maxlen > 1:
            try:
                T_odom_cam = np.asarray(odom_camera() if callable(odom_camera) else odom_camera, float)
            except LookupError:
                T_odom_cam = None
        frame = QueryFrame(image_bgr, intrinsics, stamp_ns, T_odom_cam)
        if T_odom_cam is None:
            self._window.clear()
        else:
            self._window.append(frame)
        with self._lock:
            if self._reference is None:
                return RelocResult(RelocStatus.NO_MATCH, reason=self.missing)
            if len(self._window) >= 2:
                return self.backend.localize_sequence(list(self._window))[-1]
            return self.backend.localize(frame)

    def refresh(self) -> None:
        """Nothing to re-read: the reference changes only through :meth:`set_reference`."""
