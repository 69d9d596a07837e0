"""Test-wide setup: DDS stays on loopback, one ROS domain per xdist worker, quiet ROS imports."""

import os
import warnings

from reloc_vggt_ros.dds import localhost_env

os.environ.update(localhost_env())  # always loopback in tests, whatever the shell says
os.environ.pop("RELOC_VGGT_NETWORK_DDS", None)
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
os.environ["ROS_DOMAIN_ID"] = str(40 + int(_worker[2:] or 0))

try:  # first use of any ROS message type imports lark -> sre_parse DeprecationWarning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"module 'sre_(parse|constants)' is deprecated",
                                category=DeprecationWarning)
        import rosidl_generator_py  # noqa: F401
except ImportError:
    pass
