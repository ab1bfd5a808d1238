"""One inference request on its way from a ROS callback to the gateway link and back.

ROS callbacks are coroutines: they await rclpy futures that the gateway link's thread
resolves (then wakes the executor), so no executor thread waits on the gateway."""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Any

from rclpy.executors import Executor
from rclpy.task import Future

CANCELLED = "cancelled"


@dataclass
class Outcome:
    """What the service response and the action result carry."""

    success: bool
    message: str
    output: list[float] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)
    degraded: bool = False
    missing_nodes: list[int] = field(default_factory=list)
    missing_fraction: float = 0.0
    frames_lost: int = 0
    air_bytes: int = 0
    modelled_latency_s: float = 0.0
    cancelled: bool = False

    def fill(self, msg: Any) -> Any:
        """Copy into an Infer response / result message; returns it."""
        msg.output = [float(v) for v in self.output]
        msg.shape = [int(s) for s in self.shape]
        msg.success = self.success
        msg.message = self.message
        msg.degraded = self.degraded
        msg.missing_nodes = [int(n) for n in self.missing_nodes]
        msg.missing_fraction = float(self.missing_fraction)
        msg.frames_lost = int(self.frames_lost)
        msg.air_bytes = int(self.air_bytes)
        msg.modelled_latency_s = float(self.modelled_latency_s)
        return msg


class Job:
    """Thread-safe link between one request's coroutine and the gateway link.

    With ``track_sent``, ``sent`` resolves when the request goes to the gateway (True) or ends
    before that (False); ``done`` resolves with the link's concurrent future, or CANCELLED.
    Each resolution wakes the executor, which then resumes the waiting coroutine."""

    def __init__(self, executor: Executor, track_sent: bool = False) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self.track_sent = track_sent  # only an action reports it (feedback "running")
        self.sent: Future = Future(executor=executor)
        self.done: Future = Future(executor=executor)
        self.link_future: concurrent.futures.Future | None = None

    def attach(self, link_future: concurrent.futures.Future) -> None:
        with self._lock:
            self.link_future = link_future
            cancelled = self.done.done()
        if cancelled:  # cancel() came first: withdraw it at once
            link_future.cancel()
        link_future.add_done_callback(self._finished)  # runs now if already done

    def mark_sent(self) -> None:  # gateway link thread
        if self.track_sent:
            self._resolve(self.sent, True)

    def cancel(self) -> None:
        """Withdraw the request if it still waits; answer its caller now either way (a
        result the gateway sends later is dropped)."""
        self._resolve(self.done, CANCELLED)
        with self._lock:
            link_future = self.link_future
        if link_future is not None:
            link_future.cancel()
        self._resolve(self.sent, False)

    def _finished(self, link_future: concurrent.futures.Future) -> None:
        if self.track_sent:
            self._resolve(self.sent, False)
        self._resolve(self.done, link_future)

    def _resolve(self, fut: Future, value: Any) -> None:
        with self._lock:
            if fut.done():
                return
            fut.set_result(value)
        self._executor.wake()
