"""The bags we write carry the running distribution's message definitions and type hashes.

A bag recorded with kilted hashes and replayed on jazzy (or the reverse) is refused by
``ros2 bag`` when a definition differs; rosbags' type store must therefore be chosen by the
distribution in use (:mod:`reloc_vggt_ros.distro`), and its RIHS01 hashes must equal those the
installed message wheels were generated with.
"""

import json
import sys
from pathlib import Path

import pytest

from reloc_vggt_ros.data.bag import typestore
from reloc_vggt_ros.distro import ros_distro, rosbags_store

# every message type the node, the bag tools and evaluate publish, subscribe or record
TYPES = ["sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
         "geometry_msgs/msg/PoseWithCovarianceStamped", "geometry_msgs/msg/PoseStamped",
         "geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage",
         "diagnostic_msgs/msg/DiagnosticArray", "rosgraph_msgs/msg/Clock", "std_msgs/msg/Header"]


def _installed_hash(name: str) -> str:
    pkg, _, msg = name.split("/")
    path = Path(sys.prefix) / "share" / pkg / "msg" / f"{msg}.json"
    if not path.is_file():
        pytest.skip(f"{path} not installed (not a pip-wheel venv)")
    hashes = json.loads(path.read_text())["type_hashes"]
    return next(h["hash_string"] for h in hashes if h["type_name"] == name)


@pytest.mark.parametrize("name", TYPES)
def test_bag_type_hashes_match_the_installed_messages(name: str) -> None:
    assert typestore().hash_rihs01(name) == _installed_hash(name)


def test_the_store_follows_the_distribution() -> None:
    from rosbags.typesys import Stores

    assert rosbags_store() is {"jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}[ros_distro()]


def test_distribution_is_read_off_the_installed_wheels() -> None:
    """No ROS_DISTRO in a pip venv: the ros-rclpy major version names the distribution."""
    from importlib import metadata

    major = int(metadata.version("ros-rclpy").split(".")[0])
    assert ros_distro({}) == {7: "jazzy", 9: "kilted"}[major]
    assert ros_distro({"ROS_DISTRO": "jazzy"}) == "jazzy"
