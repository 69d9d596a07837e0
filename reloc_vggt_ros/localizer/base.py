"""The one interface every localizer backend implements, and the result it returns.

The node, the benchmarks and the evaluation only ever talk to :class:`Localizer`. A weak or
failed localization is a result with ``status != OK`` and a human-readable ``reason``;
exceptions are for broken inputs and misconfiguration only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..geometry import Intrinsics

__all__ = ["RelocStatus", "RelocResult", "Localizer", "PosePrior"]


class RelocStatus(enum.Enum):
    OK = "ok"
    LOW_CONFIDENCE = "low_confidence"      # a pose exists but must not be trusted/published
    NO_MATCH = "no_match"                  # nothing in the map resembles the query
    EMPTY_DATABASE = "empty_database"
    INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class PosePrior:
    """A prior camera pose (e.g. from ``/initialpose``) that narrows retrieval."""

    T_world_cam: np.ndarray
    covariance: np.ndarray | None = None     # 6x6 over (x y z rx ry rz), may be None


@dataclass
class RelocResult:
    """Outcome of one query.

    ``covariance`` is 6x6 over ``(x, y, z, rot_x, rot_y, rot_z)`` of ``T_world_cam`` — translation
    in the world frame, rotation as a small rotation vector applied on the left in the world
    frame — the layout of ROS ``PoseWithCovariance``. It is finite, symmetric and positive
    definite whenever ``status`` is OK.

    The backend alone judges the result (``ok``, with a ``reason`` when not OK) by its own
    thresholds; callers publish iff ``ok``. ``num_inliers`` is the number of supporting
    correspondences, whose kind depends on the backend: 2D-3D PnP inliers for ``geometric``,
    keyframes consistent with the network's prediction for ``reloc_vggt`` and keyframes agreeing
    with the camera alignment for ``vggt_align`` (so learned backends report at most
    ``num_keyframes``). Compare it across results of one backend only.
    """

    status: RelocStatus
    T_world_cam: np.ndarray | None = None
    covariance: np.ndarray | None = None
    confidence: float = 0.0                  # 0..1
    num_inliers: int = 0
    reason: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is RelocStatus.OK


@runtime_checkable
class Localizer(Protocol):
    """A backend: built from a keyframe database, answers one query image at a time."""

    name: str

    def localize(self, image_bgr: np.ndarray, intrinsics: Intrinsics, stamp_ns: int = 0,
                 prior: PosePrior | None = None) -> RelocResult:
        """Pose of the camera that took ``image_bgr`` (uint8 [H,W,3] BGR)."""
        ...

    def refresh(self) -> None:
        """Re-read the keyframe database after keyframes were added or removed."""
        ...
