"""Start, drive and stop a simulated swarm: the radio medium (``python -m cats.sim.medium``),
D ``cats_node_sim`` processes and one ``cats_gateway_sim`` (host builds of the C node core and
gateway, ``build/host``, built with CMake when missing or stale), for an export directory.

    with Swarm(export_dir, link="ieee802154", loss="iid:0.1", seed=1) as swarm:
        with swarm.client() as gw:
            result = gw.infer(int8_input)
        swarm.kill_node(3); swarm.restart_node(3); swarm.restart_gateway()

Every child runs in one process group of its own (not the terminal's, so a Ctrl-C reaches only
this process, which then stops the children in order) and gets PR_SET_PDEATHSIG = SIGTERM, so
it ends even if this process is killed outright. ``stop()`` sends SIGTERM to the group, waits,
then SIGKILLs what is left; it runs on ``__exit__``, at interpreter exit (atexit) and on SIGINT /
SIGTERM (handlers installed while a swarm runs, restored afterwards). Each child's stdout and
stderr go to ``<workdir>/<name>.log``; a child is up when its log has a line starting with
``ready``.

Admission: each Swarm makes a random run token and gives it to its children in the
environment variable CATS_SIM_TOKEN (hex; not on a command line, so not in ``ps``): the medium
admits only stations whose SimHello carries it, the gateway only bridge clients whose
ClientHello does (``client()``, ``token``). Another run, or anyone else on the machine, can
neither join the medium nor evict one of its stations.

``external={d: spec}`` replaces node d's ``cats_node_sim`` by a station outside the host build
(``ExternalStation``): ``native_sim:PATH [ARGS]`` starts a Zephyr node image built for
native_sim (samples/node) and relays its link UART's PTY to the medium
(``cats.sim.pty_link``); ``serial:/dev/ttyACM0?baud=N`` relays a board's UART.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cats.artefacts.export import load_node
from cats.artefacts.frames import partition_tag
from cats.base.paths import REPO_ROOT
from cats.firmware import cnode
from cats.sim.gateway_client import GatewayClient
from cats.wire import auth
from cats.wire import phy as phys

NODE_EXE = "cats_node_sim"
GATEWAY_EXE = "cats_gateway_sim"
READY_TIMEOUT = 20.0
TOKEN_ENV = "CATS_SIM_TOKEN"
STOP_GRACE = 3.0
PR_SET_PDEATHSIG = 1

_live: weakref.WeakSet[Swarm] = weakref.WeakSet()
_lock = threading.Lock()
_prev_handlers: dict[int, Any] = {}


class SwarmError(RuntimeError):
    """A process of the swarm failed to start or died unexpectedly."""


def build_executables(build_dir: Path = cnode.BUILD_DIR) -> Path:
    """The host build (``cnode.build_host``, the same CMake project as the node library) with
    the simulator executables; returns the build dir."""
    build_dir = cnode.build_host(build_dir)
    missing = [x for x in (NODE_EXE, GATEWAY_EXE) if not (build_dir / x).is_file()]
    if missing:
        build_dir = cnode.build_host(build_dir, force=True)
        missing = [x for x in (NODE_EXE, GATEWAY_EXE) if not (build_dir / x).is_file()]
        if missing:
            raise SwarmError(f"the host build in {build_dir} has no {', '.join(missing)}")
    return build_dir


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _signal_stop(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM while swarms run: stop them all, then behave as before."""
    for swarm in list(_live):
        swarm.stop()
    prev = _prev_handlers.get(signum, signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise SystemExit(128 + signum)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        cur = signal.getsignal(sig)
        if cur is not _signal_stop:
            _prev_handlers[sig] = cur
            signal.signal(sig, _signal_stop)


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, prev in list(_prev_handlers.items()):
        if signal.getsignal(sig) is _signal_stop:
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        del _prev_handlers[sig]


@atexit.register
def _stop_all() -> None:
    for swarm in list(_live):
        swarm.stop()


class Proc:
    """One child process with its log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        pgid: int | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.argv, self.log = name, argv, log
        env = dict(os.environ)
        env.update(extra_env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        tools = str(REPO_ROOT / "tools")
        env["PYTHONPATH"] = tools + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        self._out = open(log, "wb")  # noqa: SIM115 - closed in wait()/kill paths
        kw: dict[str, Any] = {"process_group": 0 if pgid is None else pgid}
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                preexec_fn=_pdeathsig,
                **kw,
            )
        except BaseException:
            self._out.close()
            raise
        self._ready_at = 0  # log offset searched so far

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """The first log line starting with 'ready' (its text)."""
        end = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("ready"):
                    return line
            if not self.alive():
                raise SwarmError(
                    f"{self.name} exited ({self.popen.returncode}) before it was "
                    f"ready:\n{self.tail()}"
                )
            if time.monotonic() > end:
                raise SwarmError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.01)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def stop(self, grace: float = STOP_GRACE) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self._out.close()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait()
        self._out.close()


class Swarm:
    """A running simulated swarm for one export (see the module docstring)."""

    def __init__(
        self,
        export_dir: Path,
        *,
        link: str = "ieee802154",
        loss: str | list[str] | None = None,
        seed: int = 0,
        pcap: Path | None = None,
        log: Path | None = None,
        workdir: Path | None = None,
        slot_timeout: float = 2.0,
        deadline_ms: int = 10000,
        build_dir: Path | None = None,
        extra_node_args: list[str] | None = None,
        instr_per_mac: float | None = None,
        external: dict[int, str] | None = None,
        key_file: Path | None = None,
        mic: int = auth.MIC_DEFAULT,
        mac: str | None = None,
    ) -> None:
        self.export_dir = Path(export_dir).resolve()
        self.phy = phys.get(link, mac)  # `mac`: a key of phys.FIRMWARE_MACS[link]
        self.mac = mac
        self.loss = [loss] if isinstance(loss, str) else list(loss or [])
        self.seed = seed
        self.slot_timeout = slot_timeout
        self.deadline_ms = deadline_ms
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cats-sim-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pcap = Path(pcap).resolve() if pcap else None
        self.log = Path(log).resolve() if log else self.workdir / "medium.jsonl"
        if mic not in auth.MIC_LENS:
            raise ValueError(f"MIC length must be 4 or 8, not {mic}")
        self.mic = mic
        # the swarm key: the given file, else a fresh one in the work directory (0600)
        self.key_file = auth.key_file(key_file, self.workdir).resolve()
        auth.load_key(self.key_file)  # refuse a bad or world-readable key file now
        self.build_dir = Path(build_dir) if build_dir else None
        self.extra_node_args = list(extra_node_args or [])
        self.instr_per_mac = instr_per_mac
        node0 = load_node(self.export_dir / "node-0")
        self.nodes = int(node0.manifest.nodes)
        self.partition_hash = bytes(node0.manifest.partition_hash)
        self.tag = partition_tag(self.partition_hash)
        self.external = {int(d): _resolve_spec(spec) for d, spec in (external or {}).items()}
        bad = sorted(d for d in self.external if not 0 <= d < self.nodes)
        if bad:
            raise ValueError(f"external nodes {bad} are not nodes of this {self.nodes}-node export")
        self.medium: Proc | None = None
        self.node: dict[int, Proc | ExternalStation] = {}
        self.gateway: Proc | None = None
        self.medium_port = 0
        self.gateway_port = 0
        self._pgid: int | None = None
        self._restarts: dict[str, int] = {}
        self._joins_seen: dict[int, int] = {}
        self._stopped = False
        self.token = secrets.token_bytes(16)  # this run's admission token

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Swarm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Swarm:
        bdir = self.build_dir or build_executables()
        self.build_dir = bdir
        with _lock:
            _live.add(self)
            _install_handlers()
        try:
            self._start_stations()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_stations(self, gateway_port: int = 0) -> None:
        """The medium, then every node, then the gateway; each joined."""
        self._start_medium()
        for d in range(self.nodes):
            self._start_node(d, wait=False)
        for d in range(self.nodes):
            self.node[d].wait_ready()
        self.wait_joined(range(self.nodes))
        self._start_gateway(gateway_port)
        self.wait_joined([-1])

    def _log_path(self, name: str) -> Path:
        k = self._restarts.get(name, 0)
        self._restarts[name] = k + 1
        return self.workdir / (f"{name}.log" if k == 0 else f"{name}.{k}.log")

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        env = {TOKEN_ENV: self.token.hex()}
        log = self._log_path(name)
        try:
            proc = Proc(name, argv, log, self._pgid, env)
        except PermissionError:  # every process of the group has exited: a new group
            self._pgid = None
            proc = Proc(name, argv, log, None, env)
        if self._pgid is None:
            self._pgid = proc.pid
        return proc

    def _start_medium(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "cats.sim.medium",
            "--port",
            "0",
            "--link",
            self.phy.name,
            "--seed",
            str(self.seed),
            "--nodes",
            str(self.nodes),
            "--tag",
            hex(self.tag),
            "--slot-timeout",
            str(self.slot_timeout),
            "--log",
            str(self.log),
            "--mic",
            str(self.mic),
            "--export",
            str(self.export_dir),
        ]
        if self.mac is not None:
            argv += ["--mac", self.mac]
        for spec in self.loss:
            argv += ["--loss", spec]
        if self.pcap:
            argv += ["--pcap", str(self.pcap)]
        self.medium = self._spawn("medium", argv)
        line = self.medium.wait_ready()
        m = re.search(r"port=(\d+)", line)
        if not m:
            raise SwarmError(f"medium ready line without a port: {line!r}")
        self.medium_port = int(m.group(1))

    @property
    def medium_address(self) -> str:
        return f"127.0.0.1:{self.medium_port}"

    def node_argv(self, d: int) -> list[str]:
        assert self.build_dir is not None
        return [
            str(self.build_dir / NODE_EXE),
            "--medium",
            self.medium_address,
            "--node-dir",
            str(self.export_dir / f"node-{d}"),
            "--mtu",
            str(self.phy.column_mtu),
            # the reported compute_us is the modelled M4 time (deterministic bytes on the air)
            "--cycles-per-mac",
            f"{self.instr_per_mac if self.instr_per_mac is not None else 1.5:.4f}",
            "--key-file",
            str(self.key_file),
            "--mic",
            str(self.mic),
        ] + self.extra_node_args

    def gateway_argv(self, port: int) -> list[str]:
        assert self.build_dir is not None
        argv = [str(self.build_dir / GATEWAY_EXE), "--medium", self.medium_address]
        argv += ["--partition", str(self.export_dir), "--listen", str(port)]
        argv += ["--phy", self.phy.name]  # cats_gateway_sim knows every cats.wire.phy link
        argv += ["--mac-gap-us", f"{self.phy.mac.per_frame_us:g}"]  # its frames' MAC time
        argv += ["--mtu", str(self.phy.column_mtu), "--deadline-ms", str(self.deadline_ms)]
        # a (re)started gateway never reuses an inference id (a nonce) under this key
        argv += ["--key-file", str(self.key_file), "--mic", str(self.mic)]
        first, end = auth.reserve_inference_ids(self.key_file)
        argv += ["--first-inference", str(first), "--inference-limit", str(end)]
        if self.instr_per_mac is not None:
            argv += ["--instr-per-mac", f"{self.instr_per_mac:.4f}"]
        return argv

    def _start_node(self, d: int, wait: bool = True) -> Proc | ExternalStation:
        if d in self.external:
            proc: Proc | ExternalStation = ExternalStation(self, d, self.external[d])
        else:
            proc = self._spawn(f"node-{d}", self.node_argv(d))
        self.node[d] = proc
        if wait:
            proc.wait_ready()
        return proc

    def _start_gateway(self, port: int = 0) -> None:
        port = port or free_port()
        self.gateway = self._spawn("gateway", self.gateway_argv(port))
        line = self.gateway.wait_ready()
        m = re.search(r"port=(\d+)", line)
        self.gateway_port = int(m.group(1)) if m else port

    def joins(self) -> list[int]:
        """Station ids of the medium's join events so far, in order."""
        try:
            text = self.log.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            if '"event":"join"' in line:
                with contextlib.suppress(ValueError, KeyError):
                    out.append(int(json.loads(line)["station"]))
        return out

    def wait_joined(self, ids, timeout: float = READY_TIMEOUT) -> None:
        """Until the medium has logged a join of every station in `ids` (since the last
        restart of each: counts joins, so a restarted node must join once more)."""
        want = Counter(ids)
        for i in want:
            want[i] += self._joins_seen.get(i, 0)
        end = time.monotonic() + timeout
        while True:
            have = Counter(self.joins())
            if all(have[i] >= n for i, n in want.items()):
                self._joins_seen.update({i: have[i] for i in want})
                return
            if self.medium is not None and not self.medium.alive():
                raise SwarmError(f"the medium exited:\n{self.medium.tail()}")
            if time.monotonic() > end:
                raise SwarmError(f"stations {sorted(want)} did not join the medium")
            time.sleep(0.01)

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.gateway_port}"

    def client(self, timeout: float = 60.0) -> GatewayClient:
        return GatewayClient(self.endpoint, timeout=timeout, token=self.token)

    def pids(self) -> list[int]:
        procs = [self.medium, self.gateway, *self.node.values()]
        return [p.pid for p in procs if p is not None]

    def stop(self) -> None:
        """SIGTERM to every child (gateway and nodes first, the medium last, so it writes its
        final counters), wait, SIGKILL what is left; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        procs = [p for p in (self.gateway, *self.node.values()) if p is not None]
        for p in procs:
            if p.alive():
                p.signal(signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.0, end - time.monotonic()))
        if self.medium is not None:
            self.medium.stop()
        for p in procs:
            p.stop(grace=0.0)
        if self._pgid is not None:  # anything else that joined the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signal.SIGKILL)
        with _lock:
            _live.discard(self)
            if not _live:
                _restore_handlers()

    def cleanup(self) -> None:
        """stop() and remove the work directory if this swarm made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- faults ------------------------------------------------------------------------------
    def kill_node(self, d: int, sig: int = signal.SIGKILL) -> None:
        proc = self.node[d]
        proc.signal(sig)
        proc.popen.wait(STOP_GRACE)

    def restart_node(self, d: int) -> None:
        """A new process for node d; returns once the medium has seen it join."""
        old = self.node.get(d)
        if old is not None and old.alive():
            old.stop()
        self._start_node(d)
        self.wait_joined([d])

    def kill_gateway(self, sig: int = signal.SIGKILL) -> None:
        assert self.gateway is not None
        self.gateway.signal(sig)
        self.gateway.popen.wait(STOP_GRACE)

    def restart_gateway(self, same_port: bool = True) -> None:
        """A new gateway process (on the same bridge port by default)."""
        if self.gateway is not None and self.gateway.alive():
            self.gateway.stop()
        self._start_gateway(self.gateway_port if same_port else 0)
        self.wait_joined([-1])

    def check_alive(self) -> None:
        for p in (self.medium, self.gateway, *self.node.values()):
            if p is not None and not p.alive():
                raise SwarmError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")

    def restart_medium(self) -> None:
        """A new medium (on a new port; its log starts afresh, the old one is kept as
        medium.<k>.jsonl); every station had to go with the old one: the nodes and the gateway
        (on its bridge port) are started again and join."""
        for p in (self.gateway, *self.node.values()):
            if p is not None and p.alive():
                p.stop()
        if self.medium is not None and self.medium.alive():
            self.medium.stop()
        k = self._restarts.get("medium", 1)
        with contextlib.suppress(OSError):
            self.log.rename(self.log.with_suffix(f".{k}.jsonl"))
        self._joins_seen = {}
        self._start_stations(self.gateway_port)


class Supervisor:
    """Keeps a Swarm serving (``cats serve``): a thread that restarts, with backoff, a node,
    the gateway or the medium that exited; the restarted process rejoins (a new medium takes
    every station with it). A process that dies again within ``STABLE_S`` of its restart waits
    twice as long before the next (``BACKOFF_MIN_S`` .. ``BACKOFF_MAX_S``). ``restarts`` counts
    them per process; ``events`` says what happened (also given to ``on_event``)."""

    BACKOFF_MIN_S = 0.2
    BACKOFF_MAX_S = 5.0
    STABLE_S = 10.0
    PERIOD_S = 0.1

    def __init__(self, swarm: Swarm, on_event: Any = None) -> None:
        self.swarm = swarm
        self.on_event = on_event
        self.restarts: Counter[str] = Counter()
        self.events: list[str] = []
        self._backoff: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cats-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread (before the swarm is stopped, so nothing is restarted then)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30.0)

    def _event(self, text: str) -> None:
        self.events.append(text)
        if self.on_event is not None:
            self.on_event(text)

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            try:
                self.check()
            except Exception as exc:  # a restart that failed: tried again after its backoff
                self._event(f"restart failed: {exc}".splitlines()[0])

    def _dead(self) -> list[str]:
        sw = self.swarm
        dead = []
        if sw.medium is not None and not sw.medium.alive():
            return ["medium"]
        if sw.gateway is not None and not sw.gateway.alive():
            dead.append("gateway")
        dead += [f"node-{d}" for d, p in sorted(sw.node.items()) if not p.alive()]
        return dead

    def _ready(self, name: str, now: float) -> bool:
        """Whether name's restart is due (its backoff has passed since it was seen dead)."""
        if name not in self._due:
            quick = now - self._started.get(name, -1e9) < self.STABLE_S
            b = self._backoff.get(name, 0.0)
            b = min(self.BACKOFF_MAX_S, max(self.BACKOFF_MIN_S, 2 * b)) if quick else 0.0
            self._backoff[name] = b
            self._due[name] = now + b
        return now >= self._due[name]

    def check(self) -> None:
        """One round: restart what is dead and due."""
        sw = self.swarm
        now = time.monotonic()
        for name in self._dead():
            if self._stop.is_set() or sw._stopped or not self._ready(name, now):
                continue
            del self._due[name]
            proc = sw.medium if name == "medium" else None
            if name == "gateway":
                proc = sw.gateway
            elif name.startswith("node-"):
                proc = sw.node[int(name[5:])]
            code = None if proc is None else proc.popen.returncode
            self._started[name] = time.monotonic()
            self.restarts[name] += 1
            self._event(f"{name} exited ({code}); restarting (restart {self.restarts[name]})")
            if name == "medium":
                sw.restart_medium()
            elif name == "gateway":
                sw.restart_gateway()
            else:
                sw.restart_node(int(name[5:]))
            self._event(f"{name} is back")


# ----------------------------------------------------------------------------------------------
# External stations: a node image outside the host build joins through a serial relay
# ----------------------------------------------------------------------------------------------


def _resolve_spec(spec: str) -> str:
    """`native_sim:PATH [ARGS]` with PATH made absolute (the children run in REPO_ROOT)."""
    kind, _, rest = spec.partition(":")
    if kind == "native_sim":
        argv = shlex.split(rest)
        if not argv:
            raise ValueError(f"native_sim station without an executable: {spec!r}")
        if os.sep in argv[0] or Path(argv[0]).exists():
            argv[0] = os.path.abspath(argv[0])  # not resolve(): a venv python is a link
        return "native_sim:" + shlex.join(argv)
    if kind == "serial":
        if not urlsplit(rest).path:
            raise ValueError(f"serial station without a device: {spec!r}")
        return spec
    raise ValueError(f"external station must be native_sim:PATH or serial:DEVICE: {spec!r}")


class ExternalStation:
    """Node d played by a station that speaks the simulation link on a serial line, with
    ``python -m cats.sim.pty_link`` relaying that line to the medium:

    * ``native_sim:PATH [ARGS]``: a Zephyr node image built for native_sim (samples/node) is
      started here (log ``node-<d>.log``); the relay (log ``node-<d>-link.log``) opens the PTY
      its stdout names for the link UART, the sample's ``uart_1`` (``uart_1 connected to
      pseudotty: /dev/pts/N``);
    * ``serial:DEVICE[?baud=N&rtscts=1&parity=E...]``: only the relay (a board on a UART, or
      the PTY of a station started elsewhere).

    To the Swarm it looks like a Proc: ``popen``/``signal()`` are the station's (the relay's
    for ``serial:``), so kill/hang faults hit the node image; ``stop()``/``kill()`` end both.
    """

    def __init__(self, swarm: Swarm, d: int, spec: str) -> None:
        self.swarm, self.d, self.spec = swarm, d, spec
        self.name = f"node-{d}"
        kind, _, rest = spec.partition(":")
        self.station: Proc | None = None
        self.relay: Proc | None = None
        self.device: str | None = None
        self.relay_args: list[str] = []
        if kind == "native_sim":
            self.station = swarm._spawn(self.name, shlex.split(rest))
        else:
            url = urlsplit(rest)
            self.device = url.path
            for key, values in parse_qs(url.query).items():
                if key in ("rtscts", "xonxoff"):
                    if values[-1] not in ("", "0", "false"):
                        self.relay_args.append(f"--{key}")
                else:
                    self.relay_args += [f"--{key}", values[-1]]
            self._start_relay()

    @property
    def main(self) -> Proc:
        proc = self.station or self.relay
        assert proc is not None
        return proc

    @property
    def popen(self) -> subprocess.Popen:
        return self.main.popen

    @property
    def pid(self) -> int:
        return self.main.pid

    @property
    def log(self) -> Path:
        return self.main.log

    def _start_relay(self) -> None:
        argv = [sys.executable, "-m", "cats.sim.pty_link", "--device", str(self.device)]
        argv += ["--medium", self.swarm.medium_address, *self.relay_args]
        self.relay = self.swarm._spawn(f"{self.name}-link", argv)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Once the relay has both ends open (the medium's join is Swarm.wait_joined's)."""
        from cats.sim.pty_link import DEFAULT_UART, find_pty

        end = time.monotonic() + timeout
        while self.relay is None:
            assert self.station is not None
            self.device = find_pty(self.station.log.read_text(errors="replace"), DEFAULT_UART)
            if self.device is not None:
                self._start_relay()
            elif not self.station.alive():
                raise SwarmError(
                    f"{self.name} exited ({self.station.popen.returncode}) before it named "
                    f"the PTY of {DEFAULT_UART}:\n{self.station.tail()}"
                )
            elif time.monotonic() > end:
                raise SwarmError(
                    f"{self.name} did not name the PTY of {DEFAULT_UART} in {timeout:.0f} s "
                    f"(a native_sim build of samples/node?):\n{self.station.tail()}"
                )
            else:
                time.sleep(0.01)
        assert self.relay is not None
        return self.relay.wait_ready(max(1.0, end - time.monotonic()))

    def alive(self) -> bool:
        return self.main.alive() and (self.relay is None or self.relay.alive())

    def tail(self, n: int = 20) -> str:
        procs = [p for p in (self.station, self.relay) if p is not None]
        return "\n".join(f"[{p.name}]\n{p.tail(n)}" for p in procs)

    def signal(self, sig: int) -> None:
        self.main.signal(sig)

    def stop(self, grace: float = STOP_GRACE) -> None:
        if self.station is not None:
            self.station.stop(grace)
        if self.relay is not None:  # it ends by itself once the station's PTY closes
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.relay.popen.wait(max(grace, 1.0))
            self.relay.stop(grace)

    def kill(self) -> None:
        for p in (self.station, self.relay):
            if p is not None:
                p.kill()
