#!/usr/bin/env bash
# Build the ROS 2 interface package cats_ros/cats_interfaces (srv, action, msg) with
# ament_cmake + rosidl from the PyPI ROS 2 wheels in the venv, and install it into the venv
# (C/C++ type support libraries into $VENV/lib, the Python package into site-packages), so
# `import cats_interfaces.srv` works with nothing set at run time. Also installs the bridge
# node package (cats_ros/cats_bridge, editable). Idempotent: a stamp of every input makes a
# rerun with nothing changed return at once.
#
#   scripts/build_ros_interfaces.sh [VENV]      (default .venv; called by scripts/setup.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="$(cd "${1:-.venv}" && pwd)"
PY="$VENV/bin/python"
PKG=cats_ros/cats_interfaces
BUILD=build/ros/cats_interfaces
STAMP="$VENV/.stamp-cats-interfaces"

# inputs: this script, the package, and the ROS 2 / Python pins (not the other requirements)
want_stamp="$( (cat scripts/build_ros_interfaces.sh "$PKG/CMakeLists.txt" "$PKG/package.xml" \
    "$PKG"/msg/*.msg "$PKG"/srv/*.srv "$PKG"/action/*.action cats_ros/cats_bridge/{pyproject.toml,setup.py,setup.cfg,package.xml};
    grep -iE '^(ros-|catkin-pkg|numpy|empy|lark)' requirements.txt; "$PY" -V) \
    | sha256sum | cut -d' ' -f1)"
site="$(echo "$VENV"/lib/python3.*/site-packages)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
    && [ -f "$site/cats_interfaces/srv/__init__.py" ] \
    && compgen -G "$site/cats_bridge-*.dist-info" >/dev/null; then
    exit 0
fi
echo "setup: building the ROS 2 interfaces ($PKG) into $VENV"

# Python headers: the generated Python extension modules include Python.h.
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if [ ! -f "$py_inc/Python.h" ]; then
    ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "setup: installing libpython$ver-dev for $py_inc/Python.h"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "libpython$ver-dev" || { $SUDO apt-get update && $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "libpython$ver-dev"; }
fi
np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"

# The wheels' CMake exports name the include dirs of the machine that built them; point them
# at this interpreter's (the numpy path first: it starts with the same prefix).
mapfile -t stale < <(grep -rl "/opt/python/" "$VENV/share" --include='*.cmake' 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
    sed -i -E \
        -e "s#/opt/python/[^/;\"]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$np_inc#g" \
        -e "s#/opt/python/[^/;\"]+/include/python3\.[0-9]+#$py_inc#g" \
        "${stale[@]}"
fi

rm -rf "$BUILD"
mkdir -p "$(dirname "$BUILD")"
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
cmake -S "$PKG" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_STRATEGY=LOCATION \
    -DBUILD_TESTING=OFF >"$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >>"$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >>"$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }

PYTHONWARNINGS=ignore "$PY" -m pip install --quiet --no-deps --no-build-isolation \
    -e cats_ros/cats_bridge
"$PY" -c 'import cats_interfaces.srv, cats_interfaces.action, cats_interfaces.msg, cats_bridge'
echo "$want_stamp" > "$STAMP"
echo "setup: cats_interfaces installed into $VENV"
