"""`cats serve`: the simulated swarm and the ROS 2 bridge node, in the foreground until Ctrl-C.

    cats serve <partition-dir> [--link ieee802154|ble2m|ble2m-aux] [--loss SPEC] [--seed S]
               [--timeout-s T] [--queue-depth N] [--status-period-s P]
               [--expected-partition-hash HEX] [--domain-id ID]

Starts ``cats.sim.swarm.Swarm`` (radio medium, one C node process per node, the C gateway)
for the export, then the ``cats_bridge`` node (rclpy, Fast DDS) connected to the gateway:
a robot calls ``/cats_bridge/infer`` (service or action) and reads ``/cats_bridge/status``
and ``/diagnostics``. Prints one line starting with ``ready`` once both are up. Ctrl-C or
SIGTERM stops the bridge and every swarm process (no orphans: one process group, SIGTERM
then SIGKILL, PR_SET_PDEATHSIG).

``serving()`` is the same as a context manager, for ``cats demo`` and the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cats.wire import phy as phys

# Discovery stays on this machine unless the caller says otherwise (Fast DDS would otherwise
# multicast on every interface).
LOCALHOST_DISCOVERY = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the simulated swarm and the ROS 2 bridge node until Ctrl-C",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("partition_dir", type=Path, help="export directory (cats export --out)")
    p.add_argument("--link", default="ieee802154", choices=tuple(phys.PHYS))
    p.add_argument("--loss", action="append", default=[], help="medium loss model (cats sim)")
    p.add_argument("--seed", type=int, default=0, help="loss model seed")
    p.add_argument("--workdir", type=Path, default=None, help="process logs (default: temp)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="bridge per-request timeout")
    p.add_argument("--queue-depth", type=int, default=16, help="bridge requests at once")
    p.add_argument("--status-period-s", type=float, default=1.0, help="status period")
    p.add_argument("--expected-partition-hash", default="", help="default: partition.json's")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: env)")
    p.set_defaults(func=run)


@dataclass
class Serving:
    """A running swarm + bridge."""

    swarm: Any  # cats.sim.swarm.Swarm
    node: Any  # cats_bridge.node.CatsBridge
    executor: Any
    thread: threading.Thread

    @property
    def service(self) -> str:
        return f"{self.node.get_fully_qualified_name()}/infer"


def bridge_parameters(endpoint: str, partition_dir: Path, **params: Any) -> list[Any]:
    from rclpy.parameter import Parameter

    values = {"gateway": endpoint, "partition_dir": str(Path(partition_dir).resolve()), **params}
    return [Parameter(k, value=v) for k, v in values.items()]


@contextlib.contextmanager
def serving(
    partition_dir: Path,
    *,
    link: str = "ieee802154",
    loss: list[str] | None = None,
    seed: int = 0,
    workdir: Path | None = None,
    domain_id: int | None = None,
    ready_timeout: float = 20.0,
    **bridge_params: Any,
) -> Iterator[Serving]:
    """Start the swarm and the bridge (its executor in a thread); stop both on exit."""
    for k, v in LOCALHOST_DISCOVERY.items():
        os.environ.setdefault(k, v)
    import rclpy
    from cats_bridge.main import EXECUTOR_THREADS
    from cats_bridge.node import CatsBridge
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from cats.sim.swarm import Swarm

    swarm = Swarm(Path(partition_dir), link=link, loss=loss, seed=seed, workdir=workdir)
    context = rclpy.Context()
    node = executor = thread = None
    try:
        swarm.start()
        rclpy.init(
            context=context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        node = CatsBridge(
            context=context,
            parameter_overrides=bridge_parameters(swarm.endpoint, partition_dir, **bridge_params),
        )
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS, context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, name="cats-bridge", daemon=True)
        thread.start()
        end = time.monotonic() + ready_timeout
        while not node.link.ready:
            swarm.check_alive()
            if time.monotonic() > end:
                raise RuntimeError(f"bridge not connected: {node.link.unavailable_reason()}")
            time.sleep(0.01)
        yield Serving(swarm, node, executor, thread)
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        if thread is not None:
            thread.join(5.0)
        if workdir is None:
            swarm.cleanup()  # also removes its temp work directory
        else:
            swarm.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cats.sim.swarm import SwarmError

    params: dict[str, Any] = {
        "timeout_s": args.timeout_s,
        "queue_depth": args.queue_depth,
        "status_period_s": args.status_period_s,
        "expected_partition_hash": args.expected_partition_hash,
    }
    t0 = time.monotonic()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with serving(
            args.partition_dir,
            link=args.link,
            loss=args.loss,
            seed=args.seed,
            workdir=args.workdir,
            domain_id=args.domain_id,
            **params,
        ) as s:
            # from here on Ctrl-C / SIGTERM unwind `serving`: the bridge stops, then the swarm
            for sig in saved:
                signal.signal(sig, _interrupt)
            print(
                f"ready service={s.service} action={s.service} "
                f"status={s.node.get_fully_qualified_name()}/status gateway={s.swarm.endpoint} "
                f"nodes={s.swarm.nodes} partition={s.node.expected_hash}",
                flush=True,
            )
            while True:
                s.swarm.check_alive()
                time.sleep(0.5)
    except SwarmError as exc:
        raise ValueError(f"the swarm failed: {exc}") from None
    except KeyboardInterrupt:
        print("cats serve: interrupted; the bridge and the swarm are stopped", file=sys.stderr)
    except SystemExit as exc:
        print("cats serve: terminated; the bridge and the swarm are stopped", file=sys.stderr)
        if exc.code not in (None, 0, 128 + signal.SIGTERM):
            raise
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return {"ok": True, "served_s": time.monotonic() - t0}
