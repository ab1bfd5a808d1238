"""The simulated swarm: radio medium (cats.sim.medium), C node and gateway processes
(cats_node_sim, cats_gateway_sim from build/host), orchestration and `cats sim`.

Every swarm here uses its own temp directory and ports picked by the OS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import cats_sim_argv, descendants, gone, wait_for

from cats.artefacts import export
from cats.base.paths import REPO_ROOT
from cats.model.partition import Partition
from cats.quant import qref
from cats.sim import loss as lossmod
from cats.sim import pcap, replay
from cats.sim.run import simulate
from cats.sim.swarm import Swarm, build_executables
from cats.wire import phy, stream
from cats.wire.proto import pb

TAG = 0x1234ABCD


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[int, Path]:
    """Untrained `test` preset exports for D = 4 and 8, and the host executables."""
    build_executables()
    base = tmp_path_factory.mktemp("sim-exports")
    _, qm = export.untrained("test", 0)
    out = {}
    for d in (4, 8):
        export.export_partition(qm, Partition.full(qm.cfg, d), base / f"d{d}")
        out[d] = base / f"d{d}"
    return out


def _inputs(directory: Path, k: int, seed: int = 0) -> np.ndarray:
    cfg = export.load_node(directory / "node-0").spec.cfg
    rng = np.random.default_rng(seed)
    return rng.integers(-100, 100, size=(k, cfg.tokens, cfg.patch), dtype=np.int8)


def _counters(log: Path) -> dict[str, int]:
    last: dict[str, int] = {}
    for r in replay.read_log(log):
        if r.get("event") == "counters":
            last = r
    return last


# ----------------------------------------------------------------------------------------------
# PHY, loss models, pcap (no processes)
# ----------------------------------------------------------------------------------------------


def _crc24_bitserial(pdu: bytes, init: int = 0x555555) -> bytes:
    """The BLE CRC as the core spec draws it (Vol 6 Part B 3.1.1): 24-bit LFSR, position 0 =
    LSB of init, data LSB first, taps after positions 0,1,3,4,6,9,10; sent position 23 first."""
    pos = [(init >> i) & 1 for i in range(24)]
    for b in pdu:
        for k in range(8):
            x = ((b >> k) & 1) ^ pos[23]
            new = [x, *pos[:23]]
            for i in (1, 3, 4, 6, 9, 10):
                new[i] ^= x
            pos = new
    bits = [pos[23 - t] for t in range(24)]
    return bytes(sum(bits[8 * j + k] << k for k in range(8)) for j in range(3))


def test_phy_framing_and_crcs() -> None:
    assert phy.crc16_kermit(b"123456789") == 0x2189
    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 100, 257):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert phy.crc24_ble(data) == _crc24_bitserial(data)
    p154 = phy.IEEE802154
    assert (p154.max_air, p154.column_mtu) == (116, 115)
    air = bytes([1]) + bytes(115)
    psdu = p154.psdu(3, 7, air)
    assert len(psdu) == 127  # the largest PSDU
    assert psdu[:3] == b"\x41\x88\x07" and psdu[3:9] == struct.pack("<HHH", 0xCA75, 0xFFFF, 0x103)
    assert p154.airtime_us(len(air)) == (6 + 127) * 32
    ble = phy.BLE2M
    assert (ble.max_air, ble.column_mtu) == (241, 240)
    rec = ble.psdu(2, 1, bytes([1]) + bytes(240))
    assert len(rec) == 4 + 2 + 255 + 3 and rec[:4] == struct.pack("<I", 0x8E89BED6)
    assert rec[-3:] == _crc24_bitserial(rec[4:-3])
    assert ble.airtime_us(241) == (241 + 25) * 4 + 3 * 17 * 8 + 300
    assert phy.BLE2M_AUX.airtime_us(241) == (241 + 25) * 4


def test_loss_models_parse_and_are_order_independent() -> None:
    m = lossmod.LossModel.parse("iid:0.2+cut:0-1/2-3@inference=1,exchange=2;die:3@t=1.5", seed=5)
    assert str(m) == "iid:0.2+cut:0,1/2,3@inference=1,exchange=2+die:3@t=1.5"
    assert [str(d.when) for d in m.deaths] == ["t=1.5"]
    keys = [
        (i, e, s, f, r)
        for i in range(3)
        for e in range(5)
        for s in range(4)
        for f in range(2)
        for r in range(4)
        if r != s
    ]
    a = {k: m.lost(k[0], *k) for k in keys}
    m2 = lossmod.LossModel.parse(str(m), seed=5)
    b = {k: m2.lost(k[0], *k) for k in reversed(keys)}
    assert a == b  # same decisions in any order
    assert any(v == "cut" for v in a.values()) and any(v == "iid" for v in a.values())
    assert all(a[k] != "cut" for k in keys if (k[0], k[1]) < (1, 2))
    rate = np.mean(
        [
            v is not None
            for k, v in a.items()
            if not {k[2], k[4]} <= {0, 1, 2, 3} or (k[0], k[1]) < (1, 2)
        ]
    )
    assert 0.1 < rate < 0.3
    ge = lossmod.LossModel.parse("ge:0.05,0.3,0,0.8", seed=1)
    seq = [ge.lost(0, 0, e, 0, f, 1) is not None for e in range(400) for f in range(4)]
    assert abs(np.mean(seq) - lossmod.GilbertElliott(0.05, 0.3, 0, 0.8).mean_loss) < 0.05
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, seq, 0])))[::2]
    assert runs.max() >= 3  # bursts
    for bad in ("iid:2", "ge:0.1", "cut:0-3", "cut:0-3/2-5", "die:3", "die:3@x=1", "foo:1"):
        with pytest.raises(ValueError):
            lossmod.LossModel.parse(bad)


def test_replay_matches_qref_delivery_masks(exports) -> None:
    """replay() with whole senders lost equals qref.run_swarm with the delivery mask."""
    loaded = export.load_partition(exports[4])
    nodes = [n.runtime() for n in loaded]
    specs = [n.spec for n in loaded]
    inp = _inputs(exports[4], 1)[0]
    rng = np.random.default_rng(3)
    delivery = {e: rng.random((4, 4)) > 0.3 for e in range(specs[0].cfg.exchanges)}
    lost = {
        e: {
            r: {
                int(c)
                for s in range(4)
                if s != r and not dm[s, r]
                for c in specs[s].exchanges[e].kept_cols
            }
            for r in range(4)
        }
        for e, dm in delivery.items()
    }
    assert np.array_equal(replay.replay(nodes, inp, lost), qref.run_swarm(nodes, inp, delivery))


# ----------------------------------------------------------------------------------------------
# The medium alone (raw stations)
# ----------------------------------------------------------------------------------------------


class RawStation:
    def __init__(
        self, port: int, node_id: int | None, nodes: int = 2, tag: int = TAG, token: bytes = b""
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.dec = stream.Decoder()
        self.msgs: list[tuple[int, bytes]] = []
        if node_id is not None:
            hello = pb().SimHello(
                node_id=node_id, nodes=nodes, partition_tag=tag, mtu=115, token=token
            )
            self.sock.sendall(stream.encode(stream.HELLO, hello.SerializeToString()))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def poll(self, timeout: float = 0.3) -> list[tuple[int, bytes]]:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.msgs.extend(self.dec.feed(data))
        except TimeoutError:
            pass
        return self.msgs


def _column(sender: int, fragment: int = 0, **kw) -> bytes:
    """A ColumnFrame (v2: the sender is the station that sends it, not in the message)."""
    cf = pb().ColumnFrame(inference_id=1, exchange=0, fragment=fragment, payload=bytes(8), **kw)
    return bytes([stream.AIR_COLUMN]) + cf.SerializeToString() + MIC


def _output(sender: int, tag: int = TAG) -> bytes:
    of = pb().OutputFrame(inference_id=1, partition_tag=tag, sender=sender, payload=bytes(4))
    return bytes([stream.AIR_OUTPUT]) + of.SerializeToString() + MIC


MIC = bytes(8)  # the medium holds no key: it only strips the MIC to read the header


def test_medium_ignores_and_counts_garbage_and_foreign_frames(tmp_path: Path) -> None:
    log = tmp_path / "medium.jsonl"
    med = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cats.sim.medium",
            "--port",
            "0",
            "--nodes",
            "2",
            "--tag",
            hex(TAG),
            "--log",
            str(log),
            "--pcap",
            str(tmp_path / "air.pcap"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        port = int(med.stdout.readline().strip().split("=")[1])
        a, b = RawStation(port, 0), RawStation(port, 1)
        wait_for(lambda: log.read_text().count('"event":"join"') == 2, what="the hellos")
        foreign = RawStation(port, 1, tag=0xDEAD)  # another partition: never a node 1
        anon = RawStation(port, None)  # no SimHello
        anon.send(stream.air(stream.AIR_COLUMN, _column(0)[1:]))
        anon.send(b"\x00\x01garbage\xca\x75\x01\xff\xff")
        foreign.send(stream.encode(stream.AIR, _column(1)))
        a.send(b"\xca\x75\x01\x05\x00hello\x00\x00")  # bad CRC
        a.send(bytes(range(200)))  # bytes between messages
        a.send(stream.encode(stream.AIR, _output(0, tag=0xBEEF)))  # foreign tag
        a.send(stream.encode(stream.AIR, bytes([9]) + _column(0)[1:]))  # unknown AirType
        a.send(stream.encode(stream.AIR, bytes([stream.AIR_COLUMN, 0xFF, 0xFF, 0xFF])))
        a.send(stream.encode(stream.AIR, _output(1)))  # sender is not the station
        a.send(stream.encode(stream.AIR, bytes([stream.AIR_COLUMN]) + bytes(116)))  # > MTU
        a.send(stream.encode(stream.SLOT_END, b""))  # not a station's message
        a.send(stream.encode(stream.AIR, _column(0)))  # the one valid frame: ends the slot?
        got = b.poll()
        frames = [p for t, p in got if t == stream.AIR]
        ends = [pb().SlotEnd.FromString(p) for t, p in got if t == stream.SLOT_END]
        assert frames == [bytes([0]) + _column(0)]  # stamped with its link source
        assert ends == []  # node 1 has not sent its frame of the slot yet
        b.send(stream.encode(stream.AIR, _column(1)))
        got_a = a.poll()
        assert [p for t, p in got_a if t == stream.AIR] == [bytes([1]) + _column(1)]
        ends = [pb().SlotEnd.FromString(p) for t, p in got_a if t == stream.SLOT_END]
        assert len(ends) == 1 and (ends[0].frames_sent, ends[0].frames_lost) == (2, 0)
        assert ends[0].air_bytes == len(_column(0)) + len(_column(1)) + 2 * 17
        assert foreign.poll() == [] and anon.poll() == []
    finally:
        med.send_signal(signal.SIGTERM)
        med.wait(10)
    c = _counters(log)
    assert c["no_hello"] == 1 and c["foreign_station"] == 2
    assert c["foreign_tag"] == 1 and c["unknown_air_type"] == 1 and c["undecodable"] == 1
    assert c["wrong_station"] == 1 and c["mtu"] == 1 and c["unexpected_type"] == 1
    assert c["stream_bad_crc"] >= 1 and c["stream_skipped_bytes"] >= 200
    linktype, recs = pcap.read(tmp_path / "air.pcap")
    assert linktype == 195 and len(list(recs)) == 2  # only the two valid frames went on air


# ----------------------------------------------------------------------------------------------
# Whole swarms: C nodes + C gateway
# ----------------------------------------------------------------------------------------------


@pytest.mark.bitexact
@pytest.mark.parametrize("nodes", [4, 8])
def test_no_loss_bit_exact(exports, tmp_path: Path, nodes: int) -> None:
    res = simulate(
        exports[nodes],
        inferences=3,
        workdir=tmp_path,
        pcap=tmp_path / "air.pcap",
        log=tmp_path / "medium.jsonl",
    )
    assert res["ok"] and res["bit_exact"], res["per_inference"]
    assert res["frames_lost"] == 0 and res["degraded"] == 0
    cfg = export.load_node(exports[nodes] / "node-0").spec.cfg
    for r in res["per_inference"]:
        assert r["slots"] == cfg.exchanges
        assert r["air_bytes"] > r["air_bytes_exchanges"] > 0
        assert r["modelled_latency_s"] == pytest.approx(
            r["compute_s"] + r["airtime_s"] + r["output_turns_s"]
        )
        # node d's OutputFrames wait 2 d x 6 ms (CONFIG_CATS_TURN_FRAME_US on 802.15.4), longer
        # than one frame: idle time between them, less than the last one's wait
        assert (r["output_turns_s"] > 0) == (nodes > 1)
        assert r["output_turns_s"] < (nodes - 1) * 0.012 + 1e-9
        assert r["gateway"]["air_bytes"] > 0
    assert np.isfinite(res["mse"]) and res["mse"] == pytest.approx(res["reference_mse"])
    _check_pcap_802154(tmp_path / "air.pcap", tmp_path / "medium.jsonl", nodes)


def _tshark_fields(pcap: Path, *fields: str) -> list[str]:
    """One tab-separated line of `fields` per record as tshark decodes `pcap` (skips the test
    when tshark is absent: the caller has already checked the records with its own parser)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed: pcap checked by the test's own parser only")
    argv = [tshark, "-r", str(pcap), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()


def _check_pcap_802154(path: Path, log: Path, nodes: int) -> None:
    linktype, recs = pcap.read(path)
    assert linktype == phy.LINKTYPE_IEEE802_15_4_WITHFCS
    recs = list(recs)
    records = replay.read_log(log)
    n_frames = sum(r["frames_sent"] for r in records if r["event"] == "slot")
    n_frames += sum(r["frames"] for r in records if r["event"] == "input")
    n_frames += sum(1 for r in records if r["event"] == "output")
    assert len(recs) == n_frames
    last_t = -1.0
    for t, rec in recs:
        assert len(rec) <= 127
        fc, _, pan, dst, src = struct.unpack_from("<HBHHH", rec)
        assert (fc, pan, dst) == (0x8841, 0xCA75, 0xFFFF)
        assert src == phy.IEEE802154_GATEWAY_ADDR or 0x100 <= src < 0x100 + nodes
        assert phy.crc16_kermit(rec[:-2]) == struct.unpack("<H", rec[-2:])[0]
        assert rec[9] in (stream.AIR_COLUMN, stream.AIR_INPUT, stream.AIR_OUTPUT)
        assert t >= last_t
        last_t = t
    out = _tshark_fields(path, "wpan.frame_type", "wpan.fcs_ok", "wpan.src16", "_ws.malformed")
    assert len(out) == len(recs)
    for line in out:
        ftype, fcs_ok, src, malformed = (line.split("\t") + ["", "", "", ""])[:4]
        assert int(ftype, 16) == 1 and fcs_ok in ("1", "True") and src and not malformed


@pytest.mark.bitexact
def test_ble_pcap_and_bit_exact(exports, tmp_path: Path) -> None:
    res = simulate(
        exports[4],
        link="ble2m",
        inferences=1,
        workdir=tmp_path,
        inputs=_inputs(exports[4], 1),
        pcap=tmp_path / "air.pcap",
    )
    assert res["ok"] and res["bit_exact"]
    linktype, recs = pcap.read(tmp_path / "air.pcap")
    assert linktype == phy.LINKTYPE_BLUETOOTH_LE_LL
    recs = list(recs)
    assert recs
    for _, rec in recs:
        assert rec[:4] == struct.pack("<I", 0x8E89BED6) and rec[4] & 0x0F == 0x7
        assert rec[5] == len(rec) - 9 <= 255
        assert phy.crc24_ble(rec[4:-3]) == rec[-3:]
    out = _tshark_fields(
        tmp_path / "air.pcap", "btle.advertising_header.pdu_type", "btle.crc.incorrect"
    )
    assert len(out) == len(recs)
    assert all(line.split("\t")[0] == "0x07" and not line.split("\t")[1] for line in out), out[:3]


@pytest.mark.bitexact
@pytest.mark.parametrize("spec", ["iid:0.1", "ge:0.1,0.3,0.0,0.9", "paper:0.1"])
def test_loss_replay_bit_exact(exports, tmp_path: Path, spec: str) -> None:
    res = simulate(
        exports[4],
        loss=[spec],
        seed=3,
        inferences=3,
        workdir=tmp_path,
        inputs=_inputs(exports[4], 3),
    )
    assert res["ok"] and res["bit_exact"], [r["bit_exact"] for r in res["per_inference"]]
    assert res["frames_lost"] > 0
    # the lossy swarm computes something else than the lossless one (the replay is not vacuous)
    loaded = export.load_partition(exports[4])
    nodes = [n.runtime() for n in loaded]
    clean = [qref.run_swarm(nodes, x) for x in _inputs(exports[4], 3)]
    assert any(
        not np.array_equal(c, np.array(r["output"], np.int8))
        for c, r in zip(clean, res["per_inference"], strict=True)
    )


@pytest.mark.bitexact
def test_node_dies_mid_inference_degraded_and_bit_exact(exports, tmp_path: Path) -> None:
    """The medium kills node 2 at exchange 3 of the second inference: that result comes by
    the deadline, degraded with node 2 missing, and equals the reference with node 2's columns
    lost from exchange 3 on and its output slice zero; the next inference runs without it."""
    res = simulate(
        exports[4],
        loss=["die:2@inference=1,exchange=3"],
        inferences=3,
        workdir=tmp_path,
        inputs=_inputs(exports[4], 3),
        deadline_ms=5000,
    )
    per = res["per_inference"]
    assert [r["degraded"] for r in per] == [False, True, True]
    assert [r["missing_nodes"] for r in per] == [[], [2], [2]]
    assert all(r["bit_exact"] for r in per), per
    assert all(r["wall_s"] < 5.0 for r in per)  # nobody waited for a deadline


def test_node_killed_mid_inference_then_restarted(exports, tmp_path: Path) -> None:
    d = exports[4]
    x = _inputs(d, 4)
    nodes = [n.runtime() for n in export.load_partition(d)]
    with Swarm(d, workdir=tmp_path, deadline_ms=8000) as swarm, swarm.client() as gw:
        first = gw.infer(x[0])
        assert first.status == 0 and not first.degraded
        assert np.array_equal(np.frombuffer(first.output, np.int8), qref.run_swarm(nodes, x[0]))
        # node 1 hangs (SIGSTOP) while an inference starts, then is killed (SIGKILL)
        swarm.node[1].signal(signal.SIGSTOP)
        rid = gw.submit(x[1], deadline_ms=8000)
        time.sleep(0.3)
        t0 = time.monotonic()
        swarm.kill_node(1)
        res = gw.result(rid)
        assert time.monotonic() - t0 < 8.0
        assert res.status == 0 and res.degraded and list(res.missing_nodes) == [1]
        # = the reference without any of node 1's columns and without its output slice
        specs = [n.spec for n in nodes]
        lost = {
            e: {r: set(specs[1].exchanges[e].kept_cols.tolist()) for r in (0, 2, 3)}
            for e in range(specs[0].cfg.exchanges)
        }
        ref = replay.replay(nodes, x[1], lost, missing=[1])
        assert np.array_equal(np.frombuffer(res.output, np.int8), ref)
        st = gw.status()
        assert [ns.alive for ns in st.node_status] == [True, False, True, True]
        # restarted, it rejoins the next inference: a full result again
        swarm.restart_node(1)
        wait_for(lambda: gw.status().node_status[1].alive, what="node 1 alive again")
        res = gw.infer(x[2])
        assert res.status == 0 and not res.degraded and not res.missing_nodes
        assert np.array_equal(np.frombuffer(res.output, np.int8), qref.run_swarm(nodes, x[2]))
        pids = swarm.pids()
    assert all(gone(p) for p in pids)


def test_hung_node_slot_timeout_then_recovers(exports, tmp_path: Path) -> None:
    """A node that hangs (SIGSTOP) stalls each slot only until the medium's slot timeout; the
    result comes at the gateway's deadline without its slice, bit-exact with the reference
    that lost all its columns. Resumed (SIGCONT), it catches up and the next result is full."""
    d = exports[4]
    x = _inputs(d, 2)
    nodes = [n.runtime() for n in export.load_partition(d)]
    specs = [n.spec for n in nodes]
    with (
        Swarm(d, workdir=tmp_path, slot_timeout=0.3, deadline_ms=2500) as swarm,
        swarm.client() as gw,
    ):
        swarm.node[1].signal(signal.SIGSTOP)
        t0 = time.monotonic()
        res = gw.infer(x[0])
        assert time.monotonic() - t0 < 4.0
        assert res.status == 0 and res.degraded and list(res.missing_nodes) == [1]
        lost = {
            e: {r: set(specs[1].exchanges[e].kept_cols.tolist()) for r in (0, 2, 3)}
            for e in range(specs[0].cfg.exchanges)
        }
        ref = replay.replay(nodes, x[0], lost, missing=[1])
        assert np.array_equal(np.frombuffer(res.output, np.int8), ref)
        swarm.node[1].signal(signal.SIGCONT)
        time.sleep(0.5)
        res = gw.infer(x[1])
        assert res.status == 0 and not res.degraded
        assert np.array_equal(np.frombuffer(res.output, np.int8), qref.run_swarm(nodes, x[1]))
    slots = [r for r in replay.read_log(swarm.log) if r["event"] == "slot"]
    assert slots[0]["timed_out"] == [1] and all(not s["timed_out"] for s in slots[1:])


def test_gateway_restart(exports, tmp_path: Path) -> None:
    """A new gateway process on the same port: the medium tells it which nodes are alive, and
    the next inference (whose id repeats the old gateway's first one) runs in full."""
    d = exports[4]
    x = _inputs(d, 2)
    nodes = [n.runtime() for n in export.load_partition(d)]
    with Swarm(d, workdir=tmp_path, deadline_ms=2000) as swarm:
        old_pid = swarm.gateway.pid
        with swarm.client() as gw:
            assert gw.infer(x[0]).status == 0
        swarm.kill_gateway()
        swarm.restart_gateway()
        assert swarm.gateway.pid != old_pid
        with swarm.client() as gw:
            wait_for(lambda: all(ns.alive for ns in gw.status().node_status), what="status")
            res = gw.infer(x[1])
            assert res.status == 0 and not res.degraded
            assert np.array_equal(np.frombuffer(res.output, np.int8), qref.run_swarm(nodes, x[1]))
        pids = swarm.pids()
    assert all(gone(p) for p in pids)


def test_swarm_survives_garbage_and_foreign_stations(exports, tmp_path: Path) -> None:
    d = exports[4]
    x = _inputs(d, 2)
    nodes = [n.runtime() for n in export.load_partition(d)]
    with Swarm(d, workdir=tmp_path) as swarm, swarm.client() as gw:
        junk = RawStation(swarm.medium_port, None)
        junk.send(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
        foreign = RawStation(swarm.medium_port, 0, nodes=4, tag=swarm.tag ^ 1, token=swarm.token)
        foreign.send(stream.encode(stream.AIR, _column(0)))
        # issue 11 row 3: a SimHello without this run's token, with an existing node id or the
        # gateway's (-1), evicts nobody: refused, counted, its connection closed
        intruders = [RawStation(swarm.medium_port, k, nodes=4, tag=swarm.tag) for k in (2, -1)]
        intruders.append(RawStation(swarm.medium_port, 3, nodes=4, tag=swarm.tag, token=b"x"))
        for bad in intruders:
            bad.poll(0.5)
            assert bad.sock.recv(1) == b""  # closed by the medium
        for i in range(2):
            res = gw.infer(x[i])
            assert res.status == 0 and not res.degraded
            assert np.array_equal(np.frombuffer(res.output, np.int8), qref.run_swarm(nodes, x[i]))
        swarm.check_alive()
        junk.sock.close()
        foreign.sock.close()
    c = _counters(swarm.log)
    assert c["foreign_station"] >= 1 and c["stream_skipped_bytes"] > 0
    assert c["bad_token"] == 3


def test_ctrl_c_leaves_no_orphans(exports, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        cats_sim_argv(exports[4], tmp_path, "--inferences", "100000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        # the medium, 4 nodes and the gateway are up once the gateway has logged "ready"
        wait_for(
            lambda: (
                (tmp_path / "gateway.log").is_file()
                and "ready" in (tmp_path / "gateway.log").read_text()
            ),
            timeout=30,
            what="the swarm to start",
        )
        time.sleep(0.3)
        kids = descendants(proc.pid)
        assert len(kids) >= 6
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    wait_for(lambda: all(gone(p) for p in kids), timeout=5, what="children to end")


def _cats_sim_json(directory: Path, tmp_path: Path, *extra: str) -> dict:
    """Run `cats sim --json` as a process on an export and return its result."""
    out = subprocess.run(
        cats_sim_argv(directory, tmp_path, "--inferences", "2", *extra),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_cats_sim_cli_json(exports, tmp_path: Path) -> None:
    res = _cats_sim_json(exports[4], tmp_path, "--loss", "iid:0.05", "--seed", "2")
    for key in ("bit_exact", "air_bytes", "frames_lost", "modelled_latency_s", "wall_s", "mse"):
        assert key in res
    assert res["bit_exact"] is True and res["dataset"] == "seattle-sf-temps"


def test_cats_sim_cli_paper_loss(exports, tmp_path: Path) -> None:
    """`cats sim --loss paper:x`: the paper's loss model on the C swarm, whole messages lost."""
    res = _cats_sim_json(exports[8], tmp_path, "--loss", "paper:0.2", "--seed", "1")
    assert res["bit_exact"] is True and res["frames_lost"] > 0 and res["loss"] == "paper:0.2"
    drops = [r for r in replay.read_log(Path(res["log"])) if r.get("event") == "drop"]
    assert drops and {r["cause"] for r in drops} == {"paper"}


@pytest.mark.bitexact
def test_cats_export_and_sim_paper_blocks(tmp_path: Path) -> None:
    """io = paper end to end on the command line: `cats export --io paper` of an untrained
    preset, then `cats sim` (test windows with their padding flags, C nodes exchanging the
    input columns in exchange 0) bit-exact with qref, clean and with lost frames."""
    from cats.cli import main

    build_executables()
    part = tmp_path / "paper"
    argv = ["export", "--preset", "test", "--io", "paper", "--io-hidden", "20", "--nodes", "4"]
    assert main([*argv, "--init-seed", "5", "--out", str(part), "--json"]) == 0
    cfg = export.load_node(part / "node-0").spec.cfg
    assert (cfg.io, cfg.io_hidden, cfg.exchanges) == ("paper", 20, 4 * cfg.blocks + 4)
    clean = _cats_sim_json(part, tmp_path / "clean")
    assert clean["bit_exact"] is True and clean["frames_lost"] == 0 and np.isfinite(clean["mse"])
    assert all(r["slots"] == cfg.exchanges for r in clean["per_inference"])
    lossy = _cats_sim_json(part, tmp_path / "lossy", "--loss", "iid:0.2", "--seed", "4")
    assert lossy["bit_exact"] is True and lossy["frames_lost"] > 0
    outs = [[r["output"] for r in res["per_inference"]] for res in (clean, lossy)]
    assert outs[0] != outs[1]  # the lost columns changed the result, and the replay matched it


def test_gateway_client_over_a_serial_port() -> None:
    """GatewayClient on serial:///dev/pts/N (a pty standing in for a USB-CDC gateway)."""
    import select
    import threading
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    stop = threading.Event()

    def fake_gateway() -> None:
        dec = stream.Decoder()
        while not stop.is_set():
            if not select.select([master], [], [], 0.05)[0]:
                continue
            for _kind, payload in dec.feed(os.read(master, 4096)):
                msg = pb().GatewayMessage.FromString(payload)
                if msg.WhichOneof("msg") == "status_request":
                    reply = pb().GatewayMessage(swarm_status=pb().SwarmStatus(nodes=3))
                else:
                    req = msg.infer_request
                    res = pb().InferResult(request_id=req.request_id, output=req.input[::-1])
                    reply = pb().GatewayMessage(infer_result=res)
                os.write(
                    master, b"\x00junk" + stream.encode(stream.GATEWAY, reply.SerializeToString())
                )

    th = threading.Thread(target=fake_gateway, daemon=True)
    th.start()
    from cats.sim.gateway_client import GatewayClient

    try:
        with GatewayClient(f"serial://{path}?baud=115200", timeout=5) as gw:
            assert gw.status().nodes == 3
            res = gw.infer(np.arange(10, dtype=np.int8), request_id=7)
            assert res.request_id == 7 and res.output == bytes(range(9, -1, -1))
    finally:
        stop.set()
        th.join()
        os.close(master)
        os.close(slave)
