"""Stand-in for the Zephyr node image built for native_sim, for tests without a Zephyr tree.

    python tests/_fake_native_sim.py --exe build/host/cats_node_sim --node-dir DIR --key-file K

Behaves on the outside as native_sim does with samples/node: opens one PTY master per UART
(raw, non-blocking, the slave left closed), prints ``uart connected to pseudotty: /dev/pts/A``
and ``uart_1 connected to pseudotty: /dev/pts/B`` on stdout, and speaks the simulation link on
uart_1, sending its SimHello at once (before anyone has opened the slave). Inside, the node is
the host ``cats_node_sim``: it connects to a TCP port of this process, whose bytes are copied
to and from the uart_1 master. Ends on SIGTERM/SIGINT or when the node exits.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty


def open_pty() -> tuple[int, str]:
    """A PTY master as native_sim opens it (posix_openpt, grantpt, unlockpt, raw, O_NONBLOCK)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptsname.restype = ctypes.c_char_p
    fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    if libc.grantpt(fd) != 0 or libc.unlockpt(fd) != 0:
        raise OSError(ctypes.get_errno(), "grantpt/unlockpt")
    name = libc.ptsname(fd).decode()
    os.set_blocking(fd, False)
    tty.setraw(fd, termios.TCSANOW)
    return fd, name


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--exe", required=True, help="cats_node_sim")
    p.add_argument("--node-dir", required=True)
    p.add_argument("--mtu", default="115")
    p.add_argument("--key-file", required=True, help="the swarm key (a real image has it built in)")
    args = p.parse_args()
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    console, console_name = open_pty()
    link, link_name = open_pty()
    print(f"uart connected to pseudotty: {console_name}", flush=True)
    print(f"uart_1 connected to pseudotty: {link_name}", flush=True)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    node = subprocess.Popen(
        [args.exe, "--medium", f"127.0.0.1:{port}", "--node-dir", args.node_dir,
         "--mtu", args.mtu, "--key-file", args.key_file],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    srv.settimeout(20)
    conn, _ = srv.accept()
    srv.close()
    conn.settimeout(None)
    to_pty = bytearray()
    try:
        while not stop and node.poll() is None:
            r, w, _ = select.select([conn, link], [link] if to_pty else [], [], 0.05)
            if conn in r:
                data = conn.recv(65536)
                if not data:
                    break
                to_pty += data
            if to_pty and (w or conn in r):  # like native_sim's uart_poll_out
                with contextlib.suppress(BlockingIOError):
                    del to_pty[: os.write(link, to_pty)]
            if link in r:  # like uart_poll_in: a non-blocking read of the master
                try:
                    data = os.read(link, 65536)
                    if data:
                        conn.sendall(data)
                except BlockingIOError:
                    pass
                except OSError as exc:  # EIO: no slave open (yet, or any more)
                    if exc.errno != errno.EIO:
                        raise
                    time.sleep(0.002)
    finally:
        node.terminate()
        node.wait(5)
        conn.close()
        os.close(link)
        os.close(console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
