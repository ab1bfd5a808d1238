"""The bridge's connection to the swarm gateway, in a thread of its own.

One asyncio event loop in a dedicated thread owns the gateway stream (``tcp://HOST:PORT`` to
the simulated gateway, ``serial:///dev/ttyACM0?baud=115200`` to a gateway board): protobuf
GatewayMessages in the framed byte stream of proto/cats.proto (``cats.wire.stream``). ROS callbacks
never touch the stream; they call ``submit()``, which returns a ``concurrent.futures.Future``
at once, and are told through it.

* Requests wait in a FIFO; at most ``window`` are in flight at the gateway (the C gateway runs
  one inference at a time and holds CATS_GW_QUEUE = 4 more; the window stays within that).
  Results are matched by request id, so several requests pipeline.
* Every request has a deadline (``timeout_s`` from ``submit()``), queued or in flight.
* While there is no connection, ``submit()`` fails at once with the reason; the loop
  reconnects by itself with exponential backoff, and a connection lost fails the requests in
  flight.
* A StatusRequest goes out on connect and every ``status_period_s``; the latest SwarmStatus is
  ``status``. A gateway that stops answering is treated as gone and reconnected.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from cats.wire import stream
from cats.wire.proto import pb

DEFAULT_WINDOW = 4
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
IDLE_FLUSH_S = 0.2  # give up a partial message held this long (proto: 200 ms)
INFLIGHT_GRACE_S = 10.0  # a timed-out request still holds its window slot this much longer


class GatewayUnavailable(RuntimeError):
    """No connection to the gateway, or it was lost, or the request timed out."""


def check_endpoint(endpoint: str) -> str:
    """The endpoint if it is tcp://HOST:PORT or serial:///dev/...[?baud=N]; else ValueError."""
    url = urlparse(endpoint)
    if url.scheme == "tcp" and url.hostname and url.port:
        return endpoint
    if url.scheme == "serial" and (url.path or url.netloc):
        int(parse_qs(url.query).get("baud", ["115200"])[0])
        return endpoint
    raise ValueError(
        f"gateway endpoint must be tcp://HOST:PORT or serial:///dev/ttyACM0?baud=115200, "
        f"not {endpoint!r}"
    )


class _TcpTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> _TcpTransport:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def read(self) -> bytes:
        """What arrived, or b"" after IDLE_FLUSH_S without bytes."""
        try:
            data = await asyncio.wait_for(self._reader.read(65536), IDLE_FLUSH_S)
        except TimeoutError:
            return b""
        if not data:
            raise GatewayUnavailable("the gateway closed the connection")
        return data

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class _SerialTransport:
    """pyserial (blocking) driven from the loop's default executor."""

    def __init__(self, link: Any) -> None:
        self._link = link

    @classmethod
    async def open(cls, endpoint: str, timeout: float) -> _SerialTransport:
        from cats.sim.gateway_client import open_link

        loop = asyncio.get_running_loop()
        return cls(await loop.run_in_executor(None, open_link, endpoint, timeout))

    async def read(self) -> bytes:
        """What arrived, or b"" after IDLE_FLUSH_S without bytes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._link.read, IDLE_FLUSH_S)

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._link.write, data)

    def close(self) -> None:
        self._link.close()


@dataclass
class _Request:
    request_id: int
    data: bytes
    partition_hash: bytes
    future: concurrent.futures.Future
    on_sent: Callable[[], None] | None
    deadline: float = 0.0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


def _fail(fut: concurrent.futures.Future, exc: BaseException) -> None:
    if not fut.done():
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            fut.set_exception(exc)


class GatewayLink:
    """See the module docstring. ``on_status(SwarmStatus)`` and ``on_state(connected, text)``
    run in the link's thread: keep them short."""

    def __init__(
        self,
        endpoint: str,
        *,
        status_period_s: float = 1.0,
        window: int = DEFAULT_WINDOW,
        on_status: Callable[[Any], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.status_period_s = max(0.05, float(status_period_s))
        self.silence_limit_s = max(5.0, 3.0 * self.status_period_s)
        self.window = max(1, int(window))
        self._on_status = on_status
        self._on_state = on_state
        self._pb = pb()
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._thread_main, name="gateway-link", daemon=True)
        self._queue: collections.deque[_Request] = collections.deque()
        self._inflight: dict[int, _Request] = {}
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task | None = None
        self._transport: _TcpTransport | _SerialTransport | None = None
        self._connected = False
        self._closing = False
        self.status: Any = None  # latest SwarmStatus (pb), None until the first one
        self.status_time = 0.0  # time.monotonic() of it
        self.last_error = "not connected yet"
        self.connects = 0

    # -- public, any thread ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Connected, and the gateway's SwarmStatus of this connection is in."""
        return self._connected and self.status is not None

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def unavailable_reason(self) -> str:
        if self._connected:
            return f"gateway {self.endpoint} connected, waiting for its first SwarmStatus"
        return (
            f"gateway {self.endpoint} is not connected ({self.last_error}); "
            "the bridge keeps reconnecting"
        )

    def start(self) -> GatewayLink:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(timeout)

    def submit(
        self,
        data: bytes,
        *,
        partition_hash: bytes = b"",
        timeout_s: float = 30.0,
        on_sent: Callable[[], None] | None = None,
    ) -> concurrent.futures.Future:
        """Queue one InferRequest (int8 input bytes); the future gets the InferResult (pb) or
        GatewayUnavailable. Cancelling the future before it is sent withdraws the request."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._closing:
            _fail(fut, GatewayUnavailable("the bridge is shutting down"))
            return fut
        if not self._connected:
            _fail(fut, GatewayUnavailable(self.unavailable_reason()))
            return fut
        req = _Request(next(self._ids), bytes(data), bytes(partition_hash), fut, on_sent)
        self._loop.call_soon_threadsafe(self._enqueue, req, float(timeout_s))
        return fut

    # -- the loop ----------------------------------------------------------------------------
    def _thread_main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._main = self._loop.create_task(self._run())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._main)
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    def _shutdown(self) -> None:
        self._closing = True
        self._fail_all(GatewayUnavailable("the bridge is shutting down"))
        if self._main is not None:
            self._main.cancel()

    def _set_state(self, connected: bool, text: str) -> None:
        self._connected = connected
        if not connected:
            self.last_error = text
        if self._on_state is not None:
            self._on_state(connected, text)

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._closing:
            try:
                self._transport = await self._open()
            except Exception as exc:  # OSError, TimeoutError, serial.SerialException, ...
                self.last_error = f"connect failed: {exc or type(exc).__name__}"
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_MIN_S
            self.connects += 1
            self.status = None
            self._set_state(True, f"connected to {self.endpoint}")
            reason = "connection closed"
            try:
                await self._session()
            except Exception as exc:  # the connection broke: reconnect
                reason = str(exc) or type(exc).__name__
            finally:
                self._transport.close()
                self._transport = None
            if self._closing:
                break
            self._set_state(False, f"connection lost: {reason}")
            self._fail_all(
                GatewayUnavailable(
                    f"connection to gateway {self.endpoint} lost "
                    f"({reason}); the bridge is reconnecting"
                )
            )
            await asyncio.sleep(BACKOFF_MIN_S)

    async def _open(self) -> _TcpTransport | _SerialTransport:
        url = urlparse(self.endpoint)
        if url.scheme == "tcp":
            assert url.hostname and url.port
            return await _TcpTransport.open(url.hostname, url.port, timeout=5.0)
        return await _SerialTransport.open(self.endpoint, timeout=5.0)

    async def _session(self) -> None:
        tasks = [
            asyncio.ensure_future(self._reader()),
            asyncio.ensure_future(self._sender()),
            asyncio.ensure_future(self._poller()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # re-raise what ended the session
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, msg: Any) -> None:
        assert self._transport is not None
        await self._transport.write(stream.encode(stream.GATEWAY, msg.SerializeToString()))

    async def _reader(self) -> None:
        assert self._transport is not None
        decoder = stream.Decoder(stream.MAX_PAYLOAD)
        while True:
            data = await self._transport.read()
            messages = decoder.feed(data) if data else decoder.flush()
            for kind, payload in messages:
                if kind == stream.GATEWAY:
                    self._dispatch(payload)

    def _dispatch(self, payload: bytes) -> None:
        try:
            msg = self._pb.GatewayMessage.FromString(payload)
        except Exception:  # protobuf DecodeError: a broken message is dropped
            return
        which = msg.WhichOneof("msg")
        if which == "swarm_status":
            self.status = msg.swarm_status
            self.status_time = time.monotonic()
            if self._on_status is not None:
                self._on_status(msg.swarm_status)
        elif which == "infer_result":
            req = self._inflight.pop(int(msg.infer_result.request_id), None)
            if req is not None:
                for t in req.timers:
                    t.cancel()
                if not req.future.done():
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        req.future.set_result(msg.infer_result)
                self._kick()

    async def _sender(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and len(self._inflight) < self.window:
                req = self._queue.popleft()
                if req.future.done() or not req.future.set_running_or_notify_cancel():
                    continue
                infer = self._pb.InferRequest(
                    request_id=req.request_id, partition_hash=req.partition_hash, input=req.data
                )
                self._inflight[req.request_id] = req
                await self._write(self._pb.GatewayMessage(infer_request=infer))
                if req.on_sent is not None:
                    req.on_sent()

    async def _poller(self) -> None:
        request = self._pb.GatewayMessage(status_request=self._pb.StatusRequest())
        while True:
            asked = time.monotonic()
            await self._write(request)
            await asyncio.sleep(self.status_period_s)
            while self.status_time < asked:
                if time.monotonic() - asked > self.silence_limit_s:
                    raise GatewayUnavailable(
                        f"no SwarmStatus from the gateway for {self.silence_limit_s:.0f} s"
                    )
                await asyncio.sleep(min(0.1, self.status_period_s))

    # -- requests ----------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _enqueue(self, req: _Request, timeout_s: float) -> None:
        if not self._connected:
            _fail(req.future, GatewayUnavailable(self.unavailable_reason()))
            return
        req.timers.append(self._loop.call_later(timeout_s, self._expire, req, timeout_s))
        self._queue.append(req)
        self._kick()

    def _expire(self, req: _Request, timeout_s: float) -> None:
        where = "in flight at" if req.request_id in self._inflight else "queued for"
        _fail(
            req.future,
            GatewayUnavailable(
                f"no result within timeout_s = {timeout_s:g} s (request {where} the gateway)"
            ),
        )
        if req.request_id in self._inflight:  # keep its window slot until the gateway answers
            req.timers.append(
                self._loop.call_later(INFLIGHT_GRACE_S, self._drop_inflight, req.request_id)
            )

    def _drop_inflight(self, request_id: int) -> None:
        if self._inflight.pop(request_id, None) is not None:
            self._kick()

    def _fail_all(self, exc: BaseException) -> None:
        for req in [*self._inflight.values(), *self._queue]:
            for t in req.timers:
                t.cancel()
            _fail(req.future, exc)
        self._inflight.clear()
        self._queue.clear()
