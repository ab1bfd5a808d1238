"""The ``cats_bridge`` node: a robot's ROS 2 door to the CATS swarm.

Serves ``~/infer`` as a service (``cats_interfaces/srv/Infer``) and as an action
(``cats_interfaces/action/Infer``: feedback, cancel), publishes ``~/status``
(``cats_interfaces/msg/SwarmStatus``) and ``/diagnostics`` every ``status_period_s``.

Parameters (read only):

* ``gateway``: ``tcp://127.0.0.1:PORT`` (simulated gateway) or
  ``serial:///dev/ttyACM0?baud=115200`` (gateway board)
* ``partition_dir``: the ``cats export`` directory (partition.json: hash, model shape, scales)
* ``expected_partition_hash``: hex; default partition.json's. Any other hash at the gateway
  makes the bridge refuse every request, loudly.
* ``timeout_s``: per request, queued and in flight (default 30)
* ``queue_depth``: requests accepted at once; more are refused (default 16)
* ``status_period_s``: status poll and publication period (default 1.0)

Every request is validated (shape [context] or [1, context], size, finite values), RevIN
normalised and int8 quantised here (``cats_bridge.codec``); the int8 output comes back
dequantised and de-normalised. Callbacks are coroutines in a reentrant group; the gateway
stream lives in its own thread (``cats_bridge.gateway_link``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from cats_interfaces.action import Infer as InferAction
from cats_interfaces.msg import SwarmStatus
from cats_interfaces.srv import Infer
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cats_bridge import codec, parameters
from cats_bridge.gateway_link import GatewayLink
from cats_bridge.partition_info import PartitionInfo
from cats_bridge.request import CANCELLED, Job, Outcome
from cats_bridge.status_messages import BridgeState, diagnostics, swarm_status

NODE_NAME = "cats_bridge"
# Requests DDS keeps for the executor to take (service and action goal/cancel/result
# services). A burst larger than queue_depth is answered "queue full" at once by the bridge;
# the middleware must hold the whole burst until then, or it drops requests silently
# (the default QoS keeps 10: 1-24 of 50 and 122-378 of 500 calls were never answered).
# Clients need a response queue as deep (README: the client's QoS).
REQUEST_QOS_DEPTH = 1000
TOKEN_ENV = "CATS_SIM_TOKEN"  # the run's admission token of a simulated gateway (hex)


def request_qos(depth: int = REQUEST_QOS_DEPTH) -> QoSProfile:
    """Reliable, volatile, keep the last `depth`: a burst of `depth` calls is answered."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


class CatsBridge(Node):
    def __init__(self, *, gateway_token: bytes | None = None, **kwargs: Any) -> None:
        """gateway_token: the admission token of a simulated gateway (`cats serve` passes
        its run's); default: CATS_SIM_TOKEN from the environment (hex), else none. Not a
        ROS parameter: parameters can be read by anyone on the ROS domain."""
        super().__init__(NODE_NAME, **kwargs)
        if gateway_token is None:
            gateway_token = bytes.fromhex(os.environ.get(TOKEN_ENV, ""))
        p = parameters.declare(self)
        self.info = PartitionInfo.from_dir(p.partition_dir)
        self.expected_hash = p.expected_partition_hash or self.info.partition_hash
        self._config_error = ""
        if self.expected_hash != self.info.partition_hash:
            self._config_error = (
                f"misconfigured: expected_partition_hash {self.expected_hash[:16]}… is not "
                f"the hash of partition_dir {p.partition_dir} ({self.info.partition_hash[:16]}…)"
            )
            self.get_logger().error(self._config_error + "; refusing every request")
        self.timeout_s = p.timeout_s
        self.queue_depth = p.queue_depth
        self.status_period_s = p.status_period_s

        self._lock = threading.Lock()
        self._active = 0
        self._ok = 0
        self._failed = 0
        self._jobs: dict[bytes, Job] = {}
        self._cancel_requested: set[bytes] = set()
        self._logged_hash = ""

        self.link = GatewayLink(
            p.gateway,
            token=gateway_token,
            status_period_s=self.status_period_s,
            on_status=self._on_gateway_status,
            on_state=self._on_gateway_state,
        )
        requests = ReentrantCallbackGroup()
        qos = request_qos(max(REQUEST_QOS_DEPTH, 4 * self.queue_depth))
        self.create_service(
            Infer, "~/infer", self._serve_infer, qos_profile=qos, callback_group=requests
        )
        self._action = ActionServer(
            self,
            InferAction,
            "~/infer",
            execute_callback=self._execute_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=self._cancel_goal,
            callback_group=requests,
            goal_service_qos_profile=qos,
            result_service_qos_profile=qos,
            cancel_service_qos_profile=qos,
        )
        self._status_pub = self.create_publisher(SwarmStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            self.status_period_s,
            self._publish_status,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.link.start()
        self.get_logger().info(
            f"serving {self.get_fully_qualified_name()}/infer (service + action) for partition "
            f"{self.expected_hash[:16]}… ({self.info.nodes} nodes, input [{self.info.context}] "
            f"float32 -> output [{self.info.outputs}]) via gateway {p.gateway}"
        )

    def destroy_node(self) -> None:
        # also called (by the context's shutdown) on a node whose __init__ failed
        link: GatewayLink | None = getattr(self, "link", None)
        if link is not None:
            link.stop()
        action: ActionServer | None = getattr(self, "_action", None)
        if action is not None:
            action.destroy()
        super().destroy_node()

    # -- gateway link callbacks (its thread) -------------------------------------------------
    def _on_gateway_state(self, connected: bool, text: str) -> None:
        if connected:
            self.get_logger().info(f"gateway: {text}")
        else:
            self.get_logger().warning(f"gateway: {text}; reconnecting")

    def _on_gateway_status(self, status: Any) -> None:
        got = bytes(status.partition_hash).hex()
        if got == self._logged_hash:
            return
        self._logged_hash = got
        if got != self.expected_hash:
            self.get_logger().error(
                f"PARTITION HASH MISMATCH: the gateway runs partition {got or '(none)'}, this "
                f"bridge expects {self.expected_hash}; every request is refused until they match"
            )
        else:
            self.get_logger().info(f"gateway runs the expected partition {got[:16]}…")

    # -- admission ---------------------------------------------------------------------------
    def refusal(self) -> str:
        """Why every request is refused right now ("" when requests are served)."""
        if self._config_error:
            return self._config_error
        status = self.link.status
        if not self.link.ready or status is None:
            return self.link.unavailable_reason()
        got = bytes(status.partition_hash).hex()
        if got != self.expected_hash:
            return (
                f"partition hash mismatch: the gateway runs {got[:16]}…, this bridge expects "
                f"{self.expected_hash[:16]}… (expected_partition_hash / partition_dir); "
                "refusing every request"
            )
        return ""

    def _check_request_hash(self, text: str) -> str:
        if not text:
            return ""
        try:
            want = parameters.hex_hash(text, "partition_hash")
        except ValueError as exc:
            return f"bad request: {exc}"
        if want != self.expected_hash:
            return (
                f"partition hash mismatch: the request expects {want[:16]}…, the swarm runs "
                f"{self.expected_hash[:16]}…"
            )
        return ""

    def _take_slot(self) -> bool:
        with self._lock:
            if self._active >= self.queue_depth:
                return False
            self._active += 1
            return True

    def _count(self, outcome: Outcome) -> Outcome:
        with self._lock:
            if outcome.success:
                self._ok += 1
            else:
                self._failed += 1
        return outcome

    # -- one inference -----------------------------------------------------------------------
    async def _infer(
        self, values: Any, shape: Any, partition_hash: str, goal: ServerGoalHandle | None = None
    ) -> Outcome:
        why = self.refusal()
        if why:
            self.get_logger().error(f"request refused: {why}", throttle_duration_sec=5.0)
            return self._count(Outcome(False, why))
        why = self._check_request_hash(partition_hash)
        if why:
            return self._count(Outcome(False, why))
        try:
            x = codec.validate(values, shape, self.info)
        except codec.RequestError as exc:
            return self._count(Outcome(False, f"bad request: {exc}"))
        if not self._take_slot():
            return self._count(Outcome(False, (
                f"queue full: {self.queue_depth} requests already pending "
                f"(queue_depth = {self.queue_depth}); try again later")))  # fmt: skip
        try:
            return self._count(await self._run(x, list(shape), goal))
        finally:
            with self._lock:
                self._active -= 1

    async def _run(self, x: np.ndarray, shape: list[int], goal: ServerGoalHandle | None) -> Outcome:
        data, mu, sd = codec.encode_input(x, self.info)
        job = Job(self.executor, track_sent=goal is not None)
        key = bytes(goal.goal_id.uuid) if goal is not None else b""
        if goal is not None:
            with self._lock:
                self._jobs[key] = job
                cancel_now = key in self._cancel_requested
            if cancel_now:
                job.cancel()  # before it was queued: attach() withdraws it at once
            self._feedback(goal, "queued")
        try:
            job.attach(self.link.submit(
                data, partition_hash=bytes.fromhex(self.expected_hash),
                timeout_s=self.timeout_s, on_sent=job.mark_sent))  # fmt: skip
            if goal is not None and await job.sent and not job.done.done():
                self._feedback(goal, "running")
            got = await job.done
        finally:
            if goal is not None:
                with self._lock:
                    self._jobs.pop(key, None)
                    self._cancel_requested.discard(key)
        if got is CANCELLED or got.cancelled():
            return Outcome(False, "cancelled", cancelled=True)
        exc = got.exception()
        if exc is not None:
            return Outcome(False, str(exc))
        return self._outcome(got.result(), shape, mu, sd, goal)

    def _outcome(
        self, res: Any, shape: list[int], mu: float, sd: float, goal: ServerGoalHandle | None
    ) -> Outcome:
        out = Outcome(
            success=False,
            message="",
            degraded=bool(res.degraded),
            missing_nodes=[int(n) for n in res.missing_nodes],
            missing_fraction=float(res.missing_fraction),
            frames_lost=int(res.frames_lost),
            air_bytes=int(res.air_bytes),
            modelled_latency_s=float(res.modelled_latency_s),
        )
        if goal is not None:
            self._feedback(goal, "done", frames_lost=out.frames_lost, done=True)
        if res.status != 0:
            out.message = f"gateway error {res.status}: {res.message}"
            return out
        if len(res.output) != self.info.outputs:
            out.message = (
                f"gateway returned {len(res.output)} outputs, the partition has "
                f"{self.info.outputs}: is the gateway running another partition?"
            )
            return out
        scale = float(res.output_scale) or self.info.output_scale
        try:
            out.output = codec.decode_output(res.output, scale, mu, sd, self.info).tolist()
        except codec.OutputError as exc:
            out.message = f"output error: {exc}"
            return out
        out.shape = codec.output_shape(shape, self.info)
        out.success = True
        out.message = "ok"
        if out.missing_nodes:
            out.message = (
                f"degraded: nodes {out.missing_nodes} gave no output slice (zeros in its place); "
                f"{100 * out.missing_fraction:.0f} % of expected columns missing"
            )
        elif out.degraded:
            out.message = (
                f"degraded: {100 * out.missing_fraction:.1f} % of expected columns missing "
                f"({out.frames_lost} frames lost)"
            )
        return out

    def _feedback(
        self, goal: ServerGoalHandle, stage: str, frames_lost: int = 0, done: bool = False
    ) -> None:
        fb = InferAction.Feedback(
            exchanges_done=self.info.exchanges if done else 0,
            exchanges_total=self.info.exchanges,
            frames_lost_so_far=frames_lost,
            stage=stage,
        )
        goal.publish_feedback(fb)

    # -- ROS callbacks -----------------------------------------------------------------------
    async def _serve_infer(self, request: Infer.Request, response: Infer.Response) -> Any:
        outcome = await self._infer(request.input, request.shape, request.partition_hash)
        return outcome.fill(response)

    async def _execute_goal(self, goal: ServerGoalHandle) -> Any:
        req = goal.request
        outcome = await self._infer(req.input, req.shape, req.partition_hash, goal)
        with self._lock:
            self._cancel_requested.discard(bytes(goal.goal_id.uuid))
        if outcome.cancelled:
            goal.canceled()
        elif outcome.success:
            goal.succeed()
        else:
            goal.abort()
        return outcome.fill(InferAction.Result())

    def _cancel_goal(self, goal: ServerGoalHandle) -> CancelResponse:
        key = bytes(goal.goal_id.uuid)
        with self._lock:
            self._cancel_requested.add(key)
            job = self._jobs.get(key)
        if job is not None:
            job.cancel()
        return CancelResponse.ACCEPT

    def _publish_status(self) -> None:
        with self._lock:
            state = BridgeState(
                gateway=self.link.endpoint,
                connected=self.link.ready,
                last_error=self.link.last_error,
                expected_hash=self.expected_hash,
                refusal=self.refusal(),
                requests_ok=self._ok,
                requests_failed=self._failed,
                queue_length=self._active,
                queue_depth=self.queue_depth,
            )
        stamp = self.get_clock().now().to_msg()
        msg = swarm_status(stamp, self.link.status, self.info, state)
        self._status_pub.publish(msg)
        self._diag_pub.publish(diagnostics(stamp, msg, state))
