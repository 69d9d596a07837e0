"""Launch reloc_vggt_node with the shipped parameters.

With ROS 2 (launch_ros):
    ros2 launch reloc_vggt_ros reloc_vggt.launch.py params_file:=/path/to/params.yaml \
        image:=/camera/image_rect camera_info:=/camera/camera_info namespace:=robot1 use_sim_time:=true

Without launch (PyPI wheels), the same arguments start the same node in this process:
    python launch/reloc_vggt.launch.py image:=/camera/image_rect namespace:=robot1

Both paths use ARGUMENTS and REMAPPINGS; :func:`node_ros_args` is the argv launch_ros gives the
node for them (``--ros-args -r __node:=... -r __ns:=... --params-file ... -p use_sim_time:=...
-r image:=...``), which
``reloc-vggt run --params-file F --ros-args ...`` equals.
"""

from __future__ import annotations

import os
import sys

PACKAGE = "reloc_vggt_ros"
EXECUTABLE = "reloc_vggt_node"
PARAMS_FILE = "reloc_vggt.yaml"

# launch argument -> (default, description); params_file's default is the package's config file
ARGUMENTS = {
    "params_file": ("", "node parameter YAML"),
    "namespace": ("", "node namespace (its relative topics and services move there)"),
    "image": ("/camera/image_raw", "rectified image topic (image/compressed follows it)"),
    "camera_info": ("/camera/camera_info", "camera_info topic"),
    "keyframe_pose": ("keyframe_pose", "mapping pose topic"),
    "initialpose": ("/initialpose", "prior pose topic"),
    "use_sim_time": ("false", "take time from /clock (a bag played with --clock, a simulator)"),
}
# launch arguments that set a node parameter of the same name (after params_file: they win)
PARAMETER_ARGUMENTS = ("use_sim_time",)
# the node's topic -> (launch argument, suffix appended to its value)
REMAPPINGS = (
    ("image", "image", ""),
    ("image/compressed", "image", "/compressed"),
    ("camera_info", "camera_info", ""),
    ("keyframe_pose", "keyframe_pose", ""),
    ("initialpose", "initialpose", ""),
)


def default_params_file() -> str:
    """config/ beside launch/: the source tree and the installed share/reloc_vggt_ros alike."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", PARAMS_FILE))


def node_ros_args(values: dict[str, str] | None = None) -> list[str]:
    """The ROS arguments launch_ros passes the node for these launch arguments (pure)."""
    unknown = sorted(set(values or {}) - set(ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(ARGUMENTS)}")
    v = {name: default for name, (default, _) in ARGUMENTS.items()} | dict(values or {})
    namespace = v["namespace"] if v["namespace"].startswith("/") else "/" + v["namespace"]  # as launch_ros
    argv = ["--ros-args", "-r", f"__node:={EXECUTABLE}", "-r", f"__ns:={namespace}",
            "--params-file", v["params_file"] or default_params_file()]
    for name in PARAMETER_ARGUMENTS:
        argv += ["-p", f"{name}:={v[name]}"]
    for topic, arg, suffix in REMAPPINGS:
        argv += ["-r", f"{topic}:={v[arg]}{suffix}"]
    return argv


def generate_launch_description():  # -> launch.LaunchDescription (imported here: ROS installs only)
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    defaults = {name: default for name, (default, _) in ARGUMENTS.items()}
    defaults["params_file"] = os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)
    args = [DeclareLaunchArgument(name, default_value=defaults[name], description=description)
            for name, (_, description) in ARGUMENTS.items()]
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=EXECUTABLE,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {name: ParameterValue(LaunchConfiguration(name), value_type=bool) for name in PARAMETER_ARGUMENTS}],
        remappings=[(topic, [LaunchConfiguration(arg), suffix] if suffix else LaunchConfiguration(arg))
                    for topic, arg, suffix in REMAPPINGS],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(args + [node])


if __name__ == "__main__":  # plain Python: NAME:=VALUE launch arguments, as ros2 launch takes them
    pairs = [a.split(":=", 1) for a in sys.argv[1:]]
    bad = [a for a, p in zip(sys.argv[1:], pairs) if len(p) != 2]
    if bad:
        sys.exit(f"expected launch arguments NAME:=VALUE, got {' '.join(bad)}; known: {', '.join(ARGUMENTS)}")
    try:
        ros_args = node_ros_args(dict(pairs))  # type: ignore[arg-type]
    except ValueError as err:
        sys.exit(str(err))
    from reloc_vggt_ros.ros.node import main

    sys.exit(main([EXECUTABLE, *ros_args]))
