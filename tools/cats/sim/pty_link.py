"""Relay between a station's serial line and the radio medium: the way a Zephyr node image
built for native_sim (or a board running the simulation link on a UART) joins a simulated
swarm.

    python -m cats.sim.pty_link --device /dev/pts/5 --medium 127.0.0.1:PORT
    python -m cats.sim.pty_link --device /dev/ttyACM0 --baud 1000000 --medium 127.0.0.1:PORT

The station speaks the framed byte stream of proto/cats.proto (``cats.wire.stream``) on its UART,
exactly as ``cats_node_sim`` speaks it on its TCP connection (``link_sim.c``: SimHello first,
then AIR frames; SlotEnd from the medium), so the relay copies raw bytes both ways and parses
nothing: the framing, its CRC and its resynchronisation are end to end.

The device is either

* a pseudo terminal (a UNIX 98 pty slave, ``/dev/pts/N``): opened directly and put in raw mode
  *without* flushing, so what the station wrote before the relay opened it (native_sim's node
  sends its SimHello at boot) is still delivered. native_sim prints the PTY of each UART on
  stdout, e.g. ``uart_1 connected to pseudotty: /dev/pts/5`` (``find_pty()``); or
* any other serial port, opened with pyserial (``--baud``, ``--bytesize``, ``--parity``,
  ``--stopbits``, ``--rtscts``, ``--xonxoff``). pyserial discards pending input when it opens a
  port, and a UART does not keep what arrives while it is closed: reset the board once the
  relay runs, so that its SimHello reaches the medium.

The relay prints ``ready device=... medium=...`` on stdout once both ends are open, and stops
when either end closes (the station exited: a pty slave reads EIO once its master is closed;
the medium closed the connection) or on SIGTERM / SIGINT; it exits 0 and writes its byte
counts on stderr. ``PtyLink`` is the same relay as a thread, for use in Python.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import select
import signal
import socket
import sys
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Any

PTY_LINE = re.compile(r"^(?P<uart>\S+) connected to pseudotty: (?P<path>/\S+)\s*$", re.MULTILINE)
DEFAULT_UART = "uart_1"  # the `cats,link-uart` of samples/node/boards/native_sim.overlay
CHUNK = 65536
MAX_PENDING = 1 << 20  # bytes held for a slow side before the other side is read again
PTY_SLAVE_MAJORS = range(136, 144)  # Linux UNIX 98 pty slaves


class LinkError(RuntimeError):
    """The relay could not open its device or reach the medium."""


def find_pty(text: str, uart: str = DEFAULT_UART) -> str | None:
    """The PTY that native_sim connected `uart` to, from its stdout (None if not printed yet)."""
    for m in PTY_LINE.finditer(text):
        if m.group("uart").lower() == uart.lower():  # Zephyr 3.x printed "UART_1" too
            return m.group("path")
    return None


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', 'PORT': 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        return (host.strip("[]") or "127.0.0.1", int(port))
    except ValueError:
        raise ValueError(f"medium address must be HOST:PORT: {text!r}") from None


def is_pty(path: str | Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return os.major(st.st_rdev) in PTY_SLAVE_MAJORS if st.st_rdev else False


class PtyLink:
    """Relay a station's serial device <-> a TCP connection to the medium, in one thread.

    ``start()`` opens both ends (raises LinkError), ``stop()`` ends the thread and closes them
    (idempotent); ``done`` is set when the relay has ended by itself, ``reason`` says why."""

    def __init__(
        self,
        device: str | Path,
        medium: str | tuple[str, int],
        *,
        baud: int = 115200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        rtscts: bool = False,
        xonxoff: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self.device = str(device)
        self.medium = parse_address(medium) if isinstance(medium, str) else medium
        self.serial_settings: dict[str, Any] = dict(
            baudrate=baud,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            rtscts=rtscts,
            xonxoff=xonxoff,
        )
        self.connect_timeout = connect_timeout
        self.bytes_to_medium = 0
        self.bytes_to_device = 0
        self.reason = ""
        self.done = threading.Event()
        self._fd = -1
        self._serial: Any = None
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- ends --------------------------------------------------------------------------------
    def _open_device(self) -> None:
        if is_pty(self.device):
            try:
                fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                raise LinkError(f"cannot open {self.device}: {exc}") from None
            tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keep what the station sent
            self._fd = fd
            return
        import serial  # pyserial

        try:
            self._serial = serial.Serial(self.device, timeout=0, **self.serial_settings)
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open {self.device}: {exc}") from None
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)

    def _connect(self) -> None:
        end = time.monotonic() + self.connect_timeout
        while True:
            try:
                sock = socket.create_connection(self.medium, timeout=2.0)
                break
            except OSError as exc:
                if time.monotonic() > end:
                    raise LinkError(f"cannot reach the medium at {self.medium}: {exc}") from None
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self._sock = sock

    def start(self) -> PtyLink:
        try:
            self._open_device()
            self._connect()
        except BaseException:
            self._close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="cats-pty-link", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> PtyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the relay ---------------------------------------------------------------------------
    def _read_device(self) -> bytes | None:
        """Bytes from the station; b'' when none now; None when it is gone."""
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # pty slave whose master was closed
                return None
            raise
        return data if data else None

    def _run(self) -> None:
        assert self._sock is not None
        sock, fd = self._sock, self._fd
        to_sock = bytearray()
        to_dev = bytearray()
        try:
            while True:
                rd = [self._wake_r]
                if len(to_sock) < MAX_PENDING:
                    rd.append(fd)
                if len(to_dev) < MAX_PENDING:
                    rd.append(sock)
                wr = ([sock] if to_sock else []) + ([fd] if to_dev else [])
                r, w, _ = select.select(rd, wr, [])
                if self._wake_r in r:
                    self.reason = "stopped"
                    return
                if fd in r:
                    data = self._read_device()
                    if data is None:
                        self.reason = "device closed"
                        return
                    to_sock += data
                if sock in r:
                    try:
                        got = sock.recv(CHUNK)
                    except BlockingIOError:
                        got = None
                    except ConnectionError:
                        got = b""
                    if got == b"":
                        self.reason = "medium closed"
                        return
                    if got:
                        to_dev += got
                if to_sock:
                    try:
                        n = sock.send(to_sock)
                        self.bytes_to_medium += n
                        del to_sock[:n]
                    except BlockingIOError:
                        pass
                if to_dev:
                    try:
                        n = os.write(fd, to_dev)
                        self.bytes_to_device += n
                        del to_dev[:n]
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        self.reason = "device closed"
                        return
        except OSError as exc:
            self.reason = f"error: {exc}"
        finally:
            self.done.set()

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._thread is not None:
            if self._thread.is_alive():
                os.write(self._wake_w, b"x")
            self._thread.join(timeout)
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cats.sim.pty_link", description=__doc__.splitlines()[0]
    )
    p.add_argument("--device", required=True, help="the station's PTY or serial port")
    p.add_argument("--medium", required=True, help="HOST:PORT of cats.sim.medium")
    p.add_argument("--baud", type=int, default=115200, help="serial ports only (not a pty)")
    p.add_argument("--bytesize", type=int, default=8, choices=(5, 6, 7, 8))
    p.add_argument("--parity", default="N", choices=("N", "E", "O", "M", "S"))
    p.add_argument("--stopbits", type=float, default=1, choices=(1, 1.5, 2))
    p.add_argument("--rtscts", action="store_true", help="hardware flow control")
    p.add_argument("--xonxoff", action="store_true", help="software flow control")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds")
    args = p.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    link = PtyLink(
        args.device,
        args.medium,
        baud=args.baud,
        bytesize=args.bytesize,
        parity=args.parity,
        stopbits=args.stopbits,
        rtscts=args.rtscts,
        xonxoff=args.xonxoff,
        connect_timeout=args.connect_timeout,
    )
    try:
        link.start()
    except LinkError as exc:
        print(f"pty_link: {exc}", file=sys.stderr)
        return 1
    host, port = link.medium
    print(f"ready device={args.device} medium={host}:{port}", flush=True)
    while not stop.is_set() and not link.done.wait(0.2):
        pass
    link.stop()
    why = link.reason if link.reason != "stopped" else "signal"
    print(
        f"pty_link: {why}; {link.bytes_to_medium} bytes to the medium, "
        f"{link.bytes_to_device} to the device",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
