"""ROS-free node policy: the session the node wires to topics (see session.py)."""

from .covariance import covariance_problems, sanitize_covariance
from .input_checks import check_image_size, check_stamp, compressed_header
from .mapping import is_new_keyframe
from .session import (KeyframeOutcome, MappingConfig, Published, Rejected, Session, SessionConfig, base_pose,
                      camera_pose)

__all__ = ["Session", "SessionConfig", "MappingConfig", "Published", "Rejected", "KeyframeOutcome", "base_pose", "camera_pose",
           "is_new_keyframe", "check_image_size", "check_stamp", "compressed_header", "sanitize_covariance", "covariance_problems"]
