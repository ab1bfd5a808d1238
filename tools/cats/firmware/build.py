"""Building the firmware: the Zephyr node and gateway images, the bare-metal Cortex-M4 node
images and the simulator's host stations, each with CMake (or `west build`) from
cats_zephyr_module. The steps of `west cats-build`; a failed step raises BuildError with what
went wrong and, where there is one, a hint how to fix it."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cats.base.paths import REPO_ROOT
from cats.firmware import cnode

MODULE = REPO_ROOT / "cats_zephyr_module"
SAMPLE = MODULE / "samples" / "node"
GATEWAY_SAMPLE = MODULE / "samples" / "gateway"
HOST_SRC = MODULE / "host"
M4_SRC = MODULE / "m4"
TOOLCHAIN = REPO_ROOT / "cmake" / "arm-none-eabi.cmake"
NANOPB_VERSION = "0.4.9.1"
HOST_EXES = ("cats_node_sim", "cats_gateway_sim")


class BuildError(Exception):
    """A user-facing build failure: message (+ hint)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def run_step(
    cmd: list[str],
    what: str,
    cwd: Path | None = None,
    env: dict | None = None,
    stream: bool = False,
) -> str:
    """Run a build step; on failure raise BuildError with the tail of its output. With `stream`,
    the output goes straight to stderr (long Zephyr builds)."""
    cmd = [str(c) for c in cmd]
    if stream:
        res = subprocess.run(cmd, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr)
        out = ""
    else:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        out = res.stdout + res.stderr
    if res.returncode != 0:
        raise BuildError(
            f"{what} failed (exit {res.returncode}): {' '.join(cmd)}"
            + (f"\n{out[-6000:]}" if out else "")
        )
    return out


def cmake_cache(build_dir: Path) -> dict[str, str]:
    """NAME -> value of a build directory's CMakeCache.txt (empty if none)."""
    cache = Path(build_dir) / "CMakeCache.txt"
    out: dict[str, str] = {}
    if cache.is_file():
        for ln in cache.read_text(errors="replace").splitlines():
            m = re.match(r"^([A-Za-z_][\w.-]*):[A-Z_]+=(.*)$", ln)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def nanopb_generator() -> Path:
    cands = [
        Path(sys.executable).parent / "nanopb_generator",
        REPO_ROOT / ".venv" / "bin" / "nanopb_generator",
    ]
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which("nanopb_generator")
    if found:
        return Path(found)
    raise BuildError(
        "nanopb_generator not found",
        hint=f"pip install nanopb=={NANOPB_VERSION} (requirements.txt; `make setup`)",
    )


def is_zephyr(path: Path) -> bool:
    return (path / "cmake" / "modules" / "zephyr_default.cmake").is_file()


def zephyr_missing(bad_base: str | None, proj: Any, active: bool) -> BuildError:
    """Why no Zephyr tree is usable, and how to get one: `bad_base`, a ZEPHYR_BASE that is not
    the workspace's zephyr project and no Zephyr tree; else the workspace's zephyr project
    (`proj`, None when the manifest has none) is inactive or not cloned."""
    fallback = (
        "; without Zephyr, `west cats-build --m4` builds the bare-metal Cortex-M4 "
        "node images and `--host` the simulator's stations"
    )
    if bad_base:
        return BuildError(
            f"ZEPHYR_BASE={bad_base} (environment or zephyr.base setting) is not a "
            "Zephyr tree (no cmake/modules/zephyr_default.cmake)",
            hint="point it at a Zephyr 4.x checkout, or unset it and use this "
            "workspace's zephyr project (`west update`)" + fallback,
        )
    if proj is None:
        why = "Zephyr is not available: the manifest has no zephyr project, ZEPHYR_BASE is unset"
        hint = (
            "import Zephyr in the manifest (as this repository's west.yml does) and run "
            "`west update`, or set ZEPHYR_BASE to a Zephyr 4.x tree"
        )
    elif not active:
        why = (
            f"Zephyr is not available: the workspace's zephyr project ({proj.revision}) "
            "is inactive (manifest.project-filter) and ZEPHYR_BASE is unset"
        )
        hint = (
            "`west config -d manifest.project-filter` (or drop -zephyr from it), then "
            "`west update` (fetches Zephyr and its modules nanopb, cmsis_6, hal_nordic)"
        )
    else:
        why = (
            f"Zephyr is not available: the workspace's zephyr project ({proj.revision}) "
            f"is not cloned at {proj.abspath}"
        )
        hint = "run `west update` (fetches Zephyr and the modules nanopb, cmsis_6, hal_nordic)"
    hint += (
        ", then `pip install -r zephyr/scripts/requirements-base.txt` and install the Zephyr SDK"
    )
    return BuildError(why, hint=hint + fallback)


def check_m4_tools() -> None:
    for tool in ("arm-none-eabi-gcc", "cmake"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"{tool} not found: the --m4 build needs it",
                hint="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                "cmake (scripts/setup.sh)",
            )


def zephyr_elf(bdir: Path, what: str) -> Path:
    """zephyr/zephyr.elf of a build directory (or of its one sysbuild domain)."""
    elf = next(
        (
            e
            for e in (bdir / "zephyr" / "zephyr.elf", *bdir.glob("*/zephyr/zephyr.elf"))
            if e.is_file()
        ),
        None,
    )
    if elf is None:
        raise BuildError(f"{what}: the build in {bdir} left no zephyr/zephyr.elf")
    return elf


def zephyr_node_row(elf: Path, node: int, bdir: Path) -> dict[str, Any]:
    """A built node image, once its .config says it is node `node`."""
    cfg = elf.parent / ".config"
    config = cfg.read_text() if cfg.is_file() else ""
    if f"CONFIG_CATS_NODE_ID={node}\n" not in config:
        raise BuildError(f"node {node}: {cfg} has no CONFIG_CATS_NODE_ID={node}")
    hexf = elf.with_suffix(".hex")
    return {
        "node": node,
        "build_dir": str(bdir),
        "elf": str(elf),
        "hex": str(hexf) if hexf.is_file() else None,
        "flash": f"west flash -d {bdir}",
    }


def build_host(nanopb: Path, jobs: int) -> dict[str, Any]:
    """Configure + build cats_zephyr_module/host into <repo>/build/host (the directory
    cats.firmware.cnode and the simulator use), under cats.firmware.cnode's lock file."""
    build_dir = Path(cnode.BUILD_DIR)
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f".{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_step(
            [
                "cmake",
                "-S",
                HOST_SRC,
                "-B",
                build_dir,
                f"-DNANOPB_DIR={nanopb}",
                f"-DNANOPB_GENERATOR={nanopb_generator()}",
            ],
            "host configure",
        )
        run_step(["cmake", "--build", build_dir, "-j", str(jobs)], "host build")
        lib = build_dir / cnode.LIB_NAME
        if lib.is_file():
            lib.touch()  # cnode.build_host's freshness check: up to date
    exes = {name: build_dir / name for name in HOST_EXES}
    missing = [n for n, p in exes.items() if not p.is_file()]
    if missing:
        raise BuildError(f"host build in {build_dir} has no {', '.join(missing)}")
    return {
        "build_dir": str(build_dir),
        "executables": {n: str(p) for n, p in exes.items()},
        "library": str(build_dir / cnode.LIB_NAME),
    }


# --- Zephyr images


def west_build(
    board: str, app: Path, bdir: Path, defs: list[str], what: str, *, pristine: bool, stream: bool
) -> None:
    """`west build` of `app` (the workspace's zephyr project gives the command)."""
    cmd = [
        sys.executable,
        "-m",
        "west",
        "build",
        "-b",
        board,
        "-d",
        bdir,
        "--no-sysbuild",
        "-p",
        "always" if pristine else "auto",
        app,
        "--",
        *defs,
    ]
    run_step(cmd, f"west build of {what}", stream=stream)


def cmake_build(
    zbase: Path,
    board: str,
    app: Path,
    bdir: Path,
    defs: list[str],
    what: str,
    *,
    pristine: bool,
    jobs: int,
    stream: bool,
) -> None:
    """CMake configure + build of `app` against the Zephyr tree `zbase` (no west build)."""
    if pristine and (bdir / "CMakeCache.txt").is_file():
        shutil.rmtree(bdir)
    env = dict(os.environ, ZEPHYR_BASE=str(zbase))
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    run_step(
        ["cmake", "-S", app, "-B", bdir, *gen, f"-DBOARD={board}", *defs],
        f"Zephyr configure of {what}",
        env=env,
        stream=stream,
    )
    run_step(
        ["cmake", "--build", bdir, "-j", str(jobs)],
        f"Zephyr build of {what}",
        env=env,
        stream=stream,
    )


def build_m4_node(
    nanopb: Path,
    part: Path,
    node: int,
    bdir: Path,
    *,
    cmake_args: list[str],
    jobs: int,
    pristine: bool,
) -> dict[str, Any]:
    """The bare-metal Cortex-M4F image of `node` (cats_zephyr_module/m4) into `bdir`."""
    if pristine and (bdir / "CMakeCache.txt").is_file():
        shutil.rmtree(bdir)
    run_step(
        [
            "cmake",
            "-S",
            M4_SRC,
            "-B",
            bdir,
            f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}",
            f"-DCATS_PARTITION_DIR={part}",
            f"-DCATS_NODE_ID={node}",
            f"-DNANOPB_DIR={nanopb}",
            f"-DNANOPB_GENERATOR={nanopb_generator()}",
            *cmake_args,
        ],
        f"M4 configure of node {node}",
    )
    run_step(
        ["cmake", "--build", bdir, "--target", "cats_m4_node", "-j", str(jobs)],
        f"M4 build of node {node}",
    )
    elf = bdir / "cats_m4_node.elf"
    if not elf.is_file():
        raise BuildError(f"node {node}: the M4 build in {bdir} left no cats_m4_node.elf")
    return {
        "node": node,
        "build_dir": str(bdir),
        "elf": str(elf),
        "map": str(bdir / "cats_m4_node.map"),
    }
