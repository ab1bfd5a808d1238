"""`cats sim --backend bsim`: the swarm as real Zephyr firmware on BabbleSim.

Every node is the node sample (``cats_zephyr_module/samples/node``) and the gateway the gateway
sample (``samples/gateway``), built for Zephyr's ``nrf52_bsim`` board: the nRF52840's radio,
timers and RTC modelled by nrf_hw_models, Zephyr's own BLE controller (LL split, extended
advertising) or the nRF 802.15.4 radio driver with the native 802.15.4 L2, exactly the code
that runs on the DK. The D + 1 devices share BabbleSim's 2.4 GHz phy (``bs_2G4_phy_v1``),
whose channel model decides what each receiver hears (``-at``: attenuation in dB between all
devices; higher attenuation means bit errors, so CRC failures, so lost frames).

The gateway reads the InferRequests from a host file and writes the answers and the
simulated time of each (BabbleSim's clock, µs) to two more (samples/gateway/src/
bridge_host.c); once every request is answered it exits and the simulation ends. The
results have the JSON fields of the simulated swarm (``cats.sim.run.simulate``) where the
firmware can tell them (status, degraded, missing nodes, outputs, bit-exactness against
``cats.quant.qref``, air bytes of the gateway's frames), plus ``simulated_latency_s`` per inference.
The CPU of a simulated nRF52 is infinitely fast (code takes no simulated time), so the
simulated latency is the radio stack's: MAC, scheduling, airtime; compare it with the
medium's modelled *airtime*.

Needs a Zephyr tree (ZEPHYR_BASE, west) and BabbleSim (BSIM_OUT_PATH, BSIM_COMPONENTS_PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cats.base.paths import REPO_ROOT
from cats.sim.run import load_run, simulate
from cats.wire import phy as phys
from cats.wire import stream

MODULE = REPO_ROOT / "cats_zephyr_module"
NODE_APP = MODULE / "samples" / "node"
GATEWAY_APP = MODULE / "samples" / "gateway"
BOARD = "nrf52_bsim"
# `cats sim --link` (the medium's PHY models, cats.wire.phy) -> the firmware's link (CATS_LINK)
LINKS = {"ieee802154": "ieee802154", "ble2m": "ble", "ble2m-aux": "ble"}
GATEWAY_START_MS = 300  # simulated time before the first request: every node is up by then


class BsimUnavailable(RuntimeError):
    """No Zephyr tree or no BabbleSim here (the reason says which)."""


@dataclass(frozen=True)
class BsimEnv:
    zephyr_base: Path
    bsim_out: Path
    bsim_components: Path

    @property
    def phy(self) -> Path:
        return self.bsim_out / "bin" / "bs_2G4_phy_v1"


def environment() -> BsimEnv:
    """The Zephyr tree and BabbleSim from ZEPHYR_BASE, BSIM_OUT_PATH, BSIM_COMPONENTS_PATH."""
    zb = os.environ.get("ZEPHYR_BASE")
    out = os.environ.get("BSIM_OUT_PATH")
    comp = os.environ.get("BSIM_COMPONENTS_PATH")
    if not zb or not (Path(zb) / "cmake" / "modules" / "zephyr_default.cmake").is_file():
        raise BsimUnavailable("ZEPHYR_BASE is not set to a Zephyr tree (west.yml pins v4.3.0)")
    if not out or not comp:
        raise BsimUnavailable("BSIM_OUT_PATH / BSIM_COMPONENTS_PATH are not set (BabbleSim)")
    env = BsimEnv(Path(zb), Path(out), Path(comp))
    if not env.phy.is_file():
        raise BsimUnavailable(f"{env.phy} is missing: build BabbleSim (make everything)")
    if shutil.which("west") is None and not _module_west():
        raise BsimUnavailable("west is not installed")
    return env


def _module_west() -> bool:
    try:
        import west  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def _west() -> list[str]:
    """`west` on PATH: the environment the Zephyr tree's Python requirements
    (zephyr/scripts/requirements-base.txt) are installed in; else this interpreter's."""
    exe = shutil.which("west")
    return [exe] if exe else [sys.executable, "-m", "west"]


def _west_build(app: Path, bdir: Path, defs: list[str], log: Path) -> Path:
    cmd = [*_west(), "build", "-b", BOARD, "-d", str(bdir), "-p", "auto"]
    cmd += [str(app), "--", *defs]
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    exe = (bdir / "zephyr" / "zephyr.exe").resolve()
    if proc.returncode != 0 or not exe.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"west build of {app.name} for {BOARD} failed ({log}):\n{tail}")
    return exe


def build_images(
    partition_dir: Path,
    link: str,
    out_dir: Path,
    nodes: int,
    progress: bool = False,
    key_file: Path | None = None,
    mic: int = 8,
    mac: str | None = None,
) -> dict[str, Any]:
    """Build (or bring up to date) the node images and the gateway image of a partition for
    nrf52_bsim: ``out_dir/node-<d>`` and ``out_dir/gateway``, provisioned with the swarm key
    of `key_file` (default: ``out_dir/swarm.key``, created once) and a MIC of `mic` bytes."""
    from cats.wire import auth

    if link not in LINKS.values():
        raise ValueError(f"link {link!r}: the firmware links are {', '.join(set(LINKS.values()))}")
    environment()
    out_dir.mkdir(parents=True, exist_ok=True)
    part = str(Path(partition_dir).resolve())
    key = auth.load_key(auth.key_file(key_file, out_dir))
    common = [f"-DCATS_PARTITION_DIR={part}", f"-DCATS_LINK={link}"]
    common.append(f'-DCONFIG_CATS_SWARM_KEY="{key.hex()}"')  # a Kconfig string
    common.append(f"-DCONFIG_CATS_MIC_LEN={mic}")
    if link == "ieee802154" and mac is not None:  # Kconfig CATS_802154_CHANNEL_ACCESS
        common.append(f"-DCATS_802154_ACCESS={mac}")  # cmake/cats_link.cmake: csma | direct
    images: dict[str, Any] = {"nodes": []}
    for d in range(nodes):
        if progress:
            print(f"  bsim: building node {d} ({link})", file=sys.stderr)
        bdir = out_dir / f"node-{d}"
        images["nodes"].append(
            str(
                _west_build(
                    NODE_APP,
                    bdir,
                    [*common, f"-DCATS_NODE_ID={d}"],
                    out_dir / f"build-node-{d}.log",
                )
            )  # fmt: skip
        )
    if progress:
        print(f"  bsim: building the gateway ({link})", file=sys.stderr)
    images["gateway"] = str(
        _west_build(GATEWAY_APP, out_dir / "gateway", common, out_dir / "build-gateway.log")
    )
    return images


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _requests(inputs: np.ndarray, partition_hash: bytes, deadline_ms: int) -> bytes:
    from cats.wire.proto import pb

    out = bytearray()
    for i, x in enumerate(inputs):
        req = pb().InferRequest(
            request_id=i + 1,
            partition_hash=partition_hash,
            input=np.asarray(x, dtype=np.int8).tobytes(),
            deadline_ms=deadline_ms,
        )
        msg = pb().GatewayMessage(infer_request=req)
        out += stream.encode(stream.GATEWAY, msg.SerializeToString())
    return bytes(out)


def run_swarm(
    images: dict[str, Any],
    inputs: np.ndarray,
    partition_hash: bytes,
    *,
    workdir: Path,
    seed: int = 0,
    attenuation_db: float | None = None,
    deadline_ms: int = 60000,
    timeout_s: float = 1800.0,
    gateway_flash: Path | None = None,
    dump: bool = False,
) -> tuple[list[Any], list[tuple[int, int]], dict[str, Any]]:
    """Run the D + 1 devices and the phy until the gateway has answered every input.
    gateway_flash: a file holding the gateway's simulated flash across runs (its settings:
    the inference id counter), as a real gateway's flash survives a reboot; None: erased.
    Returns (InferResults, (request taken, answer sent) in simulated µs, run info)."""
    from cats.wire.proto import pb

    env = environment()
    workdir.mkdir(parents=True, exist_ok=True)
    req = workdir / "requests.bin"
    res = workdir / "results.bin"
    times = workdir / "times.txt"
    req.write_bytes(_requests(inputs, partition_hash, deadline_ms))
    res.write_bytes(b"")
    times.write_text("")
    sim_id = f"cats_{uuid.uuid4().hex[:12]}"
    nodes = list(images["nodes"])
    devices = len(nodes) + 1
    # simulated length: a safety net only (the gateway ends the run); deadline per inference
    sim_length_us = int((GATEWAY_START_MS + (deadline_ms + 2000) * len(inputs)) * 1000)
    phy = [str(env.phy), f"-s={sim_id}", f"-D={devices}", f"-sim_length={sim_length_us}",
           "-defmodem=BLE_simple"]  # fmt: skip
    if dump:  # every device's Tx / Rx to $BSIM_OUT_PATH/results/<sim_id>/d_2G4_*.csv
        phy.append("-dump")
    if attenuation_db is not None:
        phy += ["-channel=multiatt", "-argschannel", f"-at={attenuation_db}", "-argsmain"]
    cmds = [phy]
    for d, exe in enumerate(nodes):
        cmds.append([exe, f"-s={sim_id}", f"-d={d}", f"-rs={seed * 131 + d + 1}"])
    cmds.append([images["gateway"], f"-s={sim_id}", f"-d={len(nodes)}",
                 f"-rs={seed * 131 + 1000}", f"-cats_requests={req}", f"-cats_results={res}",
                 f"-cats_times={times}", f"-cats_start_ms={GATEWAY_START_MS}"])  # fmt: skip
    if gateway_flash is not None:
        cmds[-1].append(f"-flash={gateway_flash}")  # nrf_hw_models' NVMC backing file
    names = ["phy", *[f"node-{d}" for d in range(len(nodes))], "gateway"]
    run_env = dict(os.environ, BSIM_OUT_PATH=str(env.bsim_out),
                   BSIM_COMPONENTS_PATH=str(env.bsim_components))  # fmt: skip
    procs: list[subprocess.Popen] = []
    logs = []
    t0 = time.monotonic()
    try:
        for name, cmd in zip(names, cmds, strict=True):
            fh = (workdir / f"{name}.log").open("w")
            logs.append(fh)
            procs.append(
                subprocess.Popen(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, env=run_env, cwd=env.bsim_out / "bin"
                )  # fmt: skip
            )
        end = t0 + timeout_s
        while time.monotonic() < end and procs[0].poll() is None:
            time.sleep(0.2)
        timed_out = procs[0].poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for fh in logs:
            fh.close()
    wall = time.monotonic() - t0
    answers = []
    for mtype, payload in stream.Decoder().feed(res.read_bytes()):
        if mtype == stream.GATEWAY:
            msg = pb().GatewayMessage.FromString(payload)
            if msg.WhichOneof("msg") == "infer_result":
                answers.append(msg.infer_result)
    stamps = [tuple(int(v) for v in ln.split()) for ln in times.read_text().splitlines() if ln]
    info = {
        "sim_id": sim_id,
        "devices": devices,
        "wall_s": wall,
        "timed_out": timed_out,
        "exit_codes": {n: p.returncode for n, p in zip(names, procs, strict=True)},
        "workdir": str(workdir),
    }
    if dump:
        info["dump_dir"] = str(env.bsim_out / "results" / sim_id)
    return answers, stamps, info  # type: ignore[return-value]


def simulate_bsim(
    partition_dir: Path,
    *,
    link: str = "ieee802154",
    inferences: int = 2,
    data: str | None = None,
    seed: int = 0,
    attenuation_db: float | None = None,
    build_dir: Path | None = None,
    workdir: Path | None = None,
    deadline_ms: int = 60000,
    compare_medium: bool = True,
    progress: bool = False,
    key_file: Path | None = None,
    mic: int = 8,
    mac: str | None = None,
    dump: bool = False,
) -> dict[str, Any]:
    """`cats sim --backend bsim`: build the images, run K windows on BabbleSim, check every
    result against qref, and put the simulated latency beside the medium's model. dump: the
    phy writes every frame's timing (``run.dump_dir``; bench/swarm/bsim_gaps.py reads it)."""
    import tempfile

    from cats.quant import qref

    partition_dir = Path(partition_dir)
    run = load_run(partition_dir, data, inferences)
    summary, loaded, inputs, dataset = run.summary, run.loaded, run.inputs, run.dataset
    specs = [n.spec for n in loaded]
    man = loaded[0].manifest
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cats-bsim-")
        workdir = Path(tmp.name)
    if link not in LINKS:
        raise ValueError(f"--link {link}: the bsim backend runs {', '.join(LINKS)}")
    fw_link = LINKS[link]
    phys.get(link, mac)  # refuse a MAC the link does not have
    build_dir = build_dir or partition_dir / f"bsim-{fw_link}{'-' + mac if mac else ''}"
    images = build_images(
        partition_dir, fw_link, build_dir, len(specs), progress=progress, key_file=key_file,
        mic=mic, mac=mac,
    )  # fmt: skip
    if progress:
        print(f"  bsim: running {len(specs)} nodes + gateway, {len(inputs)} inferences",
              file=sys.stderr)  # fmt: skip
    answers, stamps, info = run_swarm(
        images,
        inputs,
        bytes(man.partition_hash),
        workdir=workdir,
        seed=seed,
        attenuation_db=attenuation_db,
        deadline_ms=deadline_ms,
        # one gateway device per build directory: each run is a reboot of it
        gateway_flash=build_dir / "gateway-flash.bin",
        dump=dump,
    )
    nodes = [n.runtime() for n in loaded]
    lossy = attenuation_db is not None
    per = []
    for i, res in enumerate(answers):
        clean = qref.run_swarm(nodes, inputs[i])
        got = np.frombuffer(res.output, dtype=np.int8)
        t_in, t_out = stamps[i] if i < len(stamps) else (0, 0)
        complete = res.status == 0 and not res.degraded
        per.append(
            {
                "request_id": int(res.request_id),
                "inference_id": int(res.inference_id),
                "status": int(res.status),
                "message": res.message,
                "degraded": bool(res.degraded),
                "missing_nodes": sorted(int(m) for m in res.missing_nodes),
                "output": got.tolist(),
                # with nothing lost the swarm must compute qref's bits exactly
                "bit_exact": bool(
                    complete and got.shape == clean.shape and np.array_equal(got, clean)
                ),  # fmt: skip
                "columns_lost": sum(int(n.counters.columns_lost) for n in res.nodes),
                "frames_sent": sum(int(n.counters.frames_sent) for n in res.nodes),
                "gateway": {
                    "air_bytes": int(res.air_bytes),
                    "modelled_latency_s": float(res.modelled_latency_s),
                },  # fmt: skip
                "simulated_latency_s": (t_out - t_in) / 1e6,
            }
        )
    # counters are cumulative: per inference, the difference to the one before
    for key in ("columns_lost", "frames_sent"):
        prev = 0
        for row in per:
            row[key], prev = row[key] - prev, row[key]
    n = max(1, len(per))
    out: dict[str, Any] = {
        "ok": len(per) == len(inputs) and all(r["status"] == 0 for r in per),
        "backend": "bsim",
        "board": BOARD,
        "partition_dir": str(partition_dir),
        "partition_hash": summary.get("partition_hash"),
        "nodes": len(specs),
        "link": link,
        "loss": f"multiatt:{attenuation_db}dB" if lossy else "none",
        "seed": seed,
        "inferences": len(inputs),
        "dataset": dataset,
        "bit_exact": len(per) == len(inputs) and all(r["bit_exact"] for r in per),
        "degraded": sum(r["degraded"] for r in per),
        "frames_sent": sum(r["frames_sent"] for r in per),
        "columns_lost": sum(r["columns_lost"] for r in per),
        "simulated_latency_s": sum(r["simulated_latency_s"] for r in per) / n,
        "images": images,
        "run": info,
        "per_inference": per,
    }
    if compare_medium:
        med = simulate(partition_dir, link=link, inputs=inputs, mic=mic, mac=mac)
        out["medium"] = {
            "bit_exact": med["bit_exact"],
            "modelled_latency_s": med["modelled_latency_s"],
            "airtime_s": med["airtime_s"],
            "output_turns_s": med["output_turns_s"],
            "airtime_payload_only_s": med["airtime_payload_only_s"],
            "airtime_floor_ratio": med["airtime_floor_ratio"],
            "mac": med["mac"]["name"],
            "compute_s": med["compute_s"],
            "air_bytes": med["air_bytes"],
        }
        if per and med["airtime_s"] > 0:
            # the nRF52 CPU takes no simulated time: compare the radio part only
            out["latency_ratio_vs_medium_airtime"] = out["simulated_latency_s"] / med["airtime_s"]
            # the radio part of the modelled latency: airtime with MAC + the output turns
            out["latency_ratio_vs_medium_radio"] = out["simulated_latency_s"] / (
                med["airtime_s"] + med["output_turns_s"]
            )
            out["latency_ratio_vs_medium_payload_only"] = (
                out["simulated_latency_s"] / med["airtime_payload_only_s"]
            )
    if tmp is not None:
        tmp.cleanup()
        out["run"]["workdir"] = None
    return out
