"""The gateway's SwarmStatus (protobuf) as ROS messages: ``cats_interfaces/SwarmStatus`` on
``/cats_bridge/status`` and ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Duration, Time
from cats_interfaces.msg import NodeStatus, SwarmStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from cats_bridge.partition_info import PartitionInfo

COUNTERS = (
    "frames_sent", "frames_received", "columns_received", "columns_lost", "rejected_malformed",
    "rejected_partition", "rejected_stale", "rejected_future", "rejected_column",
    "rejected_self", "rejected_sender", "duplicates", "exchanges_timed_out", "compute_us",
)  # fmt: skip


@dataclass
class BridgeState:
    """What the bridge adds to the gateway's status."""

    gateway: str
    connected: bool
    last_error: str
    expected_hash: str
    refusal: str  # why every request is refused now ("" = none)
    requests_ok: int
    requests_failed: int
    queue_length: int
    queue_depth: int


def node_status(node: Any) -> NodeStatus:
    """One proto NodeStatus as the ROS message."""
    ms = int(node.last_seen_ms)
    msg = NodeStatus(
        node=int(node.node),
        alive=bool(node.alive),
        responded=bool(node.responded),
        link_quality=float(node.link_quality),
        last_seen=Duration(sec=ms // 1000, nanosec=(ms % 1000) * 1_000_000),
        partition_hash=bytes(node.partition_hash).hex(),
    )
    for name in COUNTERS:
        setattr(msg, name, int(getattr(node.counters, name)))
    return msg


def swarm_status(stamp: Time, status: Any, info: PartitionInfo, bridge: BridgeState) -> SwarmStatus:
    """The SwarmStatus message; ``status`` is the gateway's latest (pb) or None."""
    msg = SwarmStatus()
    msg.header.stamp = stamp
    msg.header.frame_id = ""
    msg.gateway = bridge.gateway
    msg.connected = bridge.connected
    msg.expected_partition_hash = bridge.expected_hash
    msg.input_shape = [info.context]
    msg.input_dtype = "float32"
    msg.output_shape = [info.outputs]
    msg.output_dtype = "float32"
    msg.wire_dtype = "int8"
    msg.bridge_requests_ok = bridge.requests_ok
    msg.bridge_requests_failed = bridge.requests_failed
    msg.bridge_queue_length = bridge.queue_length
    msg.bridge_queue_depth = bridge.queue_depth
    if status is not None:
        msg.partition_hash = bytes(status.partition_hash).hex()
        msg.nodes = int(status.nodes)
        msg.node_status = [node_status(n) for n in status.node_status]
        msg.inferences_served = int(status.inferences)
    else:
        msg.nodes = info.nodes
    msg.hash_ok = bool(status is not None and msg.partition_hash == bridge.expected_hash)
    return msg


def _kv(**values: Any) -> list[KeyValue]:
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def diagnostics(stamp: Time, status: SwarmStatus, bridge: BridgeState) -> DiagnosticArray:
    """One DiagnosticStatus for the bridge and its gateway, one per node."""
    if bridge.refusal:
        level, text = DiagnosticStatus.ERROR, bridge.refusal
    elif status.node_status and not all(n.alive for n in status.node_status):
        level, text = DiagnosticStatus.WARN, "some nodes are not alive"
    else:
        level, text = DiagnosticStatus.OK, "serving"
    alive = sum(n.alive for n in status.node_status)
    gateway = DiagnosticStatus(
        level=level,
        name="cats_bridge: gateway",
        message=text,
        hardware_id=bridge.gateway,
        values=_kv(
            connected=bridge.connected,
            last_error=bridge.last_error if not bridge.connected else "",
            partition_hash=status.partition_hash,
            expected_partition_hash=bridge.expected_hash,
            nodes=status.nodes,
            nodes_alive=alive,
            inferences_served=status.inferences_served,
            requests_ok=bridge.requests_ok,
            requests_failed=bridge.requests_failed,
            queue=f"{bridge.queue_length}/{bridge.queue_depth}",
        ),
    )
    out = DiagnosticArray(status=[gateway])
    out.header.stamp = stamp
    for n in status.node_status:
        ok = n.alive and n.link_quality >= 0.999
        out.status.append(
            DiagnosticStatus(
                level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
                name=f"cats_bridge: node {n.node}",
                message="ok" if ok else ("not alive" if not n.alive else "losing columns"),
                hardware_id=f"{bridge.gateway}#node{n.node}",
                values=_kv(
                    alive=n.alive,
                    link_quality=f"{n.link_quality:.3f}",
                    last_seen_s=f"{n.last_seen.sec + n.last_seen.nanosec / 1e9:.3f}",
                    columns_lost=n.columns_lost,
                    frames_received=n.frames_received,
                    exchanges_timed_out=n.exchanges_timed_out,
                ),
            )
        )
    return out
