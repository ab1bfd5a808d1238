"""``python -m cats_bridge`` / ``cats_bridge``: run the bridge node until Ctrl-C.

    python -m cats_bridge --ros-args -p gateway:=tcp://127.0.0.1:7000 \\
        -p partition_dir:=runs/demo/partition
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from cats_bridge.node import CatsBridge

EXECUTOR_THREADS = 4


def spin(node: CatsBridge) -> None:
    """Spin the node on a MultiThreadedExecutor until shutdown or Ctrl-C."""
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=2.0)


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = CatsBridge()
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"cats_bridge: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        spin(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
