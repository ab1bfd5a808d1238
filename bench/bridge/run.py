"""The ROS 2 bridge's own overhead and throughput against the simulated swarm.

    .venv/bin/python bench/bridge/run.py --json bench/bridge/results.json

A small untrained export (``test`` preset, D = 4, context 64) runs on the simulated swarm
(medium + C nodes + C gateway, in this process); the bridge runs as its own process
(``python -m cats_bridge``) and this process is the ROS 2 client (Fast DDS, localhost
discovery). Measured, interleaved one request at a time:

* **gateway**: the same int8 request sent straight to the gateway over its TCP port
  (``cats.sim.gateway_client.GatewayClient``): the swarm's own inference time;
* **service**: a ``/cats_bridge/infer`` service round trip (validation, RevIN + int8,
  gateway, dequantisation, DDS both ways);
* **overhead** = service - gateway of the same iteration.

Then requests per second with 1, 4 and 16 service calls in flight, next to the gateway's own
rate with the same number of requests pipelined on its socket. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from cats_bridge import codec
from cats_bridge.partition_info import PartitionInfo
from cats_interfaces.srv import Infer
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from cats.artefacts import export
from cats.base.paths import REPO_ROOT
from cats.model.partition import Partition
from cats.sim.swarm import Swarm, build_executables

ROS_ENV = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="test")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--requests", type=int, default=400, help="interleaved latency samples")
    p.add_argument("--rate-requests", type=int, default=400, help="requests per rate run")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 77)))
    p.add_argument("--build-dir", type=Path, default=None, help="host build (default: build/host)")
    p.add_argument("--status-period-s", type=float, default=1.0, help="bridge status period")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


def stats(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e3
    return {
        "median_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
    }


def start_bridge(endpoint: str, part: Path, domain: int, log: Path, **params: Any) -> Any:
    argv = [sys.executable, "-m", "cats_bridge", "--ros-args",
            "-p", f"gateway:={endpoint}", "-p", f"partition_dir:={part}"]  # fmt: skip
    for k, v in params.items():
        argv += ["-p", f"{k}:={v}"]
    env = {**os.environ, **ROS_ENV, "ROS_DOMAIN_ID": str(domain)}
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


class Client:
    def __init__(self, domain: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("bench_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.srv = self.node.create_client(
            Infer, "/cats_bridge/infer", qos_profile=QoSProfile(depth=100)
        )

    def wait(self, x: np.ndarray, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.srv.service_is_ready() and self.call_many([x])[0].success:
                return
            self.executor.spin_once(timeout_sec=0.1)
        raise RuntimeError("the bridge did not answer")

    def call_many(self, xs: list[np.ndarray]) -> list[Any]:
        futures = [self.srv.call_async(Infer.Request(input=x.tolist(), shape=[len(x)])) for x in xs]
        for f in futures:
            self.executor.spin_until_future_complete(f, timeout_sec=60)
        return [f.result() for f in futures]

    def close(self) -> None:
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)


def rate(fn: Any, total: int, concurrency: int) -> float:
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(concurrency, total - done)
        fn(n)
        done += n
    return total / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.update(ROS_ENV)
    build_dir = build_executables(args.build_dir) if args.build_dir else build_executables()
    with tempfile.TemporaryDirectory(prefix="cats-bench-bridge-") as tmp:
        part = Path(tmp) / "part"
        _, qm = export.untrained(args.preset, 0)
        export.export_partition(qm, Partition.full(qm.cfg, args.nodes), part)
        info = PartitionInfo.from_dir(part)
        rng = np.random.default_rng(0)
        xs = (10 + rng.normal(0, 1, (64, info.context)).cumsum(1)).astype(np.float32)
        data = [codec.encode_input(x, info)[0] for x in xs]
        depth = max(args.concurrency)
        swarm = Swarm(part, workdir=Path(tmp) / "swarm", build_dir=build_dir)
        with swarm, swarm.client() as gw:
            log = Path(tmp) / "bridge.log"
            proc = start_bridge(swarm.endpoint, part, args.domain_id, log, queue_depth=depth,
                                status_period_s=args.status_period_s)  # fmt: skip
            client = Client(args.domain_id)
            try:
                client.wait(xs[0])
                for i in range(20):  # warm up both paths
                    gw.infer(data[i % 64])
                    client.call_many([xs[i % 64]])
                t_gw, t_srv = [], []
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    res = gw.infer(data[i % 64])
                    t1 = time.perf_counter()
                    (r,) = client.call_many([xs[i % 64]])
                    t2 = time.perf_counter()
                    assert res.status == 0 and r.success, r.message
                    t_gw.append(t1 - t0)
                    t_srv.append(t2 - t1)
                over = [s - g for s, g in zip(t_srv, t_gw, strict=True)]

                def gw_batch(n: int) -> None:
                    ids = [gw.submit(data[k % 64]) for k in range(n)]
                    for rid in ids:
                        assert gw.result(rid).status == 0

                def srv_batch(n: int) -> None:
                    rs = client.call_many([xs[k % 64] for k in range(n)])
                    assert all(r.success for r in rs), [r.message for r in rs]

                rates = []
                for c in args.concurrency:
                    rates.append({
                        "in_flight": c,
                        "service_rps": rate(srv_batch, args.rate_requests, c),
                        "gateway_rps": rate(gw_batch, args.rate_requests, min(c, 5)),
                    })  # fmt: skip
                modelled = r.modelled_latency_s
            finally:
                client.close()
                proc.send_signal(signal.SIGINT)
                proc.wait(10)
    result = {
        "preset": args.preset,
        "nodes": args.nodes,
        "context": info.context,
        "outputs": info.outputs,
        "requests": args.requests,
        "gateway": stats(t_gw),
        "service": stats(t_srv),
        "overhead": stats(over),
        "rates": rates,
        "modelled_latency_s": modelled,
        "host_build": str(build_dir),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
    }
    o, g, s = result["overhead"], result["gateway"], result["service"]
    print(f"{args.preset} D={args.nodes}: {args.requests} interleaved requests")
    print(f"  gateway alone  median {g['median_ms']:.2f} ms  p99 {g['p99_ms']:.2f} ms")
    print(f"  ROS 2 service  median {s['median_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms")
    print(f"  bridge overhead median {o['median_ms']:.2f} ms  p99 {o['p99_ms']:.2f} ms")
    for row in rates:
        print(f"  {row['in_flight']:2d} in flight: {row['service_rps']:7.1f} req/s via ROS 2, "
              f"{row['gateway_rps']:7.1f} req/s straight to the gateway")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
