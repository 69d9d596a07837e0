"""Launch reloc_vggt_node with the shipped parameters (ROS 2 install with launch_ros).

    ros2 launch reloc_vggt_ros reloc_vggt.launch.py params_file:=/path/to/params.yaml \
        image:=/camera/image_rect camera_info:=/camera/camera_info namespace:=robot1

Without launch (PyPI wheels), the same node from the same YAML:
    reloc-vggt run --params-file config/reloc_vggt.yaml
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "reloc_vggt_ros"
EXECUTABLE = "reloc_vggt_node"
PARAMS_FILE = "reloc_vggt.yaml"


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)
    args = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="rectified image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="camera_info topic"),
        DeclareLaunchArgument("keyframe_pose", default_value="keyframe_pose", description="mapping pose topic"),
        DeclareLaunchArgument("initialpose", default_value="/initialpose", description="prior pose topic"),
    ]
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=EXECUTABLE,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file")],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("keyframe_pose", LaunchConfiguration("keyframe_pose")),
            ("initialpose", LaunchConfiguration("initialpose")),
        ],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(args + [node])
