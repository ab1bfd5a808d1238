"""Shared by the tests that start processes (test_sim, test_native_sim, test_ros_bridge):
polling for a condition and finding a process's descendants and whether they have ended."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` every 20 ms until it is true; AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """True once process `pid` has ended: no /proc entry, or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # ended while listed
            kids.setdefault(ppid, []).append(int(d))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def cats_sim_argv(export_dir: Path, workdir: Path, *options: str) -> list[str]:
    """`python -m cats.cli sim EXPORT_DIR OPTIONS... --workdir WORKDIR --json`."""
    return [sys.executable, "-m", "cats.cli", "sim", str(export_dir), *options,
            "--workdir", str(workdir), "--json"]  # fmt: skip


def untrained_export(directory: Path, nodes: int = 4, seed: int = 0) -> Path:
    """An untrained `test` model exported for `nodes` nodes into `directory`; the host build
    of the simulator is made too."""
    from cats.artefacts import export
    from cats.model.partition import Partition
    from cats.sim.swarm import build_executables

    build_executables()
    _, qm = export.untrained("test", seed)
    export.export_partition(qm, Partition.full(qm.cfg, nodes), directory)
    return directory
