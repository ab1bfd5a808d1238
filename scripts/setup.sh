#!/usr/bin/env bash
# Idempotent developer/CI setup: Debian packages, .venv with pinned requirements, the
# `cats` package in editable mode. A rerun with nothing changed returns in well under 1 s.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages the builds and tests need: the C core on the host (CMake + gcc),
# for Cortex-M4 (arm-none-eabi-gcc + newlib), and qemu for
# instruction counting on the M4, tshark to check the simulator's pcap traces, gcc-multilib
# for the 32-bit Zephyr native_sim and nrf52_bsim images (when a Zephyr tree is used).
DEB_PACKAGES="cmake gcc make libmbedtls-dev gcc-multilib gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm tshark"

VENV=.venv
STAMP="$VENV/.stamp"

missing=()
for pkg in $DEB_PACKAGES; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

bash scripts/fetch_nanopb.sh
bash scripts/fetch_mbedtls.sh

want_stamp="$(cat requirements.txt tools/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
    bash scripts/build_ros_interfaces.sh "$VENV"  # ROS 2 interfaces + bridge (own stamp)
    exit 0
fi

PYTHON=""
if command -v python3.11 >/dev/null 2>&1; then
    PYTHON=python3.11
elif command -v python3 >/dev/null 2>&1 \
    && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PYTHON=python3
else
    echo "setup: Python 3.11 is required (python3.11 or python3 at version 3.11)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e tools/
echo "$want_stamp" > "$STAMP"
bash scripts/build_ros_interfaces.sh "$VENV"
echo "setup: done"
