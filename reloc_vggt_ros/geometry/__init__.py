"""Pose maths, camera model, alignment and metrics: one source of truth for conventions.

Torch versions of the rotation formulas live in :mod:`.torch_rotations` (imported explicitly, so
that this package stays numpy-only).
"""

from .align import AlignResult, umeyama, umeyama_ransac
from .camera import DISTORTION_MODELS, Distortion, Intrinsics
from .pose_covariance import (perturb_pose, pose_covariance_jacobian, pose_delta,
                              transform_pose_covariance)
from .metrics import pose_error, recall_at, rotation_error_deg, translation_error
from .se3 import (absolute_from_relative, apply_T, camera_centre, compose, invert_T, invert_sim3,
                  interpolate_T, is_valid_T, valid_T_mask, local_origin, make_sim3, make_T, project_to_SO3, quat_to_R,
                  quat_wxyz_to_xyzw,
                  quat_xyzw_to_wxyz, R_to_quat, relative_pose, se3_exp, shift_T, shift_transform,
                  so3_exp, so3_log, T_from_quat_t, T_to_quat_t, R_BODY_OPTICAL, camera_mount)

__all__ = [
    "AlignResult", "umeyama", "umeyama_ransac", "Intrinsics", "Distortion", "DISTORTION_MODELS", "pose_error", "recall_at",
    "rotation_error_deg", "translation_error", "absolute_from_relative", "apply_T", "camera_centre",
    "compose", "invert_T", "invert_sim3", "is_valid_T", "valid_T_mask", "local_origin", "make_sim3", "make_T", "project_to_SO3",
    "quat_to_R", "quat_wxyz_to_xyzw", "quat_xyzw_to_wxyz", "R_to_quat", "relative_pose", "se3_exp",
    "shift_T", "shift_transform", "so3_exp", "so3_log", "T_from_quat_t", "T_to_quat_t", "interpolate_T", "R_BODY_OPTICAL", "camera_mount",
    "perturb_pose", "pose_delta", "pose_covariance_jacobian", "transform_pose_covariance",
]
