"""cats_ros as a robotics team uses it: a colcon workspace holding cats_interfaces (ament_cmake)
and cats_bridge (ament_python) builds with colcon against the project's ROS 2 wheels, and the
installed entry point, found the way `ros2 run` finds it, starts the node and serves requests
from the simulated swarm.

The workspace (copies of both packages) is built once per module (~30 s of CPU) by
scripts/colcon_build.sh, the documented command: colcon from the venv (pinned in
requirements.txt), the venv's ROS 2 wheels as the underlay. The node then runs from the
workspace's install/ after `. install/setup.sh` in plain sh, with the installed
config/cats_bridge.yaml as its --params-file. There is no `ros2` CLI and no launch / launch_ros
wheel for these wheels, so the installed launch file is checked against the installed package
here, and loaded with the launch API only where launch and launch_ros are importable."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import yaml

try:
    import rclpy
    from cats_bridge import parameters
    from cats_bridge.partition_info import PartitionInfo
    from cats_interfaces.msg import SwarmStatus
    from test_ros_bridge import (  # noqa: F401 - the fixtures domain and exports too
        Client,
        bridge,
        domain,
        exports,
        reference,
        windows,
    )
except ImportError as exc:  # pragma: no cover - setup installs them; CI must run these tests
    if os.environ.get("CI"):
        raise
    pytest.skip(f"ROS 2 Python packages not importable ({exc})", allow_module_level=True)

from cats.base.paths import REPO_ROOT
from cats.sim.swarm import Swarm

VENV = Path(sys.prefix)
COLCON = VENV / "bin" / "colcon"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "colcon_build.sh"
PACKAGES = ("cats_interfaces", "cats_bridge")
SRC = REPO_ROOT / "cats_ros"
PARAMS_YAML = SRC / "cats_bridge" / "config" / "cats_bridge.yaml"
STATUS = "/cats_bridge/status"


def build_env(ws: Path) -> dict[str, str]:
    """No underlay but the venv (scripts/colcon_build.sh adds it), colcon's home in `ws`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env.pop("CMAKE_PREFIX_PATH", None)
    return {**env, "CATS_VENV": str(VENV), "COLCON_HOME": str(ws / ".colcon")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """`colcon build` of a fresh workspace whose src/ holds copies of both packages."""
    if not COLCON.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{COLCON} missing: scripts/setup.sh installs colcon")
        pytest.skip("colcon is not installed in the venv (make setup installs it)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    for name in PACKAGES:
        shutil.copytree(
            SRC / name,
            ws / "src" / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
        )
    argv = ["bash", str(BUILD_SCRIPT), str(ws), "--event-handlers", "console_direct-"]
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=ws, env=build_env(ws), capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    print(f"$ scripts/colcon_build.sh WS ({time.monotonic() - t0:.0f} s)\n{out}")
    if r.returncode != 0:
        logs = sorted((ws / "log" / "latest_build").glob("*/stdout_stderr.log"))
        raise AssertionError(out + "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in logs))
    assert "Summary: 2 packages finished" in out, out
    return ws


def sourced(ws: Path, *command: str) -> list[str]:
    """`command` run by plain sh after `. install/setup.sh` (what a user's shell does)."""
    script = '. "$1/install/setup.sh" && shift && exec "$@"'
    return ["sh", "-c", script, "sh", str(ws), *command]


def run_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}


def test_workspace_install_layout(workspace) -> None:
    inst = workspace / "install"
    for name in PACKAGES:
        assert (inst / name / "share/ament_index/resource_index/packages" / name).is_file()
        assert (inst / name / "share" / name / "package.xml").is_file()
    share = inst / "cats_bridge/share/cats_bridge"
    assert (share / "launch/cats_bridge.launch.py").is_file()
    assert (share / "config/cats_bridge.yaml").read_text() == PARAMS_YAML.read_text()
    exe = inst / "cats_bridge/lib/cats_bridge/cats_bridge"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert not (inst / "cats_bridge/bin").exists()  # ros2 run looks in lib/<package> only
    assert list(inst.glob("cats_interfaces/lib/python3*/site-packages/cats_interfaces/srv"))


def test_ros2_run_resolution_from_sourced_workspace(workspace) -> None:
    """After `. install/setup.sh` the ament index finds both packages in the workspace (as
    `ros2 run` / `ros2 launch` do) and Python imports them from install/, not the venv."""
    probe = (
        "import os, cats_bridge, cats_interfaces.srv\n"
        "from ament_index_python.packages import get_package_prefix, "
        "get_package_share_directory\n"
        "print(get_package_prefix('cats_bridge'))\n"
        "print(get_package_prefix('cats_interfaces'))\n"
        "print(get_package_share_directory('cats_bridge'))\n"
        "print(cats_bridge.__file__)\nprint(cats_interfaces.__file__)\n"
    )
    r = subprocess.run(
        sourced(workspace, str(VENV / "bin" / "python"), "-c", probe),
        env=run_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    inst = workspace / "install"
    lines = r.stdout.split()
    assert lines[:3] == [
        str(inst / "cats_bridge"), str(inst / "cats_interfaces"),
        str(inst / "cats_bridge/share/cats_bridge"),
    ]  # fmt: skip
    assert lines[3].startswith(str(inst / "cats_bridge/lib/python"))
    assert lines[4].startswith(str(inst / "cats_interfaces/lib/python"))


def test_installed_entry_point_serves_a_request(workspace, exports, domain, tmp_path) -> None:
    """The workspace's installed entry point (<prefix>/lib/cats_bridge/cats_bridge, where
    `ros2 run cats_bridge cats_bridge` finds it), started from a sourced workspace with the
    installed parameters file, answers requests with the integer reference's outputs."""
    prefix = workspace / "install/cats_bridge"
    command = sourced(
        workspace, str(prefix / "lib/cats_bridge/cats_bridge"),
        "--ros-args", "--params-file", str(prefix / "share/cats_bridge/config/cats_bridge.yaml"),
        "--",
    )  # fmt: skip
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 2, seed=5)
    want = reference(exports["a"], x)
    log = tmp_path / "bridge.log"
    with (
        Swarm(exports["a"], workdir=tmp_path / "swarm") as swarm,
        bridge(swarm.endpoint, exports["a"], domain, log, command=command) as proc,
    ):
        client = Client(domain)
        try:
            client.wait_service(30.0)
            client.latest(SwarmStatus, STATUS, lambda m: m.connected and m.hash_ok, 20.0)
            for i in range(len(x)):
                r = client.call(x[i])
                assert r.success, (r.message, log.read_text())
                np.testing.assert_allclose(np.asarray(r.output), want[i], rtol=1e-5, atol=1e-5)
                assert r.air_bytes > 0 and r.frames_lost == 0 and not r.degraded
        finally:
            client.close()
        assert proc.poll() is None, log.read_text()
    print(f"installed cats_bridge served {len(x)} requests; its log:\n{log.read_text()}")


def test_params_yaml_is_every_declared_parameter() -> None:
    """config/cats_bridge.yaml, parsed by rcl for a node named cats_bridge, sets exactly the
    parameters the node declares, with the node's defaults, each one under a comment."""
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(PARAMS_YAML)], context=ctx)
    try:
        node = rclpy.create_node("cats_bridge", context=ctx)
        from_file = {name: p.value for name, p in node._parameter_overrides.items()}
        builtin = set(node._parameters)
        try:
            parameters.declare(node)
        except ValueError as exc:  # gateway / partition_dir are empty in the shipped file
            assert "is required" in str(exc)
        declared = set(node._parameters) - builtin
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    assert declared == set(parameters.DEFAULTS)
    assert set(from_file) == declared
    assert from_file == parameters.DEFAULTS
    lines = PARAMS_YAML.read_text().splitlines()
    for name in parameters.DEFAULTS:
        (i,) = [i for i, s in enumerate(lines) if s.strip().startswith(f"{name}:")]
        assert lines[i - 1].strip().startswith("#"), f"{name} has no comment above it"
    assert yaml.safe_load(PARAMS_YAML.read_text())["/**"]["ros__parameters"] == from_file


def launch_constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(), str(path))
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                with suppress(ValueError):
                    out[target.id] = ast.literal_eval(node.value)
        if isinstance(node, ast.FunctionDef):
            out[node.name] = "def"
    return out


def test_installed_launch_file_names_the_installed_node(workspace) -> None:
    """Without the launch API: the installed launch file parses, defines
    generate_launch_description, and names the package, the executable and the parameters file
    that the workspace installed."""
    prefix = workspace / "install/cats_bridge"
    c = launch_constants(prefix / "share/cats_bridge/launch/cats_bridge.launch.py")
    assert c["generate_launch_description"] == "def"
    assert (c["PACKAGE"], c["EXECUTABLE"]) == ("cats_bridge", "cats_bridge")
    assert (prefix / "lib" / c["PACKAGE"] / c["EXECUTABLE"]).is_file()
    text = (prefix / "share/cats_bridge/launch/cats_bridge.launch.py").read_text()
    assert '"config", "cats_bridge.yaml"' in text
    assert (prefix / "share/cats_bridge/config/cats_bridge.yaml").is_file()
    assert set(c["OVERRIDES"]) <= set(parameters.DEFAULTS)


# What `ros2 launch cats_bridge cats_bridge.launch.py NAME:=VALUE ...` does (ros2launch): the
# launch file from the package's share directory, included with the arguments, run by a
# LaunchService until SIGINT.
ROS2_LAUNCH = """
import sys
from ament_index_python.packages import get_package_share_directory
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
path = get_package_share_directory(sys.argv[1]) + "/launch/" + sys.argv[2]
args = [tuple(a.split(":=", 1)) for a in sys.argv[3:]]
service = LaunchService()
service.include_launch_description(
    IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=args)
)
sys.exit(service.run())
"""


def test_launch_file_with_launch_api(workspace, exports, domain, tmp_path) -> None:
    """Where launch and launch_ros are importable: the installed launch file, run as
    `ros2 launch` runs it with gateway:= and partition_dir:= arguments, starts the installed
    node with the installed parameters file, and it serves a request."""
    launch = pytest.importorskip("launch", reason="no launch wheel for these ROS 2 wheels")
    if not hasattr(launch, "LaunchService"):
        pytest.skip("the `launch` on PyPI is an unrelated 2017 package, not ROS 2's")
    pytest.importorskip("launch_ros", reason="no launch_ros wheel for these ROS 2 wheels")
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 1, seed=7)
    want = reference(exports["a"], x)
    log = tmp_path / "launch.log"
    env = {**run_env(), "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    with Swarm(exports["a"], workdir=tmp_path / "swarm") as swarm:
        argv = sourced(
            workspace, str(VENV / "bin/python"), "-c", ROS2_LAUNCH, "cats_bridge",
            "cats_bridge.launch.py", f"gateway:={swarm.endpoint}",
            f"partition_dir:={exports['a']}",
        )  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        client = Client(domain)
        try:
            client.wait_service(30.0)
            client.latest(SwarmStatus, STATUS, lambda m: m.connected and m.hash_ok, 20.0)
            r = client.call(x[0])
            assert r.success, (r.message, log.read_text())
            np.testing.assert_allclose(np.asarray(r.output), want[0], rtol=1e-5, atol=1e-5)
        finally:
            client.close()
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
            proc.wait(20)
    text = log.read_text()
    print(f"launch log:\n{text}")
    assert "[cats_bridge-1]: process started with pid" in text, text
    assert "process has finished cleanly" in text and "SIGTERM" not in text, text
    assert proc.returncode == 0, text
