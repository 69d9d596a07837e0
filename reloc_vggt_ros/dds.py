"""Keep DDS on this host: the loopback Fast DDS profile and localhost discovery.

Every entry point that may create a ROS node (CLI, node ``main``, tests) calls
:func:`ensure_localhost_dds` before ``rclpy`` creates its first node. Values already set by the
user are kept, except that a missing profile file is replaced by the shipped one. The profile
goes into the variable the running distribution's Fast DDS reads (:mod:`reloc_vggt_ros.distro`):
``FASTDDS_DEFAULT_PROFILES_FILE`` on kilted, ``FASTRTPS_DEFAULT_PROFILES_FILE`` on jazzy/humble.

On a robot whose node must be reachable from other machines, set ``RELOC_VGGT_NETWORK_DDS=1``:
:func:`ensure_localhost_dds` then leaves the DDS environment as the user configured it. The
test harness ignores that switch (:func:`localhost_env` always applies the loopback settings).
"""

from __future__ import annotations

import os
from pathlib import Path

from .distro import profile_variable, ros_distro

__all__ = ["PROFILE_PATH", "NETWORK_OPT_OUT", "ensure_localhost_dds", "localhost_env"]

NETWORK_OPT_OUT = "RELOC_VGGT_NETWORK_DDS"
PROFILE_PATH = Path(__file__).resolve().parent.parent / "config" / "fastdds_localhost.xml"


def _shipped_profile() -> Path:
    """The profile in the source tree, or the installed share/ copy under a colcon install."""
    if PROFILE_PATH.is_file():
        return PROFILE_PATH
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("reloc_vggt_ros")) / "config" / "fastdds_localhost.xml"
    except Exception:  # noqa: BLE001 - ament index is optional outside a ROS install
        return PROFILE_PATH


def localhost_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: os.environ) with the localhost-only DDS settings applied."""
    out = dict(os.environ if env is None else env)
    distro = ros_distro(out)
    variable = profile_variable(distro)
    current = out.get(variable) or out.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if not current or not Path(current).is_file():
        current = str(_shipped_profile())
    out[variable] = current
    if distro == "humble":      # humble predates ROS_AUTOMATIC_DISCOVERY_RANGE
        out["ROS_LOCALHOST_ONLY"] = "1"
    out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out.pop(NETWORK_OPT_OUT, None)  # children of a loopback process stay on loopback
    return out


def ensure_localhost_dds() -> bool:
    """Apply :func:`localhost_env` to this process (call before the first rclpy node).

    Returns False (and changes nothing) when the user opted into network DDS.
    """
    if os.environ.get(NETWORK_OPT_OUT, "") not in ("", "0"):
        return False
    os.environ.update(localhost_env())
    return True
