#!/usr/bin/env python3
"""Call the CATS swarm from a robot: the ``/cats_bridge/infer`` service (cats_interfaces/srv/Infer).

With a bridge running (``cats serve runs/demo/partition``):

    .venv/bin/python cats_ros/examples/infer_client.py                  # one synthetic window
    .venv/bin/python cats_ros/examples/infer_client.py --windows W.npz --plot forecast.png

``--windows`` is an .npz with ``x`` (K, context) float input windows and optionally ``y``
(K, horizon) truth and ``reference`` (K, horizon) expected outputs; the client sends every
window (``--concurrency`` at a time), prints forecast-vs-truth metrics, air bytes, modelled
latency and losses, and can plot the forecasts (``--plot``) and write a JSON summary
(``--json``). Without ``--windows`` it reads the input shape from ``/cats_bridge/status`` and
sends one sine wave.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from cats_interfaces.msg import SwarmStatus
from cats_interfaces.srv import Infer
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

# The bridge's request QoS (cats_bridge.node.request_qos): reliable, keep the last 1000. A
# client's responses wait in its own DDS reader queue until it takes them; with the default
# depth (10) a burst of answers (results and "queue full" refusals alike) overflows it and
# the calls are never answered. Keep it at least as deep as the calls you have in flight.
REQUEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE
)


class InferClient(Node):
    def __init__(self, service: str) -> None:
        super().__init__("cats_infer_client")
        self.client = self.create_client(Infer, service, qos_profile=REQUEST_QOS)

    def wait(self, timeout_s: float) -> None:
        if not self.client.wait_for_service(timeout_sec=timeout_s):
            raise SystemExit(f"service {self.client.srv_name} not available after {timeout_s} s")

    def input_shape(self, topic: str, timeout_s: float) -> list[int]:
        """The model's input shape from one SwarmStatus message."""
        got: list[SwarmStatus] = []
        sub = self.create_subscription(SwarmStatus, topic, got.append, 1)
        end = time.monotonic() + timeout_s
        while not got and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.1)
        self.destroy_subscription(sub)
        if not got:
            raise SystemExit(f"no SwarmStatus on {topic} after {timeout_s} s")
        return list(got[0].input_shape)

    def infer_many(
        self, windows: np.ndarray, concurrency: int, timeout_s: float
    ) -> list[Infer.Response]:
        """Call the service once per window, `concurrency` calls in flight at a time."""
        results: list[Infer.Response] = []
        for lo in range(0, len(windows), concurrency):
            futures = [
                self.client.call_async(
                    Infer.Request(input=w.astype(np.float32).tolist(), shape=[len(w)])
                )
                for w in windows[lo : lo + concurrency]
            ]
            for f in futures:
                rclpy.spin_until_future_complete(self, f, timeout_sec=timeout_s)
                if not f.done():
                    raise SystemExit(f"no response from {self.client.srv_name} in {timeout_s} s")
                results.append(f.result())
        return results


def summarise(resp: list[Infer.Response], data: dict[str, np.ndarray], wall_s: float) -> dict:
    ok = [r for r in resp if r.success]
    out = {
        "requests": len(resp),
        "succeeded": len(ok),
        "failed_messages": sorted({r.message for r in resp if not r.success}),
        "degraded": sum(r.degraded for r in ok),
        "frames_lost": sum(int(r.frames_lost) for r in ok),
        "air_bytes_per_inference": float(np.mean([r.air_bytes for r in ok])) if ok else 0.0,
        "modelled_latency_s": float(np.mean([r.modelled_latency_s for r in ok])) if ok else 0.0,
        "wall_s_per_request": wall_s / max(1, len(resp)),
    }
    if ok and len(ok) == len(resp):
        pred = np.array([r.output for r in resp], dtype=np.float64)
        if "y" in data:
            out["mse"] = float(((pred - data["y"]) ** 2).mean())
            out["mae"] = float(np.abs(pred - data["y"]).mean())
        if "reference" in data:
            out["max_abs_diff_vs_reference"] = float(np.abs(pred - data["reference"]).max())
    return out


def plot(path: Path, data: dict[str, np.ndarray], resp: list[Infer.Response], n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(resp))
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        k = i * (len(resp) // n)
        x, ctx = data["x"][k], len(data["x"][k])
        horizon = np.arange(ctx, ctx + len(resp[k].output))
        ax.plot(np.arange(ctx), x, color="0.5", lw=0.8, label="input window")
        if "y" in data:
            ax.plot(horizon, data["y"][k], color="k", lw=1.0, label="truth")
        ax.plot(horizon, resp[k].output, color="tab:red", lw=1.2, label="swarm via ROS 2")
        ax.set_title(
            f"window {k}: {resp[k].air_bytes} B on air, "
            f"modelled {resp[k].modelled_latency_s * 1e3:.0f} ms, "
            f"{resp[k].frames_lost} frames lost",
            fontsize=9,
        )
        if i == 0:
            ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service", default="/cats_bridge/infer")
    ap.add_argument("--status-topic", default="/cats_bridge/status")
    ap.add_argument("--windows", type=Path, help=".npz with x (K, context), optional y, reference")
    ap.add_argument("--concurrency", type=int, default=1, help="calls in flight at once")
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--plot", type=Path, help="write forecast-vs-truth plots (PNG)")
    ap.add_argument("--json", type=Path, help="write the summary as JSON")
    args = ap.parse_args(argv)

    rclpy.init()
    node = InferClient(args.service)
    try:
        node.wait(args.timeout_s)
        if args.windows:
            data = dict(np.load(args.windows))
        else:
            (context,) = node.input_shape(args.status_topic, args.timeout_s)[-1:]
            t = np.arange(context, dtype=np.float32)
            data = {"x": (20 + 5 * np.sin(2 * np.pi * t / 24))[None, :]}
        t0 = time.monotonic()
        resp = node.infer_many(np.asarray(data["x"]), max(1, args.concurrency), args.timeout_s)
        summary = summarise(resp, data, time.monotonic() - t0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()

    print(f"{summary['succeeded']}/{summary['requests']} requests succeeded via {args.service}")
    for msg in summary["failed_messages"]:
        print(f"  failed: {msg}")
    if "mse" in summary:
        print(f"  forecast vs truth: MSE {summary['mse']:.4f}, MAE {summary['mae']:.4f}")
    if "max_abs_diff_vs_reference" in summary:
        print(f"  max |output - reference| {summary['max_abs_diff_vs_reference']:.2e}")
    print(
        f"  air bytes / inference {summary['air_bytes_per_inference']:.0f}, modelled latency "
        f"{summary['modelled_latency_s'] * 1e3:.1f} ms, frames lost {summary['frames_lost']}, "
        f"degraded {summary['degraded']}, wall {summary['wall_s_per_request'] * 1e3:.1f} ms "
        "per request"
    )
    if not args.windows and resp and resp[0].success:
        print(f"  output {np.round(resp[0].output, 3).tolist()}")
    if args.plot and resp and summary["succeeded"] == len(resp):
        plot(args.plot, data, resp)
        summary["plot"] = str(args.plot)
        print(f"  plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["succeeded"] == summary["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
