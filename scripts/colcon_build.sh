#!/usr/bin/env bash
# Build a colcon workspace holding cats_ros/cats_interfaces (ament_cmake) and
# cats_ros/cats_bridge (ament_python) against the ROS 2 Kilted wheels of the venv: no /opt/ros.
# The venv is the underlay (AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH, appended to any you have);
# colcon and its ROS extensions come from requirements.txt. Run `make setup` first.
#
#   scripts/colcon_build.sh WS [colcon build options ...]
#   . WS/install/setup.sh                  # plain sh, bash or zsh (setup.bash / setup.zsh)
#   WS/install/cats_bridge/lib/cats_bridge/cats_bridge --ros-args --params-file \
#       WS/install/cats_bridge/share/cats_bridge/config/cats_bridge.yaml -p gateway:=... ...
#
# WS/src gets symlinks to both packages unless it already holds them (copies, or a checkout
# of this repository). CATS_VENV names another venv (default: this repository's .venv).
# tests/test_colcon.py builds its workspace with this script.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${CATS_VENV:-$ROOT/.venv}" && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 WS [colcon build options ...]" >&2
    exit 2
fi
mkdir -p "$1/src"
WS="$(cd "$1" && pwd)"
shift
if [ ! -x "$VENV/bin/colcon" ]; then
    echo "colcon_build: $VENV/bin/colcon missing: run make setup" >&2
    exit 1
fi
# The wheels' exported CMake files name the include directories of the machine that built
# them; this (idempotent, stamped) step has pointed them at this interpreter's.
bash "$ROOT/scripts/build_ros_interfaces.sh" "$VENV"

for pkg in cats_interfaces cats_bridge; do
    if [ ! -e "$WS/src/$pkg" ] && ! grep -rqs --include=package.xml "<name>$pkg</name>" "$WS/src"; then
        ln -s "$ROOT/cats_ros/$pkg" "$WS/src/$pkg"
    fi
done

cd "$WS"
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VENV"
export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$VENV"
export PATH="$VENV/bin:$PATH"
export MAKEFLAGS="${MAKEFLAGS:--j2}"  # 2 cores here; colcon runs one package at a time below
exec "$VENV/bin/colcon" build --executor sequential "$@" \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_STRATEGY=LOCATION \
    -DBUILD_TESTING=OFF
