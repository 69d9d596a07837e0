#!/bin/bash
# Source ROS and the colcon install, keep DDS on this host unless the user configured it, then run
# the command (default: ros2 launch reloc_vggt_ros reloc_vggt.launch.py).
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /ws/install/setup.bash
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE}" ]; then
    export FASTDDS_DEFAULT_PROFILES_FILE=/ws/install/share/reloc_vggt_ros/config/fastdds_localhost.xml
fi
exec "$@"
