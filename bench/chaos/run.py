"""Chaos benchmark of `cats serve` (issue 11): requests at a steady rate while a schedule kills
and restarts processes, hangs a node, adds loss and runs bad clients.

    .venv/bin/python bench/chaos/run.py                    # the full 10 minutes
    .venv/bin/python bench/chaos/run.py --minutes 2 --json bench/chaos/results.json

``cats serve``'s ``serving()`` (medium, D ``cats_node_sim``, ``cats_gateway_sim``, the
supervisor and the ``cats_bridge`` node) runs in this process for an untrained export
(``verytiny``, D = 8 by default); a client with its own rclpy context calls
``/cats_bridge/infer`` at ``--rate`` Hz (the README's client QoS). The schedule, in fractions of
the run (each fault is one phase; the phase's calls are counted and timed apart):

    0.00 baseline         0.10 kill -9 node 3      0.17 kill -9 the gateway
    0.24 SIGSTOP node 2 (SIGCONT at 0.34)          0.36 30 % loss (iid:0.3, the medium
    restarted with it; without loss again at 0.50)  0.52 kill -9 node 5
    0.58 slow reader on the gateway port (never reads; until 0.66)
    0.66 garbage: random and crafted resync bytes on the gateway port (until 0.72)
    0.72 queue hog: a raw client keeping 8 requests at the gateway (until 0.82)
    0.82 a burst of 500 concurrent calls          0.88 recovery

Printed (and in ``--json``): requests sent / answered ok (complete) / degraded / refused with
an error / hung (never answered, the target is 0), the bridge's uptime (its executor thread
alive and its service discoverable, sampled every 0.5 s; target 100 %), p50/p99 latency per
phase, and the supervisor's restarts. Not a CI test: tests/test_survive.py and
tests/test_ros_serve.py run each scenario for seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from cats_bridge.node import request_qos
from cats_bridge.partition_info import PartitionInfo
from cats_interfaces.srv import Infer
from rclpy.executors import SingleThreadedExecutor

from cats.artefacts import export
from cats.commands.serve import serving
from cats.model.partition import Partition
from cats.sim.gateway_client import GatewayClient
from cats.wire import stream
from cats.wire.proto import pb

ROS_ENV = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
SCHEDULE = [  # (start as a fraction of the run, phase)
    (0.00, "baseline"),
    (0.10, "kill node 3"),
    (0.17, "kill gateway"),
    (0.24, "hang node 2"),
    (0.34, "node 2 resumed"),
    (0.36, "30% loss"),
    (0.50, "loss off"),
    (0.52, "kill node 5"),
    (0.58, "slow reader"),
    (0.66, "garbage"),
    (0.72, "queue hog"),
    (0.82, "burst of 500"),
    (0.88, "recovery"),
]
BURST = 500


@dataclass
class Call:
    phase: str
    sent: float
    future: Any
    latency: float | None = None


@dataclass
class Stats:
    calls: list[Call] = field(default_factory=list)
    up_samples: int = 0
    up_ok: int = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=10.0, help="calls per second")
    p.add_argument("--preset", default="verytiny")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--domain-id", type=int, default=77)
    p.add_argument("--timeout-s", type=float, default=15.0, help="the bridge's timeout_s")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="keep the process logs here")
    return p.parse_args(argv)


class BadClient(threading.Thread):
    """A raw client of the gateway's bridge port (with the run's token: a buggy program of
    this run, not a stranger) doing one bad thing until stopped."""

    def __init__(self, kind: str, port: int, token: bytes, data: bytes) -> None:
        super().__init__(name=f"bad-{kind}", daemon=True)
        self.kind, self.port, self.token, self.data = kind, port, token, data
        self.stop = threading.Event()
        self.note = ""

    def _hello(self) -> bytes:
        msg = pb().GatewayMessage(client_hello=pb().ClientHello(token=self.token))
        return stream.encode(stream.GATEWAY, msg.SerializeToString())

    def run(self) -> None:
        try:
            getattr(self, f"_{self.kind}")()
        except OSError as exc:
            self.note = f"{type(exc).__name__}: {exc}"

    def _slow(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(self._hello())
        s.setblocking(False)
        ask = stream.encode(
            stream.GATEWAY, pb().GatewayMessage(status_request={}).SerializeToString()
        )
        sent = 0
        while not self.stop.is_set():
            try:
                sent += s.send(ask * 32)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                self.note = f"dropped by the gateway after {sent} bytes"
                s = socket.create_connection(("127.0.0.1", self.port))  # and again
                s.sendall(self._hello())
                s.setblocking(False)
        s.close()

    def _garbage(self) -> None:
        rng = random.Random(0)
        unit = b"\xca\x75\x08\xff\x1f"  # a false header every 5 bytes, longest length
        crafted = unit * (65536 // len(unit))
        n = 0
        while not self.stop.is_set():
            with socket.create_connection(("127.0.0.1", self.port)) as s:
                s.sendall(self._hello())
                for _ in range(8):
                    s.sendall(crafted if n % 2 else rng.randbytes(65536))
                    n += 1
            time.sleep(0.05)
        self.note = f"{n * 64} KiB of garbage"

    def _hog(self) -> None:
        gw = GatewayClient(f"tcp://127.0.0.1:{self.port}", timeout=30, token=self.token)
        pending = [gw.submit(self.data) for _ in range(8)]
        done = 0
        while not self.stop.is_set():
            gw.result(pending.pop(0), timeout=30)
            done += 1
            pending.append(gw.submit(self.data))
        gw.close()
        self.note = f"{done} of its requests served"


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) * 1e3 if values else None


REASONS = (  # refusal message -> its kind, first match
    ("queue full", "queue full"),
    ("not connected", "gateway reconnecting"),
    ("lost", "gateway connection lost"),
    ("no result within", "bridge timeout"),
    ("gateway busy", "gateway busy"),
    ("no node delivered", "no node answered"),
)


def reason(message: str) -> str:
    return next((kind for key, kind in REASONS if key in message), message[:60])


def summarise(stats: Stats, events: list[str], restarts: dict[str, int]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}
    totals = {"sent": 0, "ok": 0, "degraded": 0, "refused": 0, "hung": 0}
    for c in stats.calls:
        row = rows.setdefault(
            c.phase, {"sent": 0, "ok": 0, "degraded": 0, "refused": 0, "hung": 0, "lat": []}
        )
        row["sent"] += 1
        if c.latency is None:
            kind = "hung"
        else:
            res = c.future.result()
            kind = "refused" if not res.success else ("degraded" if res.degraded else "ok")
            row["lat"].append(c.latency)
            if not res.success:
                r = reason(res.message)
                reasons[r] = reasons.get(r, 0) + 1
        row[kind] += 1
        totals["sent"] += 1
        totals[kind] += 1
    phases = {}
    for name, row in rows.items():
        lat = row.pop("lat")
        phases[name] = {**row, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
    uptime = stats.up_ok / stats.up_samples if stats.up_samples else 0.0
    return {
        "totals": totals,
        "bridge_uptime": uptime,
        "phases": phases,
        "restarts": dict(restarts),
        "refusals": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "events": events,
    }


def print_table(result: dict[str, Any], minutes: float) -> None:
    t = result["totals"]
    print(f"cats serve chaos: {minutes:g} min, {result['config']}")
    print(
        f"requests sent {t['sent']}  ok {t['ok']}  degraded {t['degraded']}  "
        f"refused {t['refused']}  hung {t['hung']}"
    )
    print(f"bridge uptime {100 * result['bridge_uptime']:.1f} %   restarts {result['restarts']}")
    print(f"refusals by reason {result['refusals']}")
    head = ("sent", "ok", "degr", "refus", "hung")
    print(f"{'phase':<16}" + "".join(f"{h:>6}" for h in head) + f"{'p50 ms':>9}{'p99 ms':>9}")
    for name, r in result["phases"].items():
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.0f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}"
        print(
            f"{name:<16}{r['sent']:>6}{r['ok']:>6}{r['degraded']:>6}{r['refused']:>6}"
            f"{r['hung']:>6}{p50:>9}{p99:>9}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    for k, v in ROS_ENV.items():
        os.environ.setdefault(k, v)
    duration = args.minutes * 60.0
    events: list[str] = []
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="cats-chaos-") as tmp:
        part = Path(tmp) / "part"
        _, qm = export.untrained(args.preset, 0)
        export.export_partition(qm, Partition.full(qm.cfg, args.nodes), part)
        info = PartitionInfo.from_dir(part)
        rng = np.random.default_rng(0)
        windows = (20 + rng.normal(0, 1, (32, info.context)).cumsum(1)).astype(np.float32)
        with serving(
            part,
            domain_id=args.domain_id,
            workdir=args.workdir or Path(tmp) / "swarm",
            on_event=lambda text: events.append(f"{time.monotonic() - t0:7.1f} s {text}"),
            timeout_s=args.timeout_s,
            status_period_s=0.5,
        ) as s:
            t0 = time.monotonic()
            context = rclpy.Context()
            rclpy.init(context=context, domain_id=args.domain_id)
            node = rclpy.create_node("chaos_client", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            client = node.create_client(Infer, s.service, qos_profile=request_qos())
            client.wait_for_service(timeout_sec=20)
            raw = np.ascontiguousarray(np.zeros((info.tokens, info.patch), np.int8)).tobytes()
            bad: dict[str, BadClient] = {}
            t0 = time.monotonic()
            done_phases: set[str] = set()
            next_call, next_sample, k = t0, t0, 0
            pending: list[Call] = []

            def call(phase: str) -> None:
                nonlocal k
                x = windows[k % len(windows)]
                k += 1
                req = Infer.Request(input=[float(v) for v in x], shape=[info.context])
                c = Call(phase, time.monotonic(), client.call_async(req))
                stats.calls.append(c)
                pending.append(c)

            def reap() -> None:
                """Time the calls answered since the last look."""
                now = time.monotonic()
                for c in [c for c in pending if c.future.done()]:
                    c.latency = now - c.sent
                    pending.remove(c)

            def start(phase: str) -> None:
                sw = s.swarm
                events.append(f"{time.monotonic() - t0:7.1f} s phase: {phase}")
                if phase == "kill node 3":
                    sw.node[3].signal(signal.SIGKILL)
                elif phase == "kill node 5":
                    sw.node[5].signal(signal.SIGKILL)
                elif phase == "kill gateway":
                    sw.gateway.signal(signal.SIGKILL)
                elif phase == "hang node 2":
                    sw.node[2].signal(signal.SIGSTOP)
                elif phase == "node 2 resumed":
                    sw.node[2].signal(signal.SIGCONT)
                elif phase in ("30% loss", "loss off"):
                    sw.loss = ["iid:0.3"] if phase == "30% loss" else []
                    sw.medium.signal(signal.SIGKILL)  # the supervisor restarts it with the loss
                elif phase in ("slow reader", "garbage", "queue hog"):
                    for b in bad.values():
                        b.stop.set()
                    kind = {"slow reader": "slow", "garbage": "garbage", "queue hog": "hog"}[phase]
                    bad[kind] = BadClient(kind, sw.gateway_port, sw.token, raw)
                    bad[kind].start()
                elif phase == "burst of 500":
                    for b in bad.values():
                        b.stop.set()
                    for _ in range(BURST):
                        call("burst of 500")

            while True:
                now = time.monotonic()
                if now - t0 >= duration:
                    break
                phase = [p for f, p in SCHEDULE if now - t0 >= f * duration][-1]
                if phase not in done_phases:
                    done_phases.add(phase)
                    start(phase)
                if now >= next_call:
                    call(phase)
                    next_call += 1.0 / args.rate
                if now >= next_sample:
                    stats.up_samples += 1
                    stats.up_ok += int(s.thread.is_alive() and client.service_is_ready())
                    next_sample += 0.5
                executor.spin_once(timeout_sec=0.005)
                reap()
            end = time.monotonic() + args.timeout_s + 5  # what is outstanding may finish
            while pending and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)
                reap()
            restarts = dict(s.supervisor.restarts)
            for b in bad.values():
                b.stop.set()
                events.append(f"bad client {b.kind}: {b.note}")
            node.destroy_node()
            executor.shutdown()
            rclpy.try_shutdown(context=context)
    result = summarise(stats, events, restarts)
    result["config"] = (
        f"{args.preset} D={args.nodes}, {args.rate:g} Hz, bridge timeout_s {args.timeout_s:g}"
    )
    result["minutes"] = args.minutes
    print_table(result, args.minutes)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
