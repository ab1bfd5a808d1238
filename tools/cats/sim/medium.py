"""The radio medium of the simulated swarm: one asyncio TCP server every station connects to.

    python -m cats.sim.medium --port P --link ieee802154|ble2m|ble2m-aux --loss SPEC --seed S
                              [--pcap FILE] [--log FILE] [--nodes D] [--slot-timeout 2.0]
                              [--mic 4|8]

Stations (D node processes and one gateway) speak the framed byte stream of proto/cats.proto
(``cats.wire.stream``). The first message of a station is a SimHello (type 2).

Admission: with a run token (hex in the environment variable CATS_SIM_TOKEN, which ``cats
serve`` / ``cats sim`` set for the medium and their stations), a SimHello without that token is
refused (``bad_token``, the connection closed) and evicts nobody; a station of this run that
says hello with a node id held by a live connection replaces it (a supervised restart). A
connection that sends 64 KiB without a valid hello is closed (``no_hello``). Without a token
every hello is admitted, as before (tests that play stations by hand).

Then:

* type 1 (AIR: AirType byte + message + MIC, cats.wire.auth) from a station is one radio
  frame put on the air. The medium holds no key: it reads the cleartext header (the message
  without its last ``--mic`` bytes) for its schedule, and plays the MAC: every frame it delivers is
  stamped with the sender's station id (node d: d, the gateway: D), one byte before the
  AirType, the link-layer source the receivers check the frame's claimed sender against. It
  checks it against the PHY (longer than the link's largest radio frame: rejected
  ``mtu``), decodes it (``undecodable``), checks its partition tag (``foreign_tag``; an
  InputFrame's or OutputFrame's: a ColumnFrame has none, v2), AirType (``unknown_air_type``)
  and direction (ColumnFrame and OutputFrame from a node, InputFrame from the gateway,
  OutputFrame sender = the station's node id: else ``wrong_station``). A ColumnFrame (v2)
  names neither its sender (the station) nor its columns and fragment count: the medium reads
  them from the swarm's frame plan (``--export``, ``cats.artefacts.frames.swarm_plan`` at the
  ColumnFrame MTU = the link's less the MIC; a fragment beyond it is ``undecodable``; without
  an export, one frame per sender and exchange whose columns are unknown),
  counts airtime and writes it to the pcap trace, then delivers it as type 1:

  - ColumnFrame: to every other live node taking part in that inference; the loss model
    decides per (frame, receiver). Lost deliveries go to the drop log.
  - InputFrame: to every live node (lossless: an acknowledged broadcast). The first InputFrame
    of an inference id starts an inference: the live nodes at that moment take part in it.
  - OutputFrame: to the gateway (lossless).

* SlotEnd (type 3) goes to the inference's live nodes and the gateway once every live
  participant has sent all ``fragments`` frames of exchange e of inference i, or when the slot
  timeout (wall clock, from the slot's first frame) expires for a hung node; it is written
  after every frame of that slot was written to each socket. A participant that missed a slot
  deadline is not waited for again in that inference; it is *hung* (still connected, silent in
  its exchange slot): the gateway is told it is not alive (StationEvent), and it takes part in
  no new inference until it is heard again (any frame: it is alive again). Frames of a closed
  slot are ``late`` (not delivered).
* StationEvent (type 4) goes to the gateway when a node joins or its connection ends (a dead
  node), or when the loss model kills it; a newly connected gateway gets one per live node.
* Garbage on a stream (bad CRC, impossible lengths, bytes between messages), messages before
  the SimHello, unexpected types and frames from foreign stations are ignored and counted.
* An injector (SimHello ``injector``: ``cats sim --attack``, cats.sim.attack) is a station
  outside the swarm: it hears every frame on the air (stamped) and its own AIR frames are
  ``claimed source | AirType | ...``: they go on the air (pcap, air clock) and are delivered
  unchecked with that source (ColumnFrame and InputFrame to every live node, OutputFrame to
  the gateway); the receivers' authentication decides. Counted as ``injected``; honest
  deliveries per receiving station are counted as ``delivered_station_<id>``.

Airtime is serialised on one channel in the runtime's ordered turns: the air clock advances by
each frame's MAC time (``cats.wire.phy``: CSMA-CA backoff, CCA and turnaround on 802.15.4; the
advertising event's spacing on BLE) and its airtime; pcap timestamps are that clock. A slot's
``airtime_us`` (in the log and in SlotEnd, so in the gateway's modelled latency) is the
modelled schedule ``Phy.schedule_us`` of its frames; ``airtime_payload_only_us`` the old
back-to-back sum of the frames' airtimes.

The log (``--log``, JSON lines) has: ``start``; ``join`` / ``leave`` / ``dead``; ``input`` per
inference (its input frames); ``drop`` per lost delivery (inference, ordinal, exchange, sender,
fragment, receiver, column_ids, row_start, row_count, cause); ``slot`` per closed slot (stats,
the participants, the frames seen: [sender, fragment, row_start, row_count, column ids], the
nodes that timed out); ``late``; ``output`` per OutputFrame; ``reject`` (first 100 per reason);
``counters`` (cumulative, whenever they changed at a slot end, and at exit). On startup the
medium prints ``ready port=<port>`` on stdout (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cats.artefacts import frames
from cats.sim.loss import Die, LossModel
from cats.sim.pcap import PcapWriter
from cats.wire import phy as phys
from cats.wire import stream
from cats.wire.proto import pb

GATEWAY = -1
ID_MASK = 0xFFFF  # inference ids go on the air modulo 2^16
REJECT_LOG_LIMIT = 100
NO_HELLO_LIMIT = 65536  # bytes a connection may send before a valid SimHello
TOKEN_ENV = "CATS_SIM_TOKEN"
KEEP_INFERENCES = 64  # inferences remembered (late frames of older ones count as stray)


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Station:
    """One connection. Identity matters: a node that reconnects is a new Station."""

    proto: StationProtocol
    node_id: int | None = None  # None until the SimHello
    tag: int = 0
    mtu: int = 0
    alive: bool = True  # connected and not killed by the loss model
    killed: bool = False
    foreign: bool = False  # its SimHello named another partition
    hung: bool = False  # missed a slot deadline; not alive until heard again
    seq: int = 0  # MAC sequence number / ADI DID of its frames
    injector: bool = False  # outside the swarm (cats sim --attack)

    def name(self) -> str:
        return "gateway" if self.node_id == GATEWAY else f"node {self.node_id}"

    def send(self, data: bytes) -> None:
        if self.alive and self.proto.transport is not None:
            self.proto.transport.write(data)


@dataclass(eq=False)
class Inference:
    inference_id: int  # on the air (16 bits)
    ordinal: int
    participants: set[Station]
    timed_out: set[Station] = field(default_factory=set)
    input_frames: int = 0
    input_fragments: int = 0
    input_air_bytes: int = 0
    input_airtime_us: float = 0.0  # back to back (payload only)
    input_lens: list[int] = field(default_factory=list)  # radio frame lengths
    input_payload: int = 0  # int8 input bytes
    input_logged: bool = False


@dataclass(eq=False)
class Slot:
    inference: Inference
    exchange: int
    opened_at: float
    t_air_us: float
    fragments: dict[Station, int] = field(default_factory=dict)
    seen: dict[Station, set[int]] = field(default_factory=dict)
    frames: list[list[Any]] = field(default_factory=list)
    frames_sent: int = 0
    frames_lost: int = 0
    deliveries: int = 0  # (frame, receiver) pairs the loss model decided
    air_bytes: int = 0
    airtime_us: float = 0.0  # back to back (payload only)
    lens: dict[int, list[int]] = field(default_factory=dict)  # sender -> radio frame lengths
    timer: asyncio.TimerHandle | None = None
    closed: bool = False


# ----------------------------------------------------------------------------------------------
# The medium
# ----------------------------------------------------------------------------------------------


class Medium:
    def __init__(
        self,
        phy: phys.Phy,
        loss: LossModel,
        *,
        nodes: int | None = None,
        tag: int | None = None,
        slot_timeout: float = 2.0,
        pcap: Path | None = None,
        log: Path | None = None,
        token: bytes = b"",
        mic: int = 8,
        plan: frames.SwarmPlan | None = None,
    ) -> None:
        self.token = token
        self.plan = plan or {}  # (exchange, sender) -> its frames (cats.artefacts.frames)
        self.phy = phy
        self.mic = mic
        self.injectors: set[Station] = set()
        self.delivered: Counter[int] = Counter()  # honest deliveries per receiving station
        self.loss = loss
        self.nodes = nodes
        self.tag = tag
        self.slot_timeout = slot_timeout
        self.pcap = PcapWriter(pcap, phy.linktype) if pcap else None
        self._log: TextIO | None = open(log, "w") if log else None  # noqa: SIM115
        self.t0 = time.monotonic()
        self.air_clock_us = 0.0
        self.stations: set[Station] = set()
        self.node_by_id: dict[int, Station] = {}
        self.gateway: Station | None = None
        self.inferences: dict[int, Inference] = {}
        self.ordinals = 0
        self.slots: dict[tuple[int, int], Slot] = {}
        self.closed_slots: set[tuple[int, int]] = set()
        self.counters: Counter[str] = Counter()
        self._closed_stream: Counter[str] = Counter()  # decoder counts of ended connections
        self._dumped: dict[str, int] = {}
        self._dead_ids: set[int] = set()  # killed by the loss model (until they reconnect)
        self._deaths_done: set[tuple[int, int]] = set()  # (die model index, node) fired
        self._pb = pb()

    # -- logging -----------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            fields["event"] = event
            fields["t"] = round(time.monotonic() - self.t0, 6)
            self._log.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._log is not None:
            self._log.flush()
        if self.pcap is not None:
            self.pcap.flush()

    def count(self, reason: str, station: Station | None = None, **detail: Any) -> None:
        self.counters[reason] += 1
        if self.counters[reason] <= REJECT_LOG_LIMIT:
            who = None if station is None else station.node_id
            self.log("reject", reason=reason, station=who, **detail)

    def dump_counters(self, force: bool = False) -> None:
        stats = self.all_counters()
        if force or stats != self._dumped:
            self._dumped = stats
            self.log("counters", **stats)

    def all_counters(self) -> dict[str, int]:
        out = dict(self.counters)
        for st in self.stations:
            d = st.proto.decoder
            out["stream_bad_crc"] = out.get("stream_bad_crc", 0) + d.bad_crc
            out["stream_bad_length"] = out.get("stream_bad_length", 0) + d.bad_length
            out["stream_skipped_bytes"] = out.get("stream_skipped_bytes", 0) + d.skipped
        for k, v in self._closed_stream.items():
            out[k] = out.get(k, 0) + v
        for sid, v in self.delivered.items():
            out[f"delivered_station_{sid}"] = v
        return out

    def close(self) -> None:
        self.dump_counters(force=True)
        self.log("stop", air_clock_us=round(self.air_clock_us, 1))
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None

    # -- stations ----------------------------------------------------------------------------
    def live_nodes(self) -> list[Station]:
        return [s for s in self.node_by_id.values() if s.alive and not s.hung]

    def heard(self, st: Station) -> None:
        """A frame from st: a hung node is alive again (from its next inference on)."""
        if st.hung and st.alive and self.node_by_id.get(int(st.node_id or 0)) is st:
            st.hung = False
            self.log("heard", station=st.node_id)
            self.station_event(int(st.node_id or 0), True)

    def station_event(self, node_id: int, alive: bool) -> None:
        if self.gateway is not None and self.gateway.alive:
            msg = self._pb.StationEvent(node_id=node_id, alive=alive, partition_tag=self.tag or 0)
            self.gateway.send(stream.encode(stream.STATION, msg.SerializeToString()))

    def on_hello(self, st: Station, payload: bytes) -> None:
        try:
            hello = self._pb.SimHello.FromString(payload)
        except Exception:  # protobuf DecodeError
            self.count("bad_hello", st)
            return
        if self.token and not hmac.compare_digest(bytes(hello.token), self.token):
            self.count("bad_token", st, node_id=int(hello.node_id))
            st.proto.close()
            return
        node_id, nodes = int(hello.node_id), int(hello.nodes)
        if hello.injector:
            st.node_id, st.injector = node_id, True
            self.injectors.add(st)
            self.log("join", station=node_id, injector=True)
            self.flush()
            return
        if self.nodes is None and nodes > 0:
            self.nodes = nodes
        if node_id < GATEWAY or (self.nodes is not None and node_id >= self.nodes):
            self.count("bad_hello", st, node_id=node_id)
            return
        if self.tag is None:
            self.tag = int(hello.partition_tag)
        st.node_id, st.tag, st.mtu = node_id, int(hello.partition_tag), int(hello.mtu)
        st.foreign = st.tag != self.tag or (
            nodes > 0 and self.nodes is not None and nodes != self.nodes
        )
        if st.foreign:
            self.count("foreign_station", st, tag=st.tag, nodes=nodes)
            return
        if st.mtu > self.phy.column_mtu:
            self.log(
                "warning",
                station=node_id,
                message=f"declares MTU {st.mtu} > {self.phy.column_mtu} of "
                f"{self.phy.name}; longer frames will be rejected",
            )
        if node_id == GATEWAY:
            old = self.gateway
            self.gateway = st
            if old is not None and old is not st:
                old.alive = False
                old.proto.close()
            self.log("join", station=GATEWAY, tag=st.tag, mtu=st.mtu)
            self.flush()
            for n in sorted(self.node_by_id.values(), key=lambda s: s.node_id or 0):
                if n.alive:
                    self.station_event(int(n.node_id or 0), not n.hung)
        else:
            old = self.node_by_id.get(node_id)
            self.node_by_id[node_id] = st
            if old is not None and old is not st and old.alive:
                self._node_gone(old, "replaced")
                old.proto.close()
            self._dead_ids.discard(node_id)
            self.log("join", station=node_id, tag=st.tag, mtu=st.mtu)
            self.flush()
            self.station_event(node_id, True)

    def connection_lost(self, st: Station) -> None:
        d = st.proto.decoder
        for k, v in (
            ("stream_bad_crc", d.bad_crc),
            ("stream_bad_length", d.bad_length),
            ("stream_skipped_bytes", d.skipped),
        ):
            self._closed_stream[k] += v
        self.stations.discard(st)
        self.injectors.discard(st)
        if st.node_id is None or st.foreign or st.injector:
            return
        if st.node_id == GATEWAY:
            if self.gateway is st:
                self.gateway = None
                self.log("leave", station=GATEWAY)
            return
        if st.alive:
            self._node_gone(st, "disconnected")
        if self.node_by_id.get(st.node_id) is st:
            del self.node_by_id[st.node_id]

    def _node_gone(self, st: Station, why: str) -> None:
        st.alive = False
        self.log("dead" if why == "killed" else "leave", station=st.node_id, reason=why)
        self.station_event(int(st.node_id or 0), False)
        for slot in list(self.slots.values()):
            self._check_slot(slot)

    def kill(self, node_id: int, why: str) -> None:
        st = self.node_by_id.get(node_id)
        self._dead_ids.add(node_id)
        if st is not None and st.alive:
            st.killed = True
            self._node_gone(st, "killed")
            self.log("killed", station=node_id, model=why)

    def _apply_deaths(self, ordinal: int, exchange: int) -> None:
        for k, m in enumerate(self.loss.models):
            if isinstance(m, Die) and m.when.reached(ordinal, exchange):
                for n in sorted(m.nodes):
                    if (k, n) not in self._deaths_done:
                        self._deaths_done.add((k, n))
                        self.kill(n, str(m))

    def schedule_timed_deaths(self, loop: asyncio.AbstractEventLoop) -> None:
        for k, m in enumerate(self.loss.models):
            if isinstance(m, Die) and m.when.t is not None:
                for n in sorted(m.nodes):
                    loop.call_later(m.when.t, self._timed_death, k, n, str(m))

    def _timed_death(self, k: int, n: int, why: str) -> None:
        if (k, n) not in self._deaths_done:
            self._deaths_done.add((k, n))
            self.kill(n, why)
            self.flush()

    # -- the air -----------------------------------------------------------------------------
    def station_id(self, st: Station) -> int:
        """The link-layer source of a station's frames: node d is d, the gateway D."""
        return int(self.nodes or 0) if st.node_id == GATEWAY else int(st.node_id or 0)

    def _on_air(self, st: Station, air: bytes, src: int | None = None) -> tuple[int, float]:
        """Put one radio frame on the channel: pcap record, air clock, the injectors hear it.
        Returns (on-air bytes, airtime us)."""
        n = len(air)
        on_air, us = self.phy.on_air_bytes(n), self.phy.airtime_us(n)
        self.air_clock_us += self.phy.mac.per_frame_us  # backoff, CCA, turnaround, ...
        sid = self.station_id(st) if src is None else src
        if self.pcap is not None:
            mac_src = GATEWAY if sid == self.nodes else sid
            self.pcap.write(self.air_clock_us, self.phy.psdu(mac_src, st.seq, air))
        st.seq = (st.seq + 1) & 0xFFFF
        self.air_clock_us += us
        if self.injectors:
            heard = stream.encode(stream.AIR, bytes([sid & 0xFF]) + air)
            for inj in self.injectors:
                if inj is not st:
                    inj.send(heard)
        return on_air, us

    def stamped(self, st: Station, air: bytes) -> bytes:
        """The AIR message a receiver gets: link source station + the frame."""
        return stream.encode(stream.AIR, bytes([self.station_id(st) & 0xFF]) + air)

    def deliver(self, rx: Station, out: bytes) -> None:
        self.delivered[self.station_id(rx)] += 1
        rx.send(out)

    def on_injected(self, st: Station, payload: bytes) -> None:
        """An injector's frame: claimed source | AirType | ...; on the air, delivered unchecked."""
        if len(payload) < 2 or len(payload) - 1 > self.phy.max_air:
            self.count("mtu", st, bytes=len(payload))
            return
        src, air = payload[0], payload[1:]
        self.counters["injected"] += 1
        self._on_air(st, air, src)
        out = stream.encode(stream.AIR, payload)
        if air[0] == stream.AIR_OUTPUT:
            targets = [self.gateway] if self.gateway is not None else []
        else:
            targets = self.live_nodes()
        for rx in targets:
            if rx is not None and rx.alive:
                rx.send(out)

    def on_air(self, st: Station, air: bytes) -> None:
        if st.node_id is None:
            self.count("no_hello", st)
            return
        if st.injector:
            self.on_injected(st, air)
            return
        if st.foreign:
            self.count("foreign_station", st)
            return
        if not st.alive:
            self.count("from_dead", st)
            return
        self.heard(st)
        if not air:
            self.count("undecodable", st)
            return
        if len(air) > self.phy.max_air:
            self.count("mtu", st, bytes=len(air), max=self.phy.max_air)
            return
        kind, body = air[0], air[1:]
        if kind == stream.AIR_COLUMN:
            if st.node_id == GATEWAY:
                self.count("wrong_station", st, air_type=kind)
                return
            self.on_column(st, air, body)
        elif kind == stream.AIR_INPUT:
            if st.node_id != GATEWAY:
                self.count("wrong_station", st, air_type=kind)
                return
            self.on_input(st, air, body)
        elif kind == stream.AIR_OUTPUT:
            if st.node_id == GATEWAY:
                self.count("wrong_station", st, air_type=kind)
                return
            self.on_output(st, air, body)
        else:
            self.count("unknown_air_type", st, air_type=kind)

    def _parse(self, st: Station, cls: Any, body: bytes) -> Any:
        """The cleartext message of a frame body (message + MIC; the medium holds no key)."""
        if len(body) < self.mic:
            self.count("undecodable", st)
            return None
        try:
            return cls.FromString(body[: len(body) - self.mic])
        except Exception:  # protobuf DecodeError
            self.count("undecodable", st)
            return None

    def _inference(self, inference_id: int, start: bool) -> Inference:
        iid = inference_id & ID_MASK
        inf = self.inferences.get(iid)
        if inf is None or start:
            ordinal = self.ordinals
            self.ordinals += 1
            self._apply_deaths(ordinal, -1)
            inf = Inference(iid, ordinal, set(self.live_nodes()))
            self.inferences[iid] = inf
            # forget the slots of an earlier inference with the same id, and old inferences
            old = {i for i, x in self.inferences.items() if x.ordinal < ordinal - KEEP_INFERENCES}
            for i in old:
                del self.inferences[i]
            for key in [k for k in self.closed_slots if k[0] == iid or k[0] in old]:
                self.closed_slots.discard(key)
            self.log(
                "inference",
                inference=iid,
                ordinal=ordinal,
                participants=sorted(int(s.node_id or 0) for s in inf.participants),
            )
        return inf

    def on_input(self, st: Station, air: bytes, body: bytes) -> None:
        msg = self._parse(st, self._pb.InputFrame, body)
        if msg is None:
            return
        if msg.partition_tag != self.tag:
            self.count("foreign_tag", st, tag=msg.partition_tag)
            return
        iid = msg.inference_id & ID_MASK
        known = self.inferences.get(iid)
        inf = self._inference(iid, start=msg.fragment == 0 or known is None)
        on_air, us = self._on_air(st, air)
        inf.input_frames += 1
        inf.input_fragments = max(inf.input_fragments, int(msg.fragments))
        inf.input_air_bytes += on_air
        inf.input_airtime_us += us
        inf.input_lens.append(len(air))
        inf.input_payload += len(msg.payload)
        out = self.stamped(st, air)
        for node in inf.participants:
            if node.alive:
                self.deliver(node, out)
        if inf.input_frames >= inf.input_fragments and not inf.input_logged:
            inf.input_logged = True
            self.log(
                "input",
                inference=iid,
                ordinal=inf.ordinal,
                frames=inf.input_frames,
                air_bytes=inf.input_air_bytes,
                airtime_us=round(self.phy.schedule_us({GATEWAY: inf.input_lens}), 3),
                airtime_payload_only_us=round(inf.input_airtime_us, 3),
                payload_bytes=inf.input_payload,
            )

    def on_output(self, st: Station, air: bytes, body: bytes) -> None:
        msg = self._parse(st, self._pb.OutputFrame, body)
        if msg is None:
            return
        if msg.partition_tag != self.tag:
            self.count("foreign_tag", st, tag=msg.partition_tag)
            return
        if msg.sender != st.node_id:
            self.count("wrong_station", st, sender=msg.sender)
            return
        t_air = self.air_clock_us
        on_air, us = self._on_air(st, air)
        iid = msg.inference_id & ID_MASK
        inf = self.inferences.get(iid)
        self.log(
            "output",
            inference=iid,
            ordinal=None if inf is None else inf.ordinal,
            sender=st.node_id,
            air_len=len(air),
            air_bytes=on_air,
            airtime_us=round(self.phy.mac_us(len(air)), 3),
            airtime_payload_only_us=round(us, 3),
            payload_bytes=len(msg.payload),
            t_air_us=round(t_air, 1),
            status=msg.status,
        )
        if self.gateway is not None and self.gateway.alive:
            self.deliver(self.gateway, self.stamped(st, air))
        else:
            self.count("no_gateway", st)

    def on_column(self, st: Station, air: bytes, body: bytes) -> None:
        msg = self._parse(st, self._pb.ColumnFrame, body)
        if msg is None:
            return
        sender = int(st.node_id or 0)
        iid, e = msg.inference_id & ID_MASK, int(msg.exchange)
        if self.plan:
            planned = self.plan.get((e, sender), [])
        else:  # no export (tests): one frame per sender and exchange, its columns unknown
            planned = [frames.FramePlan(0, (), 0, 0, len(msg.payload), len(body))]
        if msg.fragment >= len(planned):
            self.count("undecodable", st, exchange=e, fragment=msg.fragment, fragments=len(planned))
            return
        fp = planned[msg.fragment]
        inf = self.inferences.get(iid)
        if inf is None:  # no input seen (e.g. a test without a gateway): start it now
            inf = self._inference(iid, start=True)
        if st not in inf.participants:
            self.count("not_participant", st, inference=iid)
            return
        key = (iid, e)
        slot = self.slots.get(key)
        if slot is None:
            if key in self.closed_slots:
                self.counters["late"] += 1
                self.log("late", inference=iid, exchange=e, sender=sender, fragment=msg.fragment)
                return
            self._apply_deaths(inf.ordinal, e)
            if not st.alive:
                self.count("from_dead", st)
                return
            slot = Slot(inf, e, time.monotonic(), self.air_clock_us)
            slot.timer = asyncio.get_running_loop().call_later(
                self.slot_timeout, self._slot_timeout, slot
            )
            self.slots[key] = slot
        seen = slot.seen.setdefault(st, set())
        if msg.fragment in seen:
            self.count("duplicate", st, inference=iid, exchange=e, fragment=msg.fragment)
            return
        seen.add(int(msg.fragment))
        slot.fragments[st] = len(planned)
        cols = list(fp.column_ids)
        slot.frames.append([sender, int(msg.fragment), fp.row_start, fp.row_count, cols])
        on_air, us = self._on_air(st, air)
        slot.frames_sent += 1
        slot.air_bytes += on_air
        slot.airtime_us += us
        slot.lens.setdefault(sender, []).append(len(air))
        out = self.stamped(st, air)
        lossy = self.loss.lossy
        elapsed = time.monotonic() - self.t0
        for rx in inf.participants:
            if rx is st or not rx.alive:
                continue
            r = int(rx.node_id or 0)
            slot.deliveries += 1
            cause = (
                self.loss.lost(inf.ordinal, iid, e, sender, int(msg.fragment), r, elapsed)
                if lossy
                else None
            )
            if cause is None:
                self.deliver(rx, out)
            else:
                slot.frames_lost += 1
                self.log(
                    "drop",
                    inference=iid,
                    ordinal=inf.ordinal,
                    exchange=e,
                    sender=sender,
                    fragment=int(msg.fragment),
                    receiver=r,
                    column_ids=cols,
                    row_start=fp.row_start,
                    row_count=fp.row_count,
                    cause=cause,
                )
        self._check_slot(slot)

    # -- slots -------------------------------------------------------------------------------
    def _expected(self, slot: Slot) -> list[Station]:
        inf = slot.inference
        return [s for s in inf.participants if s.alive and s not in inf.timed_out]

    def _check_slot(self, slot: Slot) -> None:
        if slot.closed:
            return
        for s in self._expected(slot):
            n = slot.fragments.get(s)
            if n is None or len(slot.seen.get(s, ())) < n:
                return
        self._close_slot(slot, timed_out=[])

    def _slot_timeout(self, slot: Slot) -> None:
        if slot.closed:
            return
        late = [
            s
            for s in self._expected(slot)
            if slot.fragments.get(s) is None or len(slot.seen.get(s, ())) < slot.fragments[s]
        ]
        slot.inference.timed_out.update(late)
        self._close_slot(slot, timed_out=late)
        for st in late:  # connected but silent in its slot: hung until heard again
            if not st.hung and st.alive:
                st.hung = True
                self.counters["hung"] += 1
                self.log("hung", station=st.node_id, inference=slot.inference.inference_id)
                self.station_event(int(st.node_id or 0), False)
        for other in list(self.slots.values()):  # they may have been waiting for those too
            self._check_slot(other)
        self.flush()

    def _close_slot(self, slot: Slot, timed_out: list[Station]) -> None:
        slot.closed = True
        if slot.timer is not None:
            slot.timer.cancel()
        inf = slot.inference
        key = (inf.inference_id, slot.exchange)
        self.slots.pop(key, None)
        self.closed_slots.add(key)
        # senders in turn order (node id), each frame with its MAC time
        mac_us = self.phy.schedule_us(dict(sorted(slot.lens.items())))
        msg = self._pb.SlotEnd(
            inference_id=inf.inference_id,
            exchange=slot.exchange,
            frames_sent=slot.frames_sent,
            frames_lost=slot.frames_lost,
            air_bytes=slot.air_bytes,
            airtime_us=int(round(mac_us)),
            deliveries=slot.deliveries,
        )
        out = stream.encode(stream.SLOT_END, msg.SerializeToString())
        receivers = [s for s in inf.participants if s.alive]
        for s in receivers:
            s.send(out)
        if self.gateway is not None and self.gateway.alive:
            self.gateway.send(out)
        self.log(
            "slot",
            inference=inf.inference_id,
            ordinal=inf.ordinal,
            exchange=slot.exchange,
            frames_sent=slot.frames_sent,
            frames_lost=slot.frames_lost,
            deliveries=slot.deliveries,
            air_bytes=slot.air_bytes,
            airtime_us=round(mac_us, 3),
            airtime_payload_only_us=round(slot.airtime_us, 3),
            t_air_us=round(slot.t_air_us, 1),
            wall_ms=round((time.monotonic() - slot.opened_at) * 1e3, 3),
            receivers=sorted(int(s.node_id or 0) for s in receivers),
            timed_out=sorted(int(s.node_id or 0) for s in timed_out),
            frames=slot.frames,
        )
        self.dump_counters()
        self.flush()


# ----------------------------------------------------------------------------------------------
# Connections
# ----------------------------------------------------------------------------------------------


class StationProtocol(asyncio.Protocol):
    def __init__(self, medium: Medium) -> None:
        self.medium = medium
        self.transport: asyncio.Transport | None = None
        self.decoder = stream.Decoder(stream.SIM_MAX_PAYLOAD)
        self.station = Station(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.medium.stations.add(self.station)

    def data_received(self, data: bytes) -> None:
        m, st = self.medium, self.station
        if st.node_id is None and self.decoder.skipped + len(data) > NO_HELLO_LIMIT:
            m.count("no_hello", st)
            self.close()
            return
        for kind, payload in self.decoder.feed(data):
            if kind == stream.HELLO:
                if st.node_id is not None:
                    m.count("duplicate_hello", st)
                else:
                    m.on_hello(st, payload)
            elif kind == stream.AIR:
                m.on_air(st, payload)
            else:
                m.count("unexpected_type", st, type=kind)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.medium.connection_lost(self.station)
        self.medium.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(medium: Medium, host: str, port: int, ready: TextIO = sys.stdout) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StationProtocol(medium), host, port)
    actual = server.sockets[0].getsockname()[1]
    medium.log(
        "start",
        port=actual,
        link=medium.phy.to_dict(),
        loss=str(medium.loss),
        seed=medium.loss.seed,
        slot_timeout_s=medium.slot_timeout,
        nodes=medium.nodes,
    )
    medium.flush()
    medium.schedule_timed_deaths(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready port={actual}", file=ready, flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        for st in list(medium.stations):
            st.proto.close()
        medium.close()


def parse_token(text: str) -> bytes:
    """The run token from its hex form (empty: none)."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SystemExit(f"{TOKEN_ENV} must be hex") from None


def parse_tag(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cats.sim.medium", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    p.add_argument("--link", default="ieee802154", choices=sorted(phys.PHYS))
    p.add_argument(
        "--loss",
        action="append",
        default=[],
        help="loss model(s), e.g. iid:0.1, ge:0.05,0.3,0,0.8, cut:0-3/4-7, "
        "die:5@inference=2,exchange=10; combine with '+'",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, default=None, help="D (default: from the first hello)")
    p.add_argument(
        "--tag",
        type=parse_tag,
        default=None,
        help="partition tag of the swarm (default: the first station's)",
    )
    p.add_argument("--slot-timeout", type=float, default=2.0, help="seconds (wall clock)")
    p.add_argument("--pcap", type=Path, default=None, help="write the air trace here")
    p.add_argument("--log", type=Path, default=None, help="JSON-lines drop/slot log")
    p.add_argument("--mic", type=int, default=8, choices=(4, 8), help="MIC bytes per frame")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        help="the swarm's export (node-<d>/manifest.pb): the ColumnFrames' frame plan",
    )
    p.add_argument(
        "--mac",
        default=None,
        choices=phys.MAC_CHOICES,
        help="the firmware's channel access of the link (cats.wire.phy.FIRMWARE_MACS; "
        "default: the link's default)",
    )
    args = p.parse_args(argv)
    try:
        loss = LossModel.parse(args.loss, args.seed)
    except ValueError as exc:
        p.error(str(exc))
    medium = Medium(
        phys.get(args.link, args.mac),
        loss,
        nodes=args.nodes,
        tag=args.tag,
        slot_timeout=args.slot_timeout,
        pcap=args.pcap,
        log=args.log,
        token=parse_token(os.environ.get(TOKEN_ENV, "")),
        mic=args.mic,
        plan=(
            frames.load_swarm_plan(args.export, phys.get(args.link).column_mtu - args.mic)
            if args.export
            else None
        ),
    )
    asyncio.run(serve(medium, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
