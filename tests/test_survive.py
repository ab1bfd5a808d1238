"""Issue 11, "Serving that survives", at the swarm level (no ROS; tests/test_ros_serve.py has
the bridge's side): the gateway's bridge port against bad clients (slow reader, queue hog,
idle sockets, strangers without the run's token, a deadline that wrapped), lost columns that
make a result degraded, a hung node left out of the wait, and the supervisor restarting
killed processes. Each scenario is seconds; bench/chaos runs them together for minutes."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import untrained_export, wait_for

from cats.artefacts import export
from cats.sim.gateway_client import GatewayClient
from cats.sim.swarm import Supervisor, Swarm
from cats.wire import stream
from cats.wire.proto import pb


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    """An untrained `test` export for D = 4."""
    return untrained_export(tmp_path_factory.mktemp("survive") / "d4")


def _inputs(directory: Path, k: int, seed: int = 0) -> np.ndarray:
    cfg = export.load_node(directory / "node-0").spec.cfg
    rng = np.random.default_rng(seed)
    return rng.integers(-100, 100, size=(k, cfg.tokens, cfg.patch), dtype=np.int8)


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _msg(**kw) -> bytes:
    return stream.encode(stream.GATEWAY, pb().GatewayMessage(**kw).SerializeToString())


def _hello(token: bytes) -> bytes:
    return _msg(client_hello=pb().ClientHello(token=token))


def _request(rid: int, x: np.ndarray, deadline_ms: int = 0) -> bytes:
    req = pb().InferRequest(request_id=rid, input=x.tobytes(), deadline_ms=deadline_ms)
    return _msg(infer_request=req)


def test_bad_clients_do_not_stall_the_gateway(part, tmp_path) -> None:
    """Rows 2, 5, 10, 11 and the gateway's admission: a client that never reads its replies is
    dropped (the gateway never blocks); one that keeps the queue full cannot keep another
    client out; 40 idle sockets do not lock new clients out; deadline_ms = 3e9 is refused as out
    of range (it wrapped to -106); a client without the run's token is refused (-109), one with
    a wrong token disconnected."""
    x = _inputs(part, 3)
    with Swarm(part, workdir=tmp_path, deadline_ms=3000) as swarm, swarm.client() as gw:
        port = swarm.gateway_port
        # a stranger: refused, and a wrong token ends the connection
        stranger = _raw(port)
        stranger.sendall(_msg(status_request=pb().StatusRequest()))
        dec = stream.Decoder()
        got: list = []
        while not got:
            got = dec.feed(stranger.recv(65536))
        res = pb().GatewayMessage.FromString(got[0][1]).infer_result
        assert res.status == -109 and "token" in res.message
        wrong = _raw(port)
        wrong.sendall(_hello(b"not the token"))
        wrong.settimeout(3)
        assert wrong.recv(1) == b""
        # deadline_ms beyond 10 min: a clear error, not -106 at once
        res = gw.infer(x[0], deadline_ms=3_000_000_000)
        assert res.status == -108 and "deadline_ms" in res.message
        # 40 idle sockets (the cap was 32, with no idle timeout)
        idle = [_raw(port) for _ in range(40)]
        for s in idle:
            s.sendall(_hello(swarm.token))
        time.sleep(1.2)
        with swarm.client(timeout=10) as fresh:
            assert fresh.status().nodes == 4
        # a slow reader: StatusRequests as fast as it can, never reading the replies
        slow = _raw(port)
        slow.sendall(_hello(swarm.token))
        slow.setblocking(False)
        ask = _msg(status_request=pb().StatusRequest()) * 64
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 5.0:
            try:
                sent += slow.send(ask)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break  # the gateway dropped it
        t1 = time.monotonic()
        res = gw.infer(x[1], timeout=5)
        assert res.status == 0 and time.monotonic() - t1 < 2.0
        # a queue hog: 20 requests at once; another client still gets its turn
        hog = GatewayClient(swarm.endpoint, timeout=30, token=swarm.token)
        hog_ids = [hog.submit(x[2]) for _ in range(20)]
        time.sleep(0.05)
        res = gw.infer(x[0], timeout=10)
        assert res.status == 0, res.message
        statuses = [hog.result(r, timeout=30).status for r in hog_ids]
        assert set(statuses) <= {0, -104} and 0 in statuses
        hog.close()
        for s in [*idle, slow, stranger, wrong]:
            s.close()
        swarm.check_alive()
    log = (tmp_path / "gateway.log").read_text()
    assert "slow reader" in log and "wrong token" in log


def test_lost_columns_make_a_result_degraded(part, tmp_path) -> None:
    """Row 8: with every remote frame lost (iid:1.0) no result is "ok": each is degraded, with
    the fraction of expected columns missing; without loss, complete and ok."""
    x = _inputs(part, 2)
    with Swarm(part, workdir=tmp_path / "a", loss="iid:1.0") as swarm, swarm.client() as gw:
        res = gw.infer(x[0])
        assert res.status == 0 and res.degraded and not res.missing_nodes
        assert res.missing_fraction > 0.5 and "columns missing" in res.message
    with Swarm(part, workdir=tmp_path / "b") as swarm, swarm.client() as gw:
        res = gw.infer(x[1])
        assert res.status == 0 and not res.degraded and res.missing_fraction == 0.0
        assert res.message == "ok"


def test_hung_node_is_left_out_of_the_wait(part, tmp_path) -> None:
    """Row 6: a node stopped (SIGSTOP) but connected is reported not alive once it missed its
    slot, and later inferences do not wait for it (they took the full deadline each)."""
    x = _inputs(part, 4)
    with Swarm(part, workdir=tmp_path, slot_timeout=0.5) as swarm, swarm.client() as gw:
        swarm.node[2].signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            res = gw.infer(x[0])
            assert time.monotonic() - t0 < 3.0  # the deadline is 10 s
            assert res.degraded and list(res.missing_nodes) == [2]
            assert not gw.status().node_status[2].alive
            t0 = time.monotonic()
            res = gw.infer(x[1])
            assert time.monotonic() - t0 < 1.0 and list(res.missing_nodes) == [2]
        finally:
            swarm.node[2].signal(signal.SIGCONT)
        wait_for(lambda: gw.status().node_status[2].alive, what="node 2 heard again")
        res = gw.infer(x[2])
        assert res.status == 0 and not res.degraded


def test_supervisor_restarts_what_dies(part, tmp_path) -> None:
    """Row 1 at the swarm level: a node, the gateway and the medium killed with SIGKILL are
    restarted and rejoin; inferences are complete again after each."""
    x = _inputs(part, 1)
    events: list[str] = []
    with Swarm(part, workdir=tmp_path) as swarm:
        sup = Supervisor(swarm, events.append).start()
        try:
            for victim in ("node-3", "gateway", "medium"):
                proc = {"node-3": swarm.node[3], "gateway": swarm.gateway}.get(victim)
                proc = proc or swarm.medium
                proc.signal(signal.SIGKILL)
                wait_for(lambda v=victim: f"{v} is back" in events, 20.0, f"{victim} back")

                def complete() -> bool:
                    try:
                        with swarm.client(timeout=5) as gw:
                            res = gw.infer(x[0])
                        return res.status == 0 and not res.degraded
                    except Exception:
                        return False

                wait_for(complete, 15.0, f"a complete result after {victim}")
        finally:
            sup.stop()
    assert sup.restarts == {"node-3": 1, "gateway": 1, "medium": 1}


def test_bridge_link_waits_out_a_busy_gateway(part, tmp_path) -> None:
    """Row 5 from the bridge's side: while a raw client keeps the gateway's queue full, the
    bridge's requests are served (its fair share), not refused "gateway busy": a busy reply
    puts the request back in the bridge's queue until a place frees."""
    from cats_bridge.gateway_link import GatewayLink

    x = _inputs(part, 1)[0]
    with Swarm(part, workdir=tmp_path) as swarm:
        link = GatewayLink(swarm.endpoint, token=swarm.token, status_period_s=0.2).start()
        hog = GatewayClient(swarm.endpoint, timeout=60, token=swarm.token)
        try:
            wait_for(lambda: link.ready, what="the link connected")
            hog_ids = [hog.submit(x) for _ in range(12)]
            futures = [link.submit(x.tobytes(), timeout_s=30) for _ in range(6)]
            results = [f.result(timeout=40) for f in futures]
            assert [r.status for r in results] == [0] * 6, [r.message for r in results]
            hog_status = [hog.result(r).status for r in hog_ids]
            assert -104 in hog_status  # the hog did overflow the queue
        finally:
            hog.close()
            link.stop()


def test_node_back_during_an_inference_is_not_waited_for(part, tmp_path) -> None:
    """A node restarted while an inference runs missed its input: the gateway does not wait
    for it until the deadline (it did: every call stalled ~10 s after a supervised restart)."""
    x = _inputs(part, 2)
    with (
        Swarm(part, workdir=tmp_path, slot_timeout=1.0, deadline_ms=10000) as swarm,
        swarm.client() as gw,
    ):
        swarm.node[0].signal(signal.SIGSTOP)  # keeps the inference running for a slot timeout
        try:
            t0 = time.monotonic()
            rid = gw.submit(x[0])
            time.sleep(0.2)
            swarm.kill_node(2)
            swarm.restart_node(2)
            res = gw.result(rid)
            assert time.monotonic() - t0 < 6.0
            assert res.degraded and 2 in res.missing_nodes
        finally:
            swarm.node[0].signal(signal.SIGCONT)
        wait_for(lambda: all(n.alive for n in gw.status().node_status), what="all alive")
        res = gw.infer(x[1])
        assert res.status == 0 and not res.degraded
