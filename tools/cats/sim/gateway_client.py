"""A client of the gateway protocol (proto/cats.proto: GatewayMessage in the framed byte stream),
the same over a socket (the simulated gateway) and a serial port (a gateway board on USB-CDC or
a UART).

Endpoints:

* ``tcp://127.0.0.1:PORT``
* ``serial:///dev/ttyUSB0?baud=115200`` (pyserial; ``baud`` defaults to 115200)

``GatewayClient.infer(input)`` sends an InferRequest and returns the InferResult (a protobuf
message); ``status()`` sends a StatusRequest and returns the SwarmStatus. One request is in
flight at a time; results that arrive for other request ids are kept until asked for.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from cats.wire import stream
from cats.wire.proto import pb

DEFAULT_BAUD = 115200


class GatewayError(RuntimeError):
    """The gateway did not answer in time, or the connection failed."""


class _SocketLink:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 1e-3))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return b""
        if not data:
            raise GatewayError("the gateway closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class _SerialLink:
    def __init__(self, device: str, baud: int, timeout: float) -> None:
        import serial  # pyserial

        self.port = serial.Serial(device, baudrate=baud, timeout=timeout)

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, timeout: float) -> bytes:
        self.port.timeout = max(timeout, 1e-3)
        first = self.port.read(1)
        if not first:
            return b""
        return first + self.port.read(self.port.in_waiting)

    def close(self) -> None:
        self.port.close()


def open_link(endpoint: str, timeout: float = 5.0) -> _SocketLink | _SerialLink:
    url = urlparse(endpoint)
    if url.scheme == "tcp":
        if not url.hostname or not url.port:
            raise ValueError(f"tcp endpoint needs host and port: {endpoint!r}")
        return _SocketLink(url.hostname, url.port, timeout)
    if url.scheme == "serial":
        device = url.path or url.netloc
        if not device:
            raise ValueError(f"serial endpoint needs a device: {endpoint!r}")
        baud = int(parse_qs(url.query).get("baud", [DEFAULT_BAUD])[0])
        return _SerialLink(device, baud, timeout)
    raise ValueError(f"endpoint must be tcp://HOST:PORT or serial:///dev/...?baud=N: {endpoint!r}")


class GatewayClient:
    """Synchronous client; use as a context manager."""

    def __init__(self, endpoint: str, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._link = open_link(endpoint, timeout=min(timeout, 10.0))
        self._decoder = stream.Decoder(stream.MAX_PAYLOAD)
        self._results: dict[int, Any] = {}
        self._status: list[Any] = []
        self._ids = itertools.count(1)
        self._pb = pb()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._link.close()

    # -- requests ----------------------------------------------------------------------------
    def send(self, msg: Any) -> None:
        self._link.write(stream.encode(stream.GATEWAY, msg.SerializeToString()))

    def submit(
        self,
        inp: np.ndarray | bytes,
        *,
        request_id: int | None = None,
        partition_hash: bytes = b"",
        deadline_ms: int = 0,
    ) -> int:
        """Send an InferRequest (int8 input, tokens x patch); returns its request id."""
        rid = next(self._ids) if request_id is None else int(request_id)
        data = inp if isinstance(inp, bytes) else np.ascontiguousarray(inp, np.int8).tobytes()
        req = self._pb.InferRequest(
            request_id=rid, partition_hash=partition_hash, input=data, deadline_ms=deadline_ms
        )
        self.send(self._pb.GatewayMessage(infer_request=req))
        return rid

    def result(self, request_id: int, timeout: float | None = None) -> Any:
        """The InferResult of `request_id` (waits for it)."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while request_id not in self._results:
            self._pump(end, f"InferResult {request_id}")
        return self._results.pop(request_id)

    def infer(
        self,
        inp: np.ndarray | bytes,
        *,
        request_id: int | None = None,
        partition_hash: bytes = b"",
        deadline_ms: int = 0,
        timeout: float | None = None,
    ) -> Any:
        rid = self.submit(
            inp, request_id=request_id, partition_hash=partition_hash, deadline_ms=deadline_ms
        )
        return self.result(rid, timeout)

    def status(self, timeout: float | None = None) -> Any:
        """A SwarmStatus."""
        self._status.clear()
        self.send(self._pb.GatewayMessage(status_request=self._pb.StatusRequest()))
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._status:
            self._pump(end, "SwarmStatus")
        return self._status.pop(0)

    # -- receiving ---------------------------------------------------------------------------
    def _pump(self, end: float, what: str) -> None:
        left = end - time.monotonic()
        if left <= 0:
            raise GatewayError(f"no {what} from {self.endpoint} in time")
        data = self._link.read(min(left, 0.5))
        for kind, payload in self._decoder.feed(data):
            if kind != stream.GATEWAY:
                continue
            try:
                msg = self._pb.GatewayMessage.FromString(payload)
            except Exception:  # protobuf DecodeError: ignore a broken message
                continue
            which = msg.WhichOneof("msg")
            if which == "infer_result":
                self._results[int(msg.infer_result.request_id)] = msg.infer_result
            elif which == "swarm_status":
                self._status.append(msg.swarm_status)


def wait_for_gateway(endpoint: str, timeout: float = 10.0) -> None:
    """Until the endpoint accepts a connection (tcp) or exists (serial)."""
    end = time.monotonic() + timeout
    while True:
        try:
            open_link(endpoint, timeout=1.0).close()
            return
        except (OSError, GatewayError):
            if time.monotonic() > end:
                raise GatewayError(f"gateway {endpoint} not reachable") from None
            time.sleep(0.05)
