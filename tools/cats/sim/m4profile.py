"""Per-function instruction profile of one node's inference on the Cortex-M4 image under QEMU.

    python -m cats.sim.m4profile --swarm build/parts/verytiny-d8 [--json]   # loss-free swarm
    python -m cats.sim.m4profile build/m4/cats_m4_node_qemu.elf [--json]    # any node image

What runs. ``--swarm PART`` profiles node 0 of that export as it runs in a loss-free swarm:
the host swarm (``cats sim``) runs one inference on the M4 image's input (node_main.c
make_input), the medium's pcap gives every ColumnFrame the other nodes sent, and those are
linked into ``cats_m4_node_swarm_qemu.elf`` (cats_zephyr_module/m4, CATS_REPLAY_FRAMES; built
in build/m4-swarm-d<D>), whose link hands them to the runner exchange by exchange: the node
receives, decodes and stores what it would in the swarm, and its output is bit-exact with the
swarm's. ``cats_m4_node_qemu.elf`` (``make m4``) instead runs node 0 over a loopback link in a
swarm of silent nodes (every other column lost: no receive work, lost columns zeroed).

How it measures. ``cats_m4_node_qemu.elf`` (cats_zephyr_module/m4, ``make m4``) runs node 0's
whole runtime for one inference (manifest decode, cats_runner over a loopback link, kernels,
SomeGather encode/decode). QEMU 7.2 (no TCG plugins in Debian's build) logs every translated
block with its guest instructions (``-d in_asm``) and every block it executes
(``-d exec,nochain``: chaining off, so each execution is one ``Trace`` line). Counting the
instructions of each executed block, attributed to the ELF symbol that contains each
instruction (``arm-none-eabi-nm``), gives instructions per function; only the executions
between the entry of ``cats_runner_infer`` and its return to ``main`` are counted (the
inference, not the init's SHA-256 and manifest decode). The total agrees with the image's own
CMSDK-timer count (``insn ... infer N``, 40 instructions per tick) to a fraction of a percent
(blocks rewound by ``cpu_io_recompile`` at a timer read count twice).

Cycles are an *estimate from the instruction mix* (QEMU counts instructions, not cycles):
Cortex-M4 Technical Reference Manual, table 3-1 "Processor instruction timings": ALU, MOV,
MUL/MLA, the DSP SMLAD/SXTB16/SSAT family 1 cycle; LDR/STR (one register) 2 (a load followed
by a load can pipeline to 1: ignored, so this is an upper bound for load runs); LDM/STM/PUSH/
POP 1 + registers; LDRD/STRD 3; branches 1 + P with P = 1..3 pipeline refill: 2 on average
here (taken or not is not known from the log); SDIV/UDIV 2..12: 7; UMULL/SMULL/SMLAL 1 (the
M4F's 64-bit multiplies take 1 cycle); VFP arithmetic 1, VDIV/VSQRT 14. Flash wait states
(nRF52840: 0 with the cache enabled) and interrupts are not modelled.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

QEMU_ARGS = [
    "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
    "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
]  # fmt: skip

# Function groups of a node's inference. "matmul" covers every multiply-accumulate kernel
# (the blocked DSP matmul and its helpers, the one-row path, attention's QK^T / PV loops).
GROUPS: dict[str, tuple[str, ...]] = {
    "matmul": (
        "cats_matmul_s8", "cats_matmul_s8_dsp", "cats_matmul_s8_c", "mm_tiles", "widen16",
        "widen16_al", "widen_pair", "rq_rows2", "rq_tile", "matmul_row", "linear",
        "cats_attention_s8",
    ),
    "layernorm": ("cats_layer_norm_s8", "cats_isqrt64"),
    "softmax": ("cats_softmax_s8",),
    "activation": ("cats_lut_s8",),
    "requant/add": ("cats_add_s8", "cats_pool_s8"),
    "framing": (
        "cats_sg_encode", "cats_sg_frame_count", "sg_pack", "sg_count", "sg_setup",
        "sg_plan_frames", "frame_len", "set_frame", "scalar_len", "varint_len",
        "delimited_len", "cats_node_outgoing", "cats_sg_receive", "cats_sg_partition_tag",
        "pb_", "encode_", "decode_", "load_descriptor_values", "advance_iterator",
        "loop_send", "loop_recv", "cats_node_put", "cats_auth_header", "scan_varint",
    ),
    "slot lookup": (
        "find_slot", "held_slot", "cats_node_has", "cats_node_owner", "cats_split_owner",
        "cats_node_slot", "sender_done", "all_present",
    ),
    # AES-CCM* of every frame (issue 10): mbed TLS's software AES on this image; the nRF52840's
    # CryptoCell / AES ECB peripheral could take it off the CPU (not modelled by QEMU).
    "authentication": (
        "mbedtls_", "ccm_", "aes_", "cats_auth_", "cats_ccm_", "build_aad",
    ),
}  # fmt: skip

MATMUL_GROUPS = ("matmul",)


def group_of(func: str) -> str:
    base = func.split(".", 1)[0]  # linear.isra.0 -> linear
    for group, names in GROUPS.items():
        for name in names:
            if base == name or (name.endswith("_") and base.startswith(name)):
                return group
    return "other"


# --- cycle estimate ----------------------------------------------------------------------------

_BRANCH = re.compile(
    r"^(b|bl|blx|bx|cbz|cbnz|tbb|tbh)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)?(\.w|\.n)?$"
)  # noqa: E501


def cycles_of(mnemonic: str, operands: str) -> float:
    """Estimated Cortex-M4 cycles of one instruction (see the module docstring)."""
    m = mnemonic.lower()
    ops = operands.lower()
    if m.startswith(("sdiv", "udiv")):
        return 7.0
    if m.startswith(("vdiv", "vsqrt")):
        return 14.0
    if m.startswith(("push", "pop", "ldm", "stm", "vpush", "vpop", "vldm", "vstm")):
        regs = re.search(r"\{([^}]*)\}", ops)
        n = 1
        if regs:
            n = 0
            for part in regs.group(1).split(","):
                part = part.strip()
                if "-" in part:
                    a, b = (int(re.sub(r"\D", "", x) or 0) for x in part.split("-"))
                    n += b - a + 1
                elif part:
                    n += 1
        cyc = 1.0 + n
        if m.startswith("pop") and "pc" in ops:
            cyc += 2.0
        return cyc
    if m.startswith(("ldrd", "strd")):
        return 3.0
    if m.startswith(("ldr", "str", "vldr", "vstr")):
        if m.startswith("ldr") and ops.startswith("pc"):
            return 4.0
        return 2.0
    if _BRANCH.match(m):
        return 2.0
    if m.startswith(("mov", "add", "sub")) and ops.startswith("pc"):
        return 3.0
    return 1.0


# --- the trace ---------------------------------------------------------------------------------


def symbols(elf: Path) -> tuple[list[int], list[str]]:
    """Sorted start addresses of the function symbols (Thumb bit cleared) and their names."""
    nm = shutil.which("arm-none-eabi-nm") or "nm"
    out = subprocess.run([nm, "-n", str(elf)], capture_output=True, text=True, check=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16) & ~1)
            names.append(parts[2])
    return addrs, names


def infer_bounds(elf: Path, addrs: list[int], names: list[str]) -> tuple[int, int]:
    """(entry of cats_runner_infer, the return address of its call in main)."""
    entry = addrs[names.index("cats_runner_infer")]
    objdump = shutil.which("arm-none-eabi-objdump") or "objdump"
    dis = subprocess.run(
        [objdump, "-d", "--disassemble=main", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    lines = [ln for ln in dis.splitlines() if re.match(r"^\s+[0-9a-f]+:\s", ln)]
    for i, ln in enumerate(lines):
        if re.search(r"\sbl\s+[0-9a-f]+ <cats_runner_infer>", ln) and i + 1 < len(lines):
            return entry, int(lines[i + 1].split(":")[0], 16)
    raise RuntimeError("main does not call cats_runner_infer")


_INSN = re.compile(r"^0x([0-9a-f]+):\s+(?:[0-9a-f]{4} ?){1,2}\s+(\S+)\s*(.*)$")
_TRACE = re.compile(r"^Trace \d+: (0x[0-9a-f]+) \[[0-9a-f]+/([0-9a-f]+)/")


def parse_trace(
    lines: Iterable[str], start_pc: int, stop_pc: int
) -> tuple[Counter[int], dict[int, tuple[str, str]], int]:
    """Instruction executions by guest address within [first block at start_pc, first block at
    stop_pc after it); the mnemonic/operands by address; the number of block executions."""
    blocks: dict[str, list[int]] = {}
    insn: dict[int, tuple[str, str]] = {}
    pending: list[int] = []
    counts: Counter[int] = Counter()
    on = False
    execs = 0
    for line in lines:
        if line.startswith("0x"):
            m = _INSN.match(line)
            if m:
                a = int(m.group(1), 16)
                pending.append(a)
                insn[a] = (m.group(2), m.group(3))
            continue
        if line.startswith("IN:"):
            pending = []
            continue
        if line.startswith("Trace"):
            m = _TRACE.match(line)
            if not m:
                continue
            host, pc = m.group(1), int(m.group(2), 16)
            if pending:
                blocks[host] = pending
                pending = []
            if not on and pc == start_pc:
                on = True
            elif on and pc == stop_pc:
                break
            if on:
                execs += 1
                for a in blocks.get(host, ()):
                    counts[a] += 1
    return counts, insn, execs


def profile(elf: Path, timeout: float = 600) -> dict[str, Any]:
    """Run the image under QEMU with the exec log piped here; group the counts."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise RuntimeError("qemu-system-arm not installed")
    addrs, names = symbols(elf)
    start_pc, stop_pc = infer_bounds(elf, addrs, names)
    # the exec log on its own pipe (fd 3 in QEMU), semihosting output on stdout/stderr
    r_fd, w_fd = os.pipe()
    cmd = [qemu, *QEMU_ARGS, "-d", "in_asm,exec,nochain", "-D", f"/dev/fd/{w_fd}", "-kernel",
           str(elf)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as semi:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=semi, stderr=semi, text=True, pass_fds=(w_fd,)
        )
        os.close(w_fd)
        with os.fdopen(r_fd, "r") as log:
            counts, insn, execs = parse_trace(log, start_pc, stop_pc)
            for _ in log:  # drain
                pass
        proc.wait(timeout=timeout)
        semi.seek(0)
        out = semi.read()
    m = re.search(r"insn init \d+ infer (\d+)", out)
    timer = int(m.group(1)) if m else None
    o = re.search(r"output (\d+) (\d+)((?: -?\d+)*)", out)
    output = [int(v) for v in o.group(3).split()] if o else None
    per_func: Counter[str] = Counter()
    cyc_func: Counter[str] = Counter()
    for a, k in counts.items():
        i = bisect.bisect_right(addrs, a) - 1
        f = names[i] if i >= 0 else "?"
        per_func[f] += k
        cyc_func[f] += k * cycles_of(*insn[a])
    res = summarise(per_func, cyc_func, timer, execs, elf)
    res["output"] = output
    f = re.search(r"frames sent (\d+)", out)
    res["frames_sent"] = int(f.group(1)) if f else None
    return res


def summarise(
    per_func: Counter[str], cyc_func: Counter[str], timer: int | None, execs: int, elf: Path
) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"instructions": 0, "cycles": 0.0, "functions": {}}
    )
    for f, k in per_func.items():
        g = groups[group_of(f)]
        g["instructions"] += k
        g["cycles"] += cyc_func[f]
        g["functions"][f] = k
    total = sum(per_func.values())
    cycles = sum(cyc_func.values())
    order = [*GROUPS, "other"]
    table = []
    for name in order:
        g = groups.get(name)
        if g is None:
            continue
        top = sorted(g["functions"].items(), key=lambda kv: -kv[1])[:6]
        table.append(
            {
                "group": name,
                "instructions": g["instructions"],
                "share": g["instructions"] / total if total else 0.0,
                "cycles_est": round(g["cycles"]),
                "top_functions": dict(top),
            }
        )
    non_mm = sum(r["instructions"] for r in table if r["group"] not in MATMUL_GROUPS)
    auth = sum(r["instructions"] for r in table if r["group"] == "authentication")
    return {
        "elf": str(elf),
        "method": "qemu-system-arm 7.2 -d in_asm,exec,nochain; instructions per ELF symbol "
        "between cats_runner_infer's entry and its return; cycles estimated from the "
        "instruction mix (Cortex-M4 TRM timings, cats.sim.m4profile)",
        "instructions": total,
        "instructions_timer": timer,
        "blocks_executed": execs,
        "cycles_est": round(cycles),
        "cpi_est": cycles / total if total else 0.0,
        "ms_at_64mhz_est": cycles / 64e3,
        "non_matmul_share": non_mm / total if total else 0.0,
        "non_matmul_share_without_auth": (
            (non_mm - auth) / (total - auth) if total > auth else 0.0
        ),
        "groups": table,
    }


def format_table(res: dict[str, Any]) -> str:
    lines = [
        f"{'group':<12} {'instructions':>12} {'share':>7} {'cycles (est)':>13}  top functions",
    ]
    for r in res["groups"]:
        top = ", ".join(f"{f} {k / 1e3:.0f}k" for f, k in list(r["top_functions"].items())[:3])
        lines.append(
            f"{r['group']:<12} {r['instructions']:>12,} {r['share']:>6.1%} "
            f"{r['cycles_est']:>13,}  {top}"
        )
    lines.append(
        f"{'total':<12} {res['instructions']:>12,} {1:>6.1%} {res['cycles_est']:>13,}  "
        f"(timer count {res['instructions_timer']}; CPI est {res['cpi_est']:.2f}; "
        f"{res['ms_at_64mhz_est']:.1f} ms at 64 MHz; non-matmul "
        f"{res['non_matmul_share']:.1%}"
        + (
            f", without authentication {res['non_matmul_share_without_auth']:.1%})"
            if "non_matmul_share_without_auth" in res
            else ")"
        )
    )
    return "\n".join(lines)


M4_SRC = Path(__file__).resolve().parents[3] / "cats_zephyr_module" / "m4"
# cats_key and CATS_AUTH_MIC_DEFAULT of m4/node_main.c: the replayed frames must be sealed so
# the image's authentication accepts them.
M4_KEY = bytes([0x43, 0x41, 0x54, 0x53, 0x2D, 0x6D, 0x34, 0x2D, 0x6B, 0x65, 0x79, 0, 1, 2, 3, 4])
M4_MIC = 8
TOOLCHAIN = Path(__file__).resolve().parents[3] / "cmake" / "arm-none-eabi.cmake"


def m4_input(length: int) -> np.ndarray:
    """node_main.c make_input(): ((i * 37) % 255 - 127) / 2, truncated toward zero."""
    i = np.arange(length)
    v = (i * 37) % 255 - 127
    return np.trunc(v / 2).astype(np.int8)


def record_frames(part: Path, out: Path, node: int = 0) -> tuple[int, int]:
    """Run one loss-free host-swarm inference of `part` on the M4 image's input, sealed with the
    image's key; write the ColumnFrames other nodes sent (in air order, with their source
    station) for node_main.c's replay link. Returns
    (inference id, frames)."""
    from cats.sim import pcap as pcaps
    from cats.sim.run import simulate
    from cats.wire import phy, stream
    from cats.wire.proto import pb

    spec = json.loads((part / "partition.json").read_text())["config"]
    length = (spec["context"] // spec["patch"]) * spec["patch"]
    with tempfile.TemporaryDirectory(prefix="cats-m4profile-") as tmp:
        trace = Path(tmp) / "air.pcap"
        key_file = Path(tmp) / "m4.key"  # the image's own fixed key (node_main.c cats_key)
        key_file.write_bytes(M4_KEY)
        key_file.chmod(0o600)
        res = simulate(
            part, inputs=m4_input(length)[None], pcap=trace, workdir=Path(tmp),
            key_file=key_file, mic=M4_MIC,
        )  # fmt: skip
        if not res["bit_exact"]:
            raise RuntimeError("the host swarm run is not bit-exact")
        iid = int(res["per_inference"][0]["inference_id"])
        _, records = pcaps.read(trace)
        cf = pb().ColumnFrame
        body = bytearray()
        count = 0
        for _, psdu in records:
            air = psdu[9:-2]  # 802.15.4: MHR 9 + radio frame + FCS 2
            if not air or air[0] != stream.AIR_COLUMN:
                continue
            # the sender is the MAC source (a v2 ColumnFrame names none): MHR bytes 7-8
            src = struct.unpack_from("<H", psdu, 7)[0] - phy.IEEE802154_SHORT_ADDR_BASE
            msg = cf.FromString(bytes(air[1 : len(air) - M4_MIC]))  # AirType | message | MIC
            if src == node:
                continue
            body += bytes([len(air) - 1, msg.exchange, src]) + bytes(air[1:])
            count += 1
    out.write_bytes(struct.pack("<II", iid, count) + bytes(body))
    return iid, count


def build_swarm_image(part: Path, frames: Path, build_dir: Path) -> Path:
    """Configure and build cats_m4_node_swarm_qemu.elf for node 0 of `part`."""
    subprocess.run(
        ["cmake", "-S", str(M4_SRC), "-B", str(build_dir), f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}",
         f"-DCATS_PARTITION_DIR={part.resolve()}", "-DCATS_NODE_ID=0",
         f"-DCATS_REPLAY_FRAMES={frames.resolve()}"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["cmake", "--build", str(build_dir), "-j", "2", "--target", "cats_m4_node_swarm_qemu"],
        check=True,
        capture_output=True,
    )
    return build_dir / "cats_m4_node_swarm_qemu.elf"


def profile_swarm(part: Path, build_dir: Path | None = None) -> dict[str, Any]:
    """Node 0 of `part` in a loss-free swarm inference, profiled (see the module docstring)."""
    part = Path(part)
    nodes = json.loads((part / "partition.json").read_text())["nodes"]
    build_dir = build_dir or Path("build") / f"m4-swarm-d{nodes}"
    build_dir.mkdir(parents=True, exist_ok=True)
    frames = build_dir / "replay_frames.bin"
    iid, count = record_frames(part, frames)
    elf = build_swarm_image(part, frames, build_dir)
    res = profile(elf)
    from cats.artefacts import export
    from cats.quant import qref

    loaded = export.load_partition(part)
    cfg = loaded[0].spec.cfg
    x = m4_input(cfg.tokens * cfg.input_width).reshape(cfg.tokens, cfg.input_width)
    ref = qref.run_swarm([n.runtime() for n in loaded], x)
    lo, hi = loaded[0].spec.ranges["output"]
    res["bit_exact_with_qref"] = res["output"] == ref[lo:hi].tolist()
    # what the per-unit costs of cats.sim.latency.WholeNode are divided by
    spec = loaded[0].spec
    res["nodes"] = nodes
    res["frames_received"] = count
    res["held_elements"] = int(sum(ex.rows * len(ex.held_cols) for ex in spec.exchanges))
    res["harness"] = (
        f"loss-free swarm: {count} ColumnFrames of the other {nodes - 1} nodes replayed "
        f"(inference {iid}, {part})"
    )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cats.sim.m4profile", description=__doc__.split("\n")[0]
    )  # noqa: E501
    p.add_argument("elf", type=Path, nargs="?", help="a QEMU node image (make m4)")
    p.add_argument("--swarm", type=Path, default=None, metavar="PART",
                   help="profile node 0 of this export in a loss-free swarm inference")  # fmt: skip
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if (args.elf is None) == (args.swarm is None):
        p.error("give an ELF or --swarm PART")
    res = profile_swarm(args.swarm) if args.swarm is not None else profile(args.elf)
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
