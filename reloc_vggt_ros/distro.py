"""Which ROS 2 distribution this process runs on, and what differs between them for us.

The package runs on kilted and jazzy (both tested, from PyPI wheels or a colcon install) and
builds on humble. Three things differ: the Fast DDS profile variable (Fast DDS 3 in kilted reads
``FASTDDS_DEFAULT_PROFILES_FILE``; Fast DDS 2 in jazzy and humble only
``FASTRTPS_DEFAULT_PROFILES_FILE``), the localhost switch (``ROS_AUTOMATIC_DISCOVERY_RANGE`` since
iron, ``ROS_LOCALHOST_ONLY`` in humble) and the rosbags type store a bag is written with (its
message definitions and type hashes must be the running distribution's).

The distribution is ``ROS_DISTRO`` when a ROS install's setup script set it; a pip-only venv has
no such variable, so it is read off the installed ``ros-rclpy`` wheel's major version.
"""

from __future__ import annotations

import functools
import os
from importlib import metadata

__all__ = ["SUPPORTED", "ros_distro", "profile_variable", "rosbags_store"]

SUPPORTED = ("humble", "jazzy", "kilted")
# ros-rclpy wheel major version -> distribution (rclpy 3.x humble, 7.x jazzy, 9.x kilted)
_RCLPY_MAJOR = {3: "humble", 7: "jazzy", 9: "kilted"}
_DEFAULT = "kilted"


@functools.lru_cache(maxsize=1)
def _from_wheel() -> str | None:
    try:
        major = int(metadata.version("ros-rclpy").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None
    return _RCLPY_MAJOR.get(major)


def ros_distro(env: dict[str, str] | None = None) -> str:
    """``humble``, ``jazzy`` or ``kilted`` (an unknown or newer one is treated as kilted)."""
    name = (os.environ if env is None else env).get("ROS_DISTRO", "").strip().lower()
    if not name:
        name = _from_wheel() or _DEFAULT
    return name if name in SUPPORTED else _DEFAULT


def profile_variable(distro: str) -> str:
    """The environment variable the distribution's Fast DDS reads its XML profile from."""
    return "FASTDDS_DEFAULT_PROFILES_FILE" if distro == "kilted" else "FASTRTPS_DEFAULT_PROFILES_FILE"


def rosbags_store(distro: str | None = None):  # -> rosbags.typesys.Stores
    """The rosbags type store whose definitions and RIHS01 hashes match ``distro``."""
    from rosbags.typesys import Stores

    return {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY,
            "kilted": Stores.ROS2_KILTED}[distro or ros_distro()]
