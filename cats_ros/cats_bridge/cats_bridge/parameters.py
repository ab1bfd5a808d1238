"""The bridge node's ROS parameters (read only), declared, read and checked in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

DEFAULTS: dict[str, Any] = {
    "gateway": "",  # tcp://HOST:PORT or serial:///dev/ttyACM0?baud=115200
    "partition_dir": "",  # the `cats export` directory (partition.json)
    "expected_partition_hash": "",  # hex sha256; default: partition.json's
    "timeout_s": 30.0,  # per request, queued and in flight
    "queue_depth": 16,  # requests accepted at once
    "status_period_s": 1.0,  # status poll and publication period
}


@dataclass(frozen=True)
class BridgeParams:
    gateway: str
    partition_dir: str
    expected_partition_hash: str  # "" or 64 lower-case hex digits
    timeout_s: float
    queue_depth: int
    status_period_s: float


def hex_hash(text: str, what: str) -> str:
    """`text` as 64 lower-case hex digits, or ValueError."""
    h = text.strip().lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError(f"{what} must be 64 hex digits (a sha256), not {text!r}")
    return h


def declare(node: Node) -> BridgeParams:
    """Declare the parameters on `node` and return them checked; ValueError says what is
    wrong. Dynamic typing, so `-p timeout_s:=5` (an integer) works too."""
    descriptor = ParameterDescriptor(read_only=True, dynamic_typing=True)
    for name, default in DEFAULTS.items():
        node.declare_parameter(name, default, descriptor)
    p = {name: type(d)(node.get_parameter(name).value) for name, d in DEFAULTS.items()}
    if not p["gateway"]:
        raise ValueError("parameter gateway is required (tcp://HOST:PORT or serial:///dev/…)")
    if not p["partition_dir"]:
        raise ValueError("parameter partition_dir is required (a `cats export` directory)")
    if p["expected_partition_hash"]:
        p["expected_partition_hash"] = hex_hash(
            p["expected_partition_hash"], "expected_partition_hash"
        )
    if not (p["timeout_s"] > 0 and p["status_period_s"] > 0 and p["queue_depth"] >= 1):
        raise ValueError("timeout_s and status_period_s must be > 0, queue_depth >= 1")
    return BridgeParams(**p)
