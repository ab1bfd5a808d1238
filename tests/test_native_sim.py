"""A Zephyr node image built for native_sim joins the simulated swarm over its PTY UART:
the serial relay (cats.sim.pty_link) over real PTYs against a real medium, the swarm with an
external station (always, with a stand-in for native_sim: tests/_fake_native_sim.py), and the
real native_sim build of samples/node as node 0 of a 4-node swarm (with a Zephyr tree only)."""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from _helpers import cats_sim_argv, descendants, gone, wait_for

from cats.artefacts import export
from cats.base.paths import REPO_ROOT
from cats.model.partition import Partition
from cats.quant import qref
from cats.sim import pty_link, replay
from cats.sim.run import native_sim_nodes, simulate
from cats.sim.swarm import Swarm, build_executables
from cats.wire import auth, stream
from cats.wire.proto import pb

TAG = 0x1234ABCD
FAKE = Path(__file__).resolve().parent / "_fake_native_sim.py"
SAMPLE = REPO_ROOT / "cats_zephyr_module" / "samples" / "node"
# bytes a cooked terminal would eat or change: CR, LF, ^C, ^D, XON, XOFF, ^Z, DEL, 0xFF, NUL
AWKWARD = b"\r\n\x03\x04\x11\x13\x1a\x7f\xff\x00\\"


def _events(log: Path, event: str) -> list[dict]:
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == event:
            out.append(rec)
    return out


def _column(payload: bytes) -> bytes:
    """A ColumnFrame (v2: the sender is the station that sends it, not in the message)."""
    cf = pb().ColumnFrame(inference_id=1, exchange=0, payload=payload)
    return bytes([stream.AIR_COLUMN]) + cf.SerializeToString() + bytes(8)  # + a MIC


def _hello(node_id: int, nodes: int = 2) -> bytes:
    msg = pb().SimHello(node_id=node_id, nodes=nodes, partition_tag=TAG, mtu=115)
    return stream.encode(stream.HELLO, msg.SerializeToString())


@pytest.fixture()
def medium(tmp_path: Path):
    """A real medium process for two nodes; yields (port, log path)."""
    log = tmp_path / "medium.jsonl"
    argv = [sys.executable, "-m", "cats.sim.medium", "--port", "0", "--nodes", "2",
            "--tag", hex(TAG), "--log", str(log)]  # fmt: skip
    med = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        line = med.stdout.readline().strip()
        assert line.startswith("ready port="), line
        yield int(line.split("=")[1]), log
    finally:
        med.send_signal(signal.SIGTERM)
        med.wait(10)


def _station_pty() -> tuple[int, int, str]:
    """(master, slave, slave path) in raw mode, as native_sim leaves its link UART's PTY."""
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def _read_messages(fd: int, want: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    dec = stream.Decoder()
    got: list[tuple[int, bytes]] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        try:
            got += dec.feed(os.read(fd, 4096))
        except BlockingIOError:
            time.sleep(0.01)
    assert dec.bad_crc == 0 and dec.skipped == 0
    return got


# ----------------------------------------------------------------------------------------------
# The relay (always)
# ----------------------------------------------------------------------------------------------


def test_find_pty_and_addresses() -> None:
    out = (
        "uart connected to pseudotty: /dev/pts/4\n"
        "uart_1 connected to pseudotty: /dev/pts/5\n"
        "*** Booting Zephyr OS build v4.3.0 ***\n"
    )
    assert pty_link.find_pty(out) == "/dev/pts/5"
    assert pty_link.find_pty(out, "uart") == "/dev/pts/4"
    assert pty_link.find_pty(out.splitlines()[0]) is None
    assert pty_link.parse_address("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert pty_link.parse_address(":4000") == ("127.0.0.1", 4000)
    with pytest.raises(ValueError):
        pty_link.parse_address("localhost")
    assert native_sim_nodes(["0=build/ns/zephyr/zephyr.exe"]) == {
        0: "native_sim:build/ns/zephyr/zephyr.exe"
    }
    for bad in ("build/ns/zephyr/zephyr.exe", "x=zephyr.exe", "0="):
        with pytest.raises(ValueError):
            native_sim_nodes([bad])


def _tcp_station(port: int, node_id: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_hello(node_id))
    return sock


def _recv_messages(sock: socket.socket, want: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    dec = stream.Decoder()
    got: list[tuple[int, bytes]] = []
    sock.settimeout(timeout)
    while len(got) < want:
        data = sock.recv(4096)
        assert data, "the medium closed the connection"
        got += dec.feed(data)
    return got


def test_relay_over_a_pty_pair(medium) -> None:
    """A station on a PTY (its SimHello written before the relay opened the slave, as
    native_sim's node does at boot) and a TCP station exchange frames through the medium;
    every byte passes unchanged both ways; stop() leaves no thread and the medium sees the
    station leave."""
    port, log = medium
    master, slave, path = _station_pty()
    threads = threading.active_count()
    try:
        os.write(master, _hello(0))  # before the relay runs
        link = pty_link.PtyLink(path, f"127.0.0.1:{port}").start()
        os.close(slave)  # the relay holds its own descriptor of the slave now
        slave = -1
        peer = _tcp_station(port, 1)
        wait_for(lambda: len(_events(log, "join")) == 2, what="both stations to join")
        assert {r["station"] for r in _events(log, "join")} == {0, 1}
        mine, theirs = _column(AWKWARD * 4), _column(AWKWARD[::-1] * 4)
        os.write(master, b"\x00noise" + stream.encode(stream.AIR, mine))
        got = _recv_messages(peer, 1)
        assert got == [(stream.AIR, b"\x00" + mine)]  # stamped with its link source
        peer.sendall(stream.encode(stream.AIR, theirs))  # ends the slot: frame + SlotEnd
        got = _read_messages(master, 2)
        assert got[0] == (stream.AIR, b"\x01" + theirs)
        end = pb().SlotEnd.FromString(got[1][1])
        assert got[1][0] == stream.SLOT_END and (end.frames_sent, end.exchange) == (2, 0)
        link.stop()
        assert link.reason == "stopped" and threading.active_count() == threads
        assert link.bytes_to_medium == len(_hello(0)) + 6 + len(stream.encode(stream.AIR, mine))
        assert link.bytes_to_device == sum(len(stream.encode(t, m)) for t, m in got)
        wait_for(lambda: any(r["station"] == 0 for r in _events(log, "leave")), what="the leave")
        peer.close()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_relay_through_pyserial(medium, monkeypatch) -> None:
    """A device that is not a pty is opened with pyserial and its settings (here a pty taken
    for one): bytes pass unchanged both ways."""
    port, log = medium
    monkeypatch.setattr(pty_link, "is_pty", lambda path: False)
    master, slave, path = _station_pty()
    try:
        with pty_link.PtyLink(path, ("127.0.0.1", port), baud=1000000, parity="E") as link:
            assert link._serial is not None and link._serial.baudrate == 1000000
            peer = _tcp_station(port, 1)
            os.write(master, _hello(0))  # pyserial flushed what came before it opened
            wait_for(lambda: len(_events(log, "join")) == 2, what="both stations to join")
            mine, theirs = _column(AWKWARD), _column(AWKWARD * 2)
            os.write(master, stream.encode(stream.AIR, mine))
            assert _recv_messages(peer, 1) == [(stream.AIR, b"\x00" + mine)]
            peer.sendall(stream.encode(stream.AIR, theirs))
            assert _read_messages(master, 2)[0] == (stream.AIR, b"\x01" + theirs)
            peer.close()
    finally:
        os.close(master)
        os.close(slave)


def _relay_process(path: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cats.sim.pty_link", "--device", path,
         "--medium", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith(f"ready device={path} medium=127.0.0.1:{port}"), line
    return proc


@pytest.mark.parametrize("end", ["station exits", "SIGTERM"])
def test_relay_process_ends_cleanly(medium, end: str) -> None:
    """`python -m cats.sim.pty_link` relays until the station's side of the PTY closes (the
    node image exited) or until SIGTERM, then exits 0 with its counts, and the medium sees the
    station leave."""
    port, log = medium
    master, slave, path = _station_pty()
    try:
        os.write(master, _hello(1))
        proc = _relay_process(path, port)
        os.close(slave)
        slave = -1
        wait_for(lambda: [r["station"] for r in _events(log, "join")] == [1], what="the join")
        if end == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.close(master)
            master = -1
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        why = "signal" if end == "SIGTERM" else "device closed"
        assert f"pty_link: {why}; {len(_hello(1))} bytes to the medium" in err
        wait_for(lambda: any(r["station"] == 1 for r in _events(log, "leave")), what="the leave")
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


def test_relay_reports_a_missing_device_or_medium(tmp_path: Path) -> None:
    with pytest.raises(pty_link.LinkError):
        pty_link.PtyLink(tmp_path / "nope", "127.0.0.1:1").start()
    master, slave, path = _station_pty()
    try:
        with pytest.raises(pty_link.LinkError, match="medium"):
            pty_link.PtyLink(path, "127.0.0.1:1", connect_timeout=0.2).start()
    finally:
        os.close(master)
        os.close(slave)


# ----------------------------------------------------------------------------------------------
# Swarms with an external station
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export4(tmp_path_factory) -> Path:
    """The untrained `test` preset exported for D = 4, and the host executables."""
    build_executables()
    part = tmp_path_factory.mktemp("native-sim") / "d4"
    _, qm = export.untrained("test", 0)
    export.export_partition(qm, Partition.full(qm.cfg, 4), part)
    return part


def _inputs(part: Path, k: int) -> np.ndarray:
    cfg = export.load_node(part / "node-0").spec.cfg
    rng = np.random.default_rng(7)
    return rng.integers(-100, 100, size=(k, cfg.tokens, cfg.patch), dtype=np.int8)


def _key(part: Path) -> Path:
    """The swarm key the stand-ins are "built" with (the swarm must use the same)."""
    return auth.key_file(None, part.parent)


def _fake_spec(part: Path, d: int) -> str:
    exe = build_executables() / "cats_node_sim"
    argv = [sys.executable, str(FAKE), "--exe", str(exe), "--node-dir", str(part / f"node-{d}"),
            "--key-file", str(_key(part))]  # fmt: skip
    return "native_sim:" + shlex.join(argv)


@pytest.mark.bitexact
def test_cats_sim_native_sim_option_with_a_stand_in(export4: Path, tmp_path: Path) -> None:
    """`cats sim --native-sim 0=...` with tests/_fake_native_sim.py as node 0's image: PTY named
    on stdout, SimHello buffered in the PTY before the relay opens it, bit-exact results."""
    spec = _fake_spec(export4, 0).removeprefix("native_sim:")
    out = subprocess.run(
        cats_sim_argv(export4, tmp_path, "--inferences", "2", "--native-sim", f"0={spec}",
                      "--key-file", str(_key(export4))),
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["ok"] and res["bit_exact"], res["per_inference"]
    assert res["external_nodes"] == {"0": _fake_spec(export4, 0)}
    assert "uart_1 connected to pseudotty: /dev/pts/" in (tmp_path / "node-0.log").read_text()
    link_log = (tmp_path / "node-0-link.log").read_text()
    assert link_log.startswith("ready device=/dev/pts/") and "bytes to the medium" in link_log


@pytest.mark.bitexact
def test_swarm_external_station_kill_and_restart(export4: Path, tmp_path: Path) -> None:
    """Swarm(external=...): node 0 (the stand-in) answers bit-exact, dies (SIGKILL: its relay
    ends, the medium reports it dead, the next inference is degraded without it), comes back,
    answers bit-exact again; stop() leaves no process behind."""
    nodes = [n.runtime() for n in export.load_partition(export4)]
    x = _inputs(export4, 3)
    swarm = Swarm(export4, workdir=tmp_path, external={0: _fake_spec(export4, 0)},
                  key_file=_key(export4))  # fmt: skip
    kids: set[int] = set()
    with pytest.raises(ValueError):
        Swarm(export4, workdir=tmp_path, external={4: _fake_spec(export4, 0)})
    try:
        swarm.start()
        assert swarm.node[0].relay is not None
        with swarm.client() as gw:
            res = gw.infer(x[0], request_id=1, partition_hash=swarm.partition_hash)
            assert res.status == 0 and not res.degraded
            got = np.frombuffer(res.output, dtype=np.int8)
            assert np.array_equal(got, qref.run_swarm(nodes, x[0]))
            relay = swarm.node[0].relay
            swarm.kill_node(0)
            relay.popen.wait(10)  # the relay ends by itself once the station's PTY closed
            wait_for(lambda: not gw.status().node_status[0].alive, what="node 0 reported dead")
            assert any(r.get("station") == 0 for r in _events(swarm.log, "leave"))
            res = gw.infer(x[1], request_id=2, partition_hash=swarm.partition_hash)
            assert res.degraded and list(res.missing_nodes) == [0]
            specs = [n.spec for n in nodes]
            lost = {
                e: {r: set(specs[0].exchanges[e].kept_cols.tolist()) for r in (1, 2, 3)}
                for e in range(specs[0].cfg.exchanges)
            }
            ref = replay.replay(nodes, x[1], lost, missing=[0])
            assert np.array_equal(np.frombuffer(res.output, dtype=np.int8), ref)
            swarm.restart_node(0)
            assert (tmp_path / "node-0.1.log").is_file()
            assert (tmp_path / "node-0-link.1.log").is_file()
            wait_for(lambda: gw.status().node_status[0].alive, what="node 0 alive again")
            res = gw.infer(x[2], request_id=3, partition_hash=swarm.partition_hash)
            assert res.status == 0 and not res.degraded
            got = np.frombuffer(res.output, dtype=np.int8)
            assert np.array_equal(got, qref.run_swarm(nodes, x[2]))
        kids = descendants(os.getpid())
        assert len(kids) >= 8  # medium, 3 nodes, gateway, stand-in + its node, relay
    finally:
        swarm.stop()
    wait_for(lambda: all(gone(p) for p in kids), timeout=10, what="every child to end")


@pytest.mark.bitexact
def test_swarm_serial_station(export4: Path, tmp_path: Path) -> None:
    """Swarm(external={d: "serial:PATH"}): only the relay, to a station started elsewhere
    (the stand-in, whose PTY is read from its output as a person would)."""
    station = subprocess.Popen(
        [sys.executable, *shlex.split(_fake_spec(export4, 3).removeprefix("native_sim:"))[1:]],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        text = station.stdout.readline() + station.stdout.readline()
        device = pty_link.find_pty(text)
        assert device is not None, text
        nodes = [n.runtime() for n in export.load_partition(export4)]
        x = _inputs(export4, 1)[0]
        with Swarm(export4, workdir=tmp_path, external={3: f"serial:{device}"},
                   key_file=_key(export4)) as swarm:  # fmt: skip
            assert swarm.node[3].station is None
            with swarm.client() as gw:
                res = gw.infer(x, partition_hash=swarm.partition_hash)
            assert res.status == 0 and not res.degraded
            assert np.array_equal(np.frombuffer(res.output, np.int8), qref.run_swarm(nodes, x))
        assert (tmp_path / "node-3-link.log").read_text().startswith(f"ready device={device}")
    finally:
        station.terminate()
        station.wait(10)


# ----------------------------------------------------------------------------------------------
# The real thing: samples/node built for native_sim (only with a Zephyr tree)
# ----------------------------------------------------------------------------------------------

ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")
WEST = shutil.which("west")


def _toolchain() -> bool:
    """A toolchain Zephyr can use for native_sim: the SDK (its env variable, its CMake package
    registration or a usual install directory) or an explicit ZEPHYR_TOOLCHAIN_VARIANT."""
    if os.environ.get("ZEPHYR_TOOLCHAIN_VARIANT") or os.environ.get("ZEPHYR_SDK_INSTALL_DIR"):
        return True
    home = Path.home()
    if (home / ".cmake" / "packages" / "Zephyr-sdk").is_dir():
        return True
    return bool(glob.glob(str(home / "zephyr-sdk-*")) + glob.glob("/opt/zephyr-sdk-*"))


def _zephyr_missing() -> str | None:
    if not (ZEPHYR_BASE and Path(ZEPHYR_BASE, "CMakeLists.txt").is_file()):
        return "ZEPHYR_BASE is not set to a Zephyr 4.x tree (west.yml pins v4.3.0)"
    if WEST is None:
        return "`west` is not on PATH"
    if not _toolchain():
        return "no Zephyr SDK (ZEPHYR_SDK_INSTALL_DIR) or ZEPHYR_TOOLCHAIN_VARIANT"
    return None


@pytest.mark.bitexact
@pytest.mark.skipif(
    _zephyr_missing() is not None,
    reason=f"native_sim node in the swarm needs a Zephyr build: {_zephyr_missing()}",
)
def test_native_sim_node_in_a_swarm(export4: Path, tmp_path: Path) -> None:
    """samples/node for native_sim with node-0 of a D = 4 export, run as node 0 of the swarm
    (nodes 1-3 cats_node_sim): every inference bit-exact with cats.quant.qref."""
    build = tmp_path / "ns"
    key = _key(export4)  # the image is provisioned with the swarm's key, as west cats-build does
    subprocess.run(
        [WEST, "build", "-p", "always", "-b", "native_sim", "-d", str(build), str(SAMPLE), "--",
         f"-DCATS_PARTITION_DIR={export4}", "-DCATS_NODE_ID=0",
         f'-DCONFIG_CATS_SWARM_KEY="{auth.load_key(key).hex()}"'],
        check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    exe = build / "zephyr" / "zephyr.exe"
    assert exe.is_file()
    work = tmp_path / "swarm"
    res = simulate(
        export4,
        inputs=_inputs(export4, 3),
        workdir=work,
        external={0: f"native_sim:{exe}"},
        key_file=key,
    )
    assert res["ok"] and res["bit_exact"], res["per_inference"]
    assert res["degraded"] == 0
    log = (work / "node-0.log").read_text()
    assert "uart_1 connected to pseudotty" in log and "sim: medium on uart_1" in log
