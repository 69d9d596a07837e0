"""The published covariance: floors so a pose is never over-trusted, and the checks a fusing
filter (robot_localization's EKF/UKF) needs before it can use the measurement."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["sanitize_covariance", "covariance_problems"]


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


def covariance_problems(covariance: Any, frame_id: str, expected_frame: str = "map") -> list[str]:
    """Why robot_localization would reject or distort this pose covariance (empty = fine).

    Mirrors what its filters need from a PoseWithCovariance measurement: a known frame, finite
    values, a symmetric matrix with no zero variance (it would replace those with a tiny
    epsilon, i.e. infinite trust) and positive definite, because the EKF/UKF invert it.
    """
    problems: list[str] = []
    if frame_id != expected_frame:
        problems.append(f"frame_id {frame_id!r} is not {expected_frame!r}")
    C = np.asarray(covariance, float)
    if C.size != 36:
        return problems + [f"covariance has {C.size} entries, expected 36"]
    C = C.reshape(6, 6)
    if not np.all(np.isfinite(C)):
        return problems + ["covariance has non-finite entries"]
    if not np.allclose(C, C.T, rtol=1e-9, atol=1e-12):
        problems.append("covariance is not symmetric")
    if np.any(np.diag(C) <= 0):
        problems.append(f"covariance has non-positive variances {np.diag(C).tolist()}")
    try:
        np.linalg.cholesky(0.5 * (C + C.T))
    except np.linalg.LinAlgError:
        problems.append("covariance is not positive definite")
    return problems
