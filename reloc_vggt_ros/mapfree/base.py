"""The one interface every map-free backend implements: a posed reference, then queries.

Map-free relocalization has no keyframe database: one reference image with a known pose (and,
where available, a depth image for metric scale) and a query image, or a short query sequence
(Track 2). Every backend — weights-free two-view geometry, VGGT point-map alignment, Reloc-VGGT
with K = 1 — answers with the same :class:`~reloc_vggt_ros.localizer.base.RelocResult` as the
map-based backends, so the node and the CLI publish and judge them alike.

Scale: a backend that found no source of metric scale sets ``result.diagnostics["scale"] =
"unknown"`` and a covariance that is unbounded (very large) along the baseline; it never invents
a scale. Sources it used are named there (``"depth"``, ``"stereo"``, ``"odometry"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..geometry import Intrinsics
from ..localizer.base import RelocResult

__all__ = ["Reference", "SecondView", "QueryFrame", "MapFreeLocalizer", "SCALE_UNKNOWN"]

SCALE_UNKNOWN = "unknown"


@dataclass(frozen=True)
class SecondView:
    """A second posed image beside the reference (stereo pair, or a second photo whose pose is
    known in the same metric frame): the reference's keypoints triangulated with it give depth."""

    image_bgr: np.ndarray
    intrinsics: Intrinsics
    T_world_cam: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The posed reference view: BGR uint8 image, its camera, ``T_world_cam`` and optional depth.

    ``depth_m`` is float32 metres of the reference image's size, 0 or non-finite where invalid.
    ``second``: a second posed view, the metric scale (``"stereo"``) where no depth is given.
    """

    image_bgr: np.ndarray
    intrinsics: Intrinsics
    T_world_cam: np.ndarray
    depth_m: np.ndarray | None = None
    name: str = "reference"
    second: SecondView | None = None


@dataclass(frozen=True)
class QueryFrame:
    """One query view; ``T_odom_cam`` is the device's own tracking (Track 2), when it has one."""

    image_bgr: np.ndarray
    intrinsics: Intrinsics
    stamp_ns: int = 0
    T_odom_cam: np.ndarray | None = None
    name: str = ""


@runtime_checkable
class MapFreeLocalizer(Protocol):
    """A map-free backend: set a reference, then answer queries against it."""

    name: str

    def set_reference(self, reference: Reference) -> None:
        """Replace the reference (raises DataError on unusable input, e.g. a wrong-size depth)."""
        ...

    def localize(self, query: QueryFrame) -> RelocResult:
        """Pose of one query camera in the reference's world frame (Track 1)."""
        ...

    def localize_sequence(self, queries: Sequence[QueryFrame]) -> list[RelocResult]:
        """Poses of a query sequence estimated jointly (Track 2); one result per frame."""
        ...
