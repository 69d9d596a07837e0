"""ROS-free node policy: the session the node wires to topics (see session.py)."""

from .covariance import covariance_problems, sanitize_covariance
from .mapping import is_new_keyframe
from .session import KeyframeOutcome, MappingConfig, Published, Rejected, Session, SessionConfig

__all__ = ["Session", "SessionConfig", "MappingConfig", "Published", "Rejected", "KeyframeOutcome",
           "is_new_keyframe", "sanitize_covariance", "covariance_problems"]
