"""Keyframe selection for live mapping: is a new camera pose far enough from the map?"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..geometry import rotation_error_deg

__all__ = ["is_new_keyframe"]


def is_new_keyframe(T_world_cam: np.ndarray, existing: Iterable[np.ndarray], min_distance_m: float,
                    min_angle_rad: float) -> bool:
    """True unless some existing keyframe is both closer than ``min_distance_m`` and rotated less
    than ``min_angle_rad`` (a keyframe adds a new place *or* a new viewing direction)."""
    T = np.asarray(T_world_cam, float)
    for K in existing:
        near = np.linalg.norm(K[:3, 3] - T[:3, 3]) < min_distance_m
        if near and np.radians(rotation_error_deg(K[:3, :3], T[:3, :3])) < min_angle_rad:
            return False
    return True
