"""Shared by the Cortex-M4 tests: build the bare-metal images (cats_zephyr_module/m4, the same
build directories as `make m4`) and run them under QEMU (mps2-an386, Cortex-M4F)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = ROOT / "cmake" / "arm-none-eabi.cmake"
M4_SRC = ROOT / "cats_zephyr_module" / "m4"
QEMU_ARGS = [
    "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
    "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
]  # fmt: skip
# (node count, io blocks) -> (partition directory, build directory), relative to the
# repository as in the Makefile so that `make m4` and the tests share one build.
BUILDS = {
    (8, "lean"): ("build/parts/verytiny-d8", "build/m4"),
    (16, "lean"): ("build/parts/verytiny-d16", "build/m4-d16"),
    (8, "paper"): ("build/parts/verytiny-paper-d8", "build/m4-paper-d8"),
}
# The paper recipe's model blocks (cats.training.recipe.paper_recipe) on the verytiny shape.
PAPER = {"io": "paper", "activation": "relu", "io_hidden": 128}


def require_toolchain() -> None:
    for tool in ("arm-none-eabi-gcc", "cmake"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/setup.sh installs gcc-arm-none-eabi)")


def require_qemu() -> None:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed (scripts/setup.sh installs qemu-system-arm)")


def partition(nodes: int, io: str = "lean") -> Path:
    """The untrained verytiny preset exported for `nodes` nodes (as `make m4` does; with
    io = "paper" the paper recipe's input/output blocks)."""
    part = ROOT / BUILDS[nodes, io][0]
    if not (part / "partition.json").exists():
        from cats.artefacts.export import export_partition, untrained
        from cats.model.partition import Partition

        _, qm = untrained("verytiny", 0, **(PAPER if io == "paper" else {}))
        export_partition(qm, Partition.full(qm.cfg, nodes), part)
    return part


def build(nodes: int, io: str = "lean") -> Path:
    """Configure (once) and build the M4 images for node 0 of `nodes`; returns the build dir."""
    require_toolchain()
    part_rel, build_rel = BUILDS[nodes, io]
    build_dir = ROOT / build_rel
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f".{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        partition(nodes, io)
        if not (build_dir / "CMakeCache.txt").exists():
            subprocess.run(
                ["cmake", "-S", str(M4_SRC), "-B", str(build_dir),
                 f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", f"-DCATS_PARTITION_DIR={part_rel}",
                 "-DCATS_NODE_ID=0"],
                check=True, capture_output=True, cwd=ROOT,
            )  # fmt: skip
        subprocess.run(
            ["cmake", "--build", str(build_dir), "-j", "2"],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
    return build_dir


def run_qemu(elf: Path, timeout: float = 120) -> str:
    """Semihosting output of one image (QEMU 7.2 writes it to stderr when stdout is a pipe)."""
    require_qemu()
    proc = subprocess.run(
        ["qemu-system-arm", *QEMU_ARGS, "-kernel", str(elf)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    return proc.stdout
