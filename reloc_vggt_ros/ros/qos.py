"""Named QoS profiles, one per kind of stream (nav2 conventions).

Images and camera_info use sensor-data QoS (best effort, shallow): a late frame is worthless.
``/relocalized_pose`` is latched like ``amcl_pose`` so a late subscriber gets the last fix.
``/initialpose`` is subscribed reliable + volatile exactly as nav2 AMCL does (SystemDefaultsQoS):
a transient-local *reader* would not match the volatile publishers of RViz and nav2, while a
volatile reader matches both. TF uses the tf2_ros broadcaster profiles.
"""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

__all__ = ["SENSOR_QOS", "POSE_QOS", "INITIALPOSE_QOS", "KEYFRAME_POSE_QOS", "TF_QOS",
           "TF_STATIC_QOS", "DIAGNOSTICS_QOS", "sensor_qos"]

SENSOR_QOS = qos_profile_sensor_data

POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)

INITIALPOSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

KEYFRAME_POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                               reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)

# depth 100 as tf2_ros's static listener: a late joiner gets every latched /tf_static message
# (one per static broadcaster, or each one a bag player replays), not only the last
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)

DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def sensor_qos(depth: int) -> QoSProfile:
    """Sensor-data QoS with a configurable queue depth (parameter ``qos_depth``)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=SENSOR_QOS.reliability, durability=SENSOR_QOS.durability)
