"""An attacker on the simulated air (``cats sim --attack MODE``): a station without the swarm
key that joins the radio medium as an injector (``SimHello.injector``, cats.sim.medium), hears
every frame and transmits with whatever link source it claims.

Modes (the victim is node min(3, D - 1); every frame sent is counted in ``sent``):

``forge``                for each ColumnFrame of the victim, the same header with every
                         activation 127 and a MIC it cannot compute (random); for each of the
                         victim's OutputFrames one with every output 100 and status 0, and one
                         with status -1 (would mark the node failed); for each first
                         InputFrame of an inference a forged one of the next inference id.
``replay``               records every frame of inference k; when inference k + 1 starts, sends
                         them again: verbatim and with the inference id rewritten to k + 1 (the
                         ColumnFrames' low 16 bits), the MIC kept; ColumnFrames of exchange e
                         when exchange e of k + 1 is on the air, OutputFrames and InputFrames
                         when k + 1's input is.
``tamper``               every frame of the victim, every OutputFrame and InputFrame, sent again
                         at once with one payload bit flipped (claimed source unchanged).
``impersonate-gateway``  claims the gateway: for each first InputFrame of an inference, a forged
                         InputFrame set of the next id (start) and the previous inference's
                         InputFrames with the current id (cancel / restart), MIC kept.

The receivers' counters (NodeCounters and the gateway's) tell what they accepted; the attacker
only counts what it sent. No key is involved anywhere here.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections import defaultdict
from typing import Any

from cats.wire import stream
from cats.wire.auth import AIR_COLUMN, AIR_INPUT, AIR_OUTPUT
from cats.wire.proto import pb

MODES = ("forge", "replay", "tamper", "impersonate-gateway")
FORGED_COLUMN_VALUE = 127
FORGED_OUTPUT_VALUE = 100


class Attacker:
    """The injector station: a thread on a TCP connection to the medium."""

    def __init__(
        self,
        mode: str,
        medium: str,
        nodes: int,
        tag: int,
        mtu: int,
        mic: int = 8,
        token: bytes = b"",
    ) -> None:
        """`token`: the run's admission token of the medium's control plane (cats.sim.swarm).
        The attacker models a station in radio range, not a process on the simulator's
        machine, so the simulation admits it to the medium; it holds no swarm key."""
        if mode not in MODES:
            raise ValueError(f"attack mode {mode!r}; one of {', '.join(MODES)}")
        self.mode, self.nodes, self.mic = mode, nodes, mic
        self.victim = min(3, nodes - 1)
        self.gateway = nodes
        self.sent: defaultdict[str, int] = defaultdict(int)
        self.heard = 0
        host, port = medium.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        claim = -1 if mode == "impersonate-gateway" else self.victim
        hello = pb().SimHello(
            node_id=claim, nodes=nodes, partition_tag=tag, mtu=mtu, injector=True, token=token
        )
        self.sock.sendall(stream.encode(stream.HELLO, hello.SerializeToString()))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seen_inputs: set[int] = set()
        self._frames: dict[int, list[tuple[int, bytes]]] = defaultdict(list)  # by inference
        self._inputs: dict[int, list[bytes]] = defaultdict(list)
        self._exchanges_seen: set[tuple[int, int]] = set()
        self._current = -1
        self._thread = threading.Thread(target=self._run, name="cats-attacker", daemon=True)
        self._thread.start()

    # -- I/O ---------------------------------------------------------------------------------
    def _run(self) -> None:
        dec = stream.Decoder(stream.SIM_MAX_PAYLOAD)
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for kind, payload in dec.feed(data):
                if kind == stream.AIR and len(payload) >= 2:
                    self.heard += 1
                    try:
                        self.on_frame(payload[0], payload[1:])
                    except OSError:
                        return

    def send(self, src: int, air_type: int, message: bytes, mic: bytes, what: str) -> None:
        frame = bytes([src & 0xFF, air_type]) + message + mic
        with self._lock:
            self.sock.sendall(stream.encode(stream.AIR, frame))
        self.sent[what] += 1

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return {
            "mode": self.mode,
            "victim": "gateway" if self.mode == "impersonate-gateway" else self.victim,
            "frames_heard": self.heard,
            "attack_frames_sent": sum(self.sent.values()),
            "attack_frames_by_kind": dict(self.sent),
        }

    # -- reacting to the air -----------------------------------------------------------------
    def _split(self, air: bytes) -> tuple[int, bytes, bytes]:
        return air[0], air[1 : len(air) - self.mic], air[len(air) - self.mic :]

    def _fake_mic(self) -> bytes:
        return secrets.token_bytes(self.mic)

    def on_frame(self, src: int, air: bytes) -> None:
        if len(air) < 1 + self.mic:
            return
        kind, msg, mic = self._split(air)
        cls = {AIR_COLUMN: "ColumnFrame", AIR_INPUT: "InputFrame", AIR_OUTPUT: "OutputFrame"}
        if kind not in cls:
            return
        try:
            m = getattr(pb(), cls[kind]).FromString(msg)
        except Exception:  # protobuf DecodeError: not a frame we can read
            return
        getattr(self, "_" + self.mode.replace("-", "_"))(src, kind, m, msg, mic)

    def _new_input(self, kind: int, m: Any) -> bool:
        if kind != AIR_INPUT or m.inference_id in self._seen_inputs:
            return False
        self._seen_inputs.add(m.inference_id)
        return True

    def _forge(self, src: int, kind: int, m: Any, msg: bytes, mic: bytes) -> None:
        if kind == AIR_COLUMN and src == self.victim:
            m.payload = bytes([FORGED_COLUMN_VALUE]) * len(m.payload)
            self.send(src, kind, m.SerializeToString(), self._fake_mic(), "column")
        elif kind == AIR_OUTPUT and src == self.victim:
            m.payload = bytes([FORGED_OUTPUT_VALUE]) * len(m.payload)
            m.status = 0
            self.send(src, kind, m.SerializeToString(), self._fake_mic(), "output")
            m.status = -1
            self.send(src, kind, m.SerializeToString(), self._fake_mic(), "output_failed")
        elif self._new_input(kind, m):
            m.inference_id += 1
            m.payload = bytes(len(m.payload))
            self.send(self.gateway, kind, m.SerializeToString(), self._fake_mic(), "input")

    def _replay(self, src: int, kind: int, m: Any, msg: bytes, mic: bytes) -> None:
        iid = m.inference_id
        if self._new_input(kind, m):
            prev, self._current = self._current, iid
            for s, air in self._frames.get(prev, []):
                k, old_msg, old_mic = self._split(air)
                if k == AIR_COLUMN:
                    continue  # sent with their exchange, below
                self.send(s, k, old_msg, old_mic, "verbatim")
                om = getattr(pb(), "OutputFrame" if k == AIR_OUTPUT else "InputFrame").FromString(
                    old_msg
                )
                om.inference_id = iid
                self.send(s, k, om.SerializeToString(), old_mic, "rewritten")
            for old in [k for k in self._frames if k not in (prev, iid)]:
                del self._frames[old]  # keep inference k's ColumnFrames for k + 1's exchanges
        if kind == AIR_COLUMN and (iid, m.exchange) not in self._exchanges_seen:
            self._exchanges_seen.add((iid, m.exchange))
            for s, air in self._frames.get(self._prev_of(iid), []):
                k, old_msg, old_mic = self._split(air)
                if k != AIR_COLUMN:
                    continue
                om = pb().ColumnFrame.FromString(old_msg)
                if om.exchange != m.exchange:
                    continue
                self.send(s, k, old_msg, old_mic, "verbatim")
                om.inference_id = iid & 0xFFFF
                self.send(s, k, om.SerializeToString(), old_mic, "rewritten")
        key = iid if kind != AIR_COLUMN else self._full_of(iid)
        self._frames[key].append((src, bytes([kind]) + msg + mic))

    def _prev_of(self, low: int) -> int:
        """The recorded inference before the one whose ColumnFrames carry `low`."""
        keys = sorted(k for k in self._frames if (k & 0xFFFF) != (low & 0xFFFF))
        return keys[-1] if keys else -1

    def _full_of(self, low: int) -> int:
        return self._current if (self._current & 0xFFFF) == (low & 0xFFFF) else low

    def _tamper(self, src: int, kind: int, m: Any, msg: bytes, mic: bytes) -> None:
        if kind == AIR_COLUMN and src != self.victim:
            return
        if not m.payload:
            return
        payload = bytearray(m.payload)
        payload[len(payload) // 2] ^= 0x01
        m.payload = bytes(payload)
        self.send(src, kind, m.SerializeToString(), mic, "tampered")

    def _impersonate_gateway(self, src: int, kind: int, m: Any, msg: bytes, mic: bytes) -> None:
        if kind != AIR_INPUT:
            return
        self._inputs[m.inference_id].append(msg + mic)
        if not self._new_input(kind, m):
            return
        forged = pb().InputFrame.FromString(msg)
        for frag in range(max(1, forged.fragments)):
            forged.inference_id = m.inference_id + 1
            forged.fragment = frag
            forged.payload = secrets.token_bytes(len(m.payload))
            self.send(self.gateway, kind, forged.SerializeToString(), self._fake_mic(), "start")
        older = [i for i in self._inputs if i != m.inference_id]
        if older:
            for data in self._inputs.pop(max(older)):
                om = pb().InputFrame.FromString(data[: len(data) - self.mic])
                om.inference_id = m.inference_id
                self.send(self.gateway, kind, om.SerializeToString(), data[-self.mic :], "restart")
