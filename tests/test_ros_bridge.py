"""The ROS 2 bridge (cats_ros/cats_bridge) against the simulated swarm, over real Fast DDS.

The swarm (medium, C nodes, C gateway) runs from this process (so a test can kill and restart
the gateway or stop a node), the bridge in a process of its own (``python -m cats_bridge``),
and the client in this process with its own rclpy context. Every test has its own
ROS_DOMAIN_ID; discovery stays on localhost."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

try:
    import rclpy
    from cats_interfaces.action import Infer as InferAction
    from cats_interfaces.msg import SwarmStatus
    from cats_interfaces.srv import Infer
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
except ImportError as exc:  # pragma: no cover - setup installs them; CI must run these tests
    if os.environ.get("CI"):
        raise
    pytest.skip(
        f"ROS 2 Python packages not importable ({exc}); scripts/setup.sh installs rclpy and "
        "builds cats_interfaces",
        allow_module_level=True,
    )

from _helpers import descendants, gone
from cats_bridge import codec
from cats_bridge.partition_info import PartitionInfo

from cats.artefacts import export
from cats.base.paths import REPO_ROOT
from cats.model.partition import Partition
from cats.quant import qref
from cats.sim.run import revin_int8
from cats.sim.swarm import Swarm, build_executables

ROS_ENV = {
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}
_domains = itertools.count(10 + os.getpid() % 40)
SERVICE = "/cats_bridge/infer"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Two untrained `test` exports for D = 4 (different weights, so different hashes)."""
    build_executables()
    base = tmp_path_factory.mktemp("ros-exports")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        _, qm = export.untrained("test", seed)
        export.export_partition(qm, Partition.full(qm.cfg, 4), base / name)
        out[name] = base / name
    return out


@pytest.fixture
def domain(monkeypatch) -> int:
    """A ROS_DOMAIN_ID of this test's own (and Fast DDS, localhost discovery, here too)."""
    for k, v in ROS_ENV.items():
        monkeypatch.setenv(k, v)
    return next(_domains)


def windows(context: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(context)
    base = 10 + 3 * np.sin(2 * np.pi * t / 17)[None, :]
    return (base + rng.normal(0, 1, (k, context)).cumsum(1) * 0.3).astype(np.float32)


def reference(export_dir: Path, x: np.ndarray) -> np.ndarray:
    """What the bridge must answer: cats sim's RevIN + int8 input, the integer swarm (qref)
    on the loaded export, the output dequantised and de-normalised."""
    loaded = export.load_partition(export_dir)
    cfg, man = loaded[0].spec.cfg, loaded[0].manifest
    q, mu, sd = revin_int8(cfg, x, float(man.input_scale))
    nodes = [n.runtime() for n in loaded]
    y = np.stack([qref.run_swarm(nodes, q[i]) for i in range(len(x))]).astype(np.float64)
    return y * float(man.output_scale) * sd + mu


@contextmanager
def bridge(
    endpoint: str,
    partition_dir: Path,
    domain: int,
    log: Path,
    command: list[str] | None = None,
    token: bytes = b"",
    **params: Any,
) -> Iterator[subprocess.Popen]:
    """`python -m cats_bridge` (or `command`: tests/test_colcon.py's installed entry point) in
    its own process, with the swarm's admission token in CATS_SIM_TOKEN; SIGINT on exit, which
    must end it cleanly."""
    args = {"gateway": endpoint, "partition_dir": str(partition_dir), "status_period_s": 0.2}
    args.update(params)
    argv = [*(command or [sys.executable, "-m", "cats_bridge"]), "--ros-args"]
    for k, v in args.items():
        argv += ["-p", f"{k}:={v}"]
    env = {**os.environ, **ROS_ENV, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    env["CATS_SIM_TOKEN"] = token.hex()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("the bridge did not stop on SIGINT") from None
        assert proc.returncode == 0, log.read_text()


class Client:
    """A client node in this process, with its own context and executor."""

    def __init__(self, domain: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.srv = self.node.create_client(Infer, SERVICE)
        self.action = ActionClient(self.node, InferAction, SERVICE)

    def close(self) -> None:
        self.action.destroy()
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)

    def wait_service(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not self.srv.service_is_ready():
            assert time.monotonic() < end, "the bridge's service did not appear"
            self.executor.spin_once(timeout_sec=0.05)

    def until(self, fut: Any, timeout: float = 20.0) -> Any:
        self.executor.spin_until_future_complete(fut, timeout_sec=timeout)
        assert fut.done(), "no answer in time"
        return fut.result()

    def request(self, x: Any, shape: list[int] | None = None, partition_hash: str = "") -> Any:
        values = [float(v) for v in np.ravel(x)]
        return Infer.Request(
            input=values, shape=[len(values)] if shape is None else shape,
            partition_hash=partition_hash,
        )  # fmt: skip

    def call(self, x: Any, shape: list[int] | None = None, partition_hash: str = "") -> Any:
        return self.until(self.srv.call_async(self.request(x, shape, partition_hash)))

    def latest(self, msg_type: Any, topic: str, cond: Any = None, timeout: float = 10.0) -> Any:
        got: list[Any] = []
        sub = self.node.create_subscription(msg_type, topic, got.append, 10)
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self.executor.spin_once(timeout_sec=0.05)
                hits = [m for m in got if cond is None or cond(m)]
                if hits:
                    return hits[-1]
        finally:
            self.node.destroy_subscription(sub)
        raise AssertionError(f"no matching message on {topic}")


@contextmanager
def setup(
    exports: dict[str, Path], domain: int, tmp_path: Path, bridge_dir: str = "a", **kw: Any
) -> Iterator[tuple[Swarm, Client, subprocess.Popen, Path]]:
    swarm_kw = {k: kw.pop(k) for k in ("deadline_ms", "slot_timeout") if k in kw}
    log = tmp_path / "bridge.log"
    with (
        Swarm(exports["a"], workdir=tmp_path / "swarm", **swarm_kw) as swarm,
        bridge(swarm.endpoint, exports[bridge_dir], domain, log, token=swarm.token, **kw) as proc,
    ):
        client = Client(domain)
        try:
            client.wait_service()
            client.latest(SwarmStatus, "/cats_bridge/status", lambda m: m.connected)
            yield swarm, client, proc, log
        finally:
            client.close()


def test_codec_is_cats_sim_quantisation(exports) -> None:
    """The bridge's numpy RevIN + int8 is the same as `cats sim`'s (and predict_int8's)."""
    info = PartitionInfo.from_dir(exports["a"])
    cfg = export.load_node(exports["a"] / "node-0").spec.cfg
    x = windows(info.context, 16, seed=3) * np.float32(7.5) - np.float32(3)
    want, mu, sd = revin_int8(cfg, x, info.input_scale)
    for i in range(len(x)):
        data, m, s = codec.encode_input(x[i], info)
        assert np.frombuffer(data, np.int8).tobytes() == want[i].tobytes()
        assert (m, s) == (mu[i, 0], sd[i, 0])


def test_codec_paper_blocks_send_padding_flags(tmp_path) -> None:
    """io = paper: the bridge sends each token's patch and its (zero) padding flags, as the
    float model's RevIN and `cats sim` lay them out, and counts the io blocks' exchanges."""
    model, qm = export.untrained("test", 2, io="paper", io_hidden=20)
    export.export_partition(qm, Partition.full(qm.cfg, 2), tmp_path)
    info = PartitionInfo.from_dir(tmp_path)
    assert info.io == "paper" and info.exchanges == qm.cfg.exchanges
    x = windows(info.context, 4, seed=5)
    want, _, _ = revin_int8(qm.cfg, x, info.input_scale)
    patches = model.normalise(torch.from_numpy(x))[0].numpy()  # (K, N, 2P), flags 0
    assert np.array_equal(want, qref.quantize_input(patches, info.input_scale))
    for i in range(len(x)):
        data, _, _ = codec.encode_input(x[i], info)
        assert data == want[i].tobytes() and len(data) == info.tokens * 2 * info.patch


def test_service_status_and_diagnostics(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 3)
    want = reference(exports["a"], x)
    with setup(exports, domain, tmp_path) as (swarm, client, _, _):
        for i, shape in enumerate(([info.context], [1, info.context], [])):
            r = client.call(x[i], shape)
            assert r.success, r.message
            assert r.message == "ok"
            assert list(r.shape) == ([1, info.outputs] if len(shape) == 2 else [info.outputs])
            np.testing.assert_allclose(np.asarray(r.output), want[i], rtol=1e-5, atol=1e-5)
            assert r.air_bytes > 0 and r.modelled_latency_s > 0 and r.frames_lost == 0
            assert not r.degraded and list(r.missing_nodes) == []

        st = client.latest(SwarmStatus, "/cats_bridge/status", lambda m: m.inferences_served >= 3)
        assert st.connected and st.hash_ok
        assert st.partition_hash == st.expected_partition_hash == info.partition_hash
        assert st.nodes == 4 and [n.node for n in st.node_status] == [0, 1, 2, 3]
        assert all(n.alive and n.partition_hash == info.partition_hash for n in st.node_status)
        assert list(st.input_shape) == [info.context] and list(st.output_shape) == [16]
        assert (st.input_dtype, st.output_dtype, st.wire_dtype) == ("float32", "float32", "int8")
        assert st.bridge_requests_ok == 3 and st.bridge_queue_depth == 16
        diag = client.latest(DiagnosticArray, "/diagnostics")
        assert diag.status[0].name == "cats_bridge: gateway"
        assert diag.status[0].level == DiagnosticStatus.OK
        assert len(diag.status) == 1 + 4


def test_action_feedback_and_cancel(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 2, seed=1)
    want = reference(exports["a"], x)
    with setup(exports, domain, tmp_path, deadline_ms=4000, slot_timeout=2.0) as ctx:
        swarm, client, _, _ = ctx
        assert client.action.wait_for_server(timeout_sec=10)
        feedback: list[Any] = []
        goal = InferAction.Goal(input=x[0].tolist(), shape=[info.context])
        handle = client.until(client.action.send_goal_async(goal, feedback.append))
        assert handle.accepted
        res = client.until(handle.get_result_async())
        assert res.status == 4 and res.result.success, res.result.message  # SUCCEEDED
        np.testing.assert_allclose(np.asarray(res.result.output), want[0], rtol=1e-5, atol=1e-5)
        stages = [f.feedback.stage for f in feedback]
        assert stages[0] == "queued" and stages[-1] == "done", stages
        last = feedback[-1].feedback
        assert last.exchanges_total == info.exchanges == last.exchanges_done

        # a node that hangs (SIGSTOP) makes the inference wait for slot timeouts: cancel it
        swarm.node[2].signal(signal.SIGSTOP)
        try:
            feedback.clear()
            goal = InferAction.Goal(input=x[1].tolist(), shape=[info.context])
            handle = client.until(client.action.send_goal_async(goal, feedback.append))
            end = time.monotonic() + 5
            while not any(f.feedback.stage == "running" for f in feedback):
                assert time.monotonic() < end, "no 'running' feedback"
                client.executor.spin_once(timeout_sec=0.05)
            t0 = time.monotonic()
            assert client.until(handle.cancel_goal_async()).goals_canceling
            res = client.until(handle.get_result_async(), timeout=5)
            assert time.monotonic() - t0 < 1.0
            assert res.status == 5 and res.result.message == "cancelled"  # CANCELED
        finally:
            swarm.node[2].signal(signal.SIGCONT)
        # the swarm finishes the abandoned inference by its deadline; then it serves again
        end = time.monotonic() + 15
        while not (r := client.call(x[1])).success:
            assert time.monotonic() < end, r.message
        np.testing.assert_allclose(np.asarray(r.output), want[1], rtol=1e-5, atol=1e-5)


def test_ten_concurrent_requests(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 10, seed=2)
    want = reference(exports["a"], x)
    with setup(exports, domain, tmp_path) as (_, client, _, _):
        futures = [client.srv.call_async(client.request(w)) for w in x]
        end = time.monotonic() + 30
        while not all(f.done() for f in futures):
            assert time.monotonic() < end, "not every request was answered"
            client.executor.spin_once(timeout_sec=0.05)
        for i, f in enumerate(futures):
            r = f.result()
            assert r.success, r.message
            np.testing.assert_allclose(np.asarray(r.output), want[i], rtol=1e-5, atol=1e-5)


def test_bad_requests(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    ctx = info.context
    x = windows(ctx, 1)[0]
    nan, inf = x.copy(), x.copy()
    nan[5], inf[9] = np.nan, -np.inf
    cases = [
        (x, [ctx + 1], "input shape [65] is not supported"),
        (x, [2, ctx // 2], "input shape [2, 32] is not supported"),
        (x, [ctx, 1], "is not supported"),
        (x[:10], [ctx], "input has 10 values but its shape [64] needs 64"),
        (np.concatenate([x, x]), [ctx], "input has 128 values"),
        (np.zeros(0), [], "input shape [0] is not supported"),
        (nan, [ctx], "non-finite values (NaN or Inf), first at index 5"),
        (inf, [ctx], "first at index 9"),
    ]
    with setup(exports, domain, tmp_path) as (_, client, _, _):
        for values, shape, text in cases:
            r = client.call(values, shape)
            assert not r.success and r.message.startswith("bad request:"), r.message
            assert text in r.message, r.message
            assert list(r.output) == []
        r = client.call(x, partition_hash="xyz")
        assert not r.success and "64 hex digits" in r.message
        r = client.call(x, partition_hash="0" * 64)
        assert not r.success and "partition hash mismatch" in r.message
        r = client.call(x, partition_hash=info.partition_hash.upper())
        assert r.success, r.message


def test_queue_depth_bound(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 5)
    with setup(exports, domain, tmp_path, queue_depth=2, deadline_ms=1500) as ctx:
        swarm, client, _, _ = ctx
        swarm.node[1].signal(signal.SIGSTOP)  # inferences now wait for the deadline
        try:
            futures = [client.srv.call_async(client.request(w)) for w in x]
            end = time.monotonic() + 30
            while not all(f.done() for f in futures):
                assert time.monotonic() < end
                client.executor.spin_once(timeout_sec=0.05)
        finally:
            swarm.node[1].signal(signal.SIGCONT)
        msgs = [f.result().message for f in futures]
        full = [m for m in msgs if m.startswith("queue full")]
        assert len(full) == 3, msgs
        assert "queue_depth = 2" in full[0]


def test_gateway_down_and_back(exports, domain, tmp_path) -> None:
    info = PartitionInfo.from_dir(exports["a"])
    x = windows(info.context, 1)[0]
    with setup(exports, domain, tmp_path) as (swarm, client, _, log):
        assert client.call(x).success
        swarm.kill_gateway()
        end = time.monotonic() + 5
        while True:  # fails fast (not after timeout_s) with a clear message
            t0 = time.monotonic()
            r = client.call(x)
            assert time.monotonic() - t0 < 1.0
            assert not r.success
            if "is not connected" in r.message:
                break
            assert "lost" in r.message, r.message
            assert time.monotonic() < end
        assert "the bridge keeps reconnecting" in r.message
        st = client.latest(SwarmStatus, "/cats_bridge/status", lambda m: not m.connected)
        assert not st.connected
        swarm.restart_gateway()
        end = time.monotonic() + 10
        while not (r := client.call(x)).success:  # reconnects by itself
            assert time.monotonic() < end, r.message
            time.sleep(0.05)
        assert "connection lost" in log.read_text()


def test_partition_hash_mismatch_refused_loudly(exports, domain, tmp_path) -> None:
    a, b = PartitionInfo.from_dir(exports["a"]), PartitionInfo.from_dir(exports["b"])
    assert a.partition_hash != b.partition_hash
    x = windows(a.context, 1)[0]
    # the swarm runs export a, the bridge is configured for export b
    with setup(exports, domain, tmp_path, bridge_dir="b") as (_, client, _, log):
        st = client.latest(SwarmStatus, "/cats_bridge/status", lambda m: m.partition_hash != "")
        assert not st.hash_ok and st.partition_hash == a.partition_hash
        assert st.expected_partition_hash == b.partition_hash
        for _ in range(3):
            r = client.call(x)
            assert not r.success and r.message.startswith("partition hash mismatch"), r.message
            assert a.partition_hash[:16] in r.message and b.partition_hash[:16] in r.message
        diag = client.latest(DiagnosticArray, "/diagnostics")
        assert diag.status[0].level == DiagnosticStatus.ERROR
        text = log.read_text()
        assert "PARTITION HASH MISMATCH" in text and "[ERROR]" in text


def test_bridge_refuses_bad_parameters(exports, domain, tmp_path) -> None:
    for params, text in (
        ({"gateway": "udp://x:1"}, "gateway endpoint must be tcp://"),
        ({"partition_dir": str(tmp_path)}, "no partition.json"),
        ({"expected_partition_hash": "abc"}, "must be 64 hex digits"),
        ({"timeout_s": 0}, "must be > 0"),
    ):
        args = {"gateway": "tcp://127.0.0.1:9", "partition_dir": str(exports["a"]), **params}
        argv = [sys.executable, "-m", "cats_bridge", "--ros-args"]
        for k, v in args.items():
            argv += ["-p", f"{k}:={v}"]
        env = {**os.environ, **ROS_ENV, "ROS_DOMAIN_ID": str(domain)}
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        assert p.returncode == 2 and text in p.stderr, p.stderr


def test_cats_serve_until_ctrl_c(exports, domain, tmp_path) -> None:
    """`cats serve`: swarm + bridge in the foreground; SIGINT stops all of it."""
    env = {**os.environ, **ROS_ENV, "ROS_DOMAIN_ID": str(domain)}
    cats = Path(sys.executable).parent / "cats"
    proc = subprocess.Popen(
        [str(cats), "serve", str(exports["a"]), "--status-period-s", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        assert lines and lines[-1].startswith("ready service=/cats_bridge/infer"), lines
        kids = descendants(proc.pid)
        assert len(kids) >= 6  # medium, 4 nodes, gateway
        client = Client(domain)
        try:
            client.wait_service()
            info = PartitionInfo.from_dir(exports["a"])
            assert client.call(windows(info.context, 1)[0]).success
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert "interrupted; the bridge and the swarm are stopped" in out
        assert all(gone(k) for k in kids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
