"""The int8 matmul kernel (cats_matmul_s8) on the `verytiny` shapes: host throughput of the C
kernel against numpy, and Cortex-M4 instructions per MAC (DSP path and plain C path side by side)
counted under QEMU.

    .venv/bin/python bench/kernels/run.py               # table on stdout
    .venv/bin/python bench/kernels/run.py --json out.json
    .venv/bin/python bench/kernels/run.py --no-m4       # host only (no arm-none-eabi / qemu)
    .venv/bin/python bench/kernels/run.py --baseline old.json   # + before/after M4 columns

Host: src/core/kernels.c + host_bench.c are compiled into one shared object (cc -O2) and timed
in C (best of several rounds); numpy does the same integer matmul as ``x.astype(int32) @
w.astype(int32).T`` (and, second column, the whole qref.linear with int64 requantisation). The
C result is checked bit for bit against qref.linear.

Cortex-M4: build/m4's cats_m4_bench.elf (cats_zephyr_module/m4, built if missing) runs in
``qemu-system-arm -machine mps2-an386`` (Cortex-M4F) with ``-icount shift=0``: QEMU's virtual
clock then advances exactly 1 ns per executed instruction, and the board's CMSDK timer, clocked
at 25 MHz from that virtual clock, ticks once per 40 instructions. The image reads the timer
around each kernel call (repeated to >= 2M instructions, so the 40-instruction quantum is
< 0.1 %) and first measures a SUBS/BNE loop of known length, which must come out exact. See
README.md beside this file.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cats.quant import qref

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODULE = REPO / "cats_zephyr_module"
KERNELS_C = MODULE / "src" / "core" / "kernels.c"
INCLUDE = MODULE / "include"
SHAPES_H = HERE / "shapes.h"
M4_BUILD = REPO / "build" / "m4"
TOOLCHAIN = REPO / "cmake" / "arm-none-eabi.cmake"
TARGET_INSN_PER_MAC = 1.0  # the DSP path's target on the M4
HOST_CFLAGS = ["-O2", "-std=c99", "-fPIC", "-shared"]


def shapes() -> list[dict[str, Any]]:
    """The shape table of shapes.h (one source for this script and the M4 image)."""
    pat = re.compile(r'X\("([^"]+)",\s*(\d+),\s*(\d+),\s*(\d+)\)')
    out = []
    for m in pat.finditer(SHAPES_H.read_text()):
        rows, k, n = (int(m.group(i)) for i in (2, 3, 4))
        out.append({"name": m.group(1), "rows": rows, "in": k, "out": n, "macs": rows * k * n})
    if not out:
        raise RuntimeError(f"no shapes in {SHAPES_H}")
    return out


def operands(s: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(-127, 128, (s["rows"], s["in"]), dtype=np.int8),
        "w": rng.integers(-127, 128, (s["out"], s["in"]), dtype=np.int8),
        "bias": rng.integers(-10000, 10001, s["out"], dtype=np.int32),
        "m": rng.integers(1 << 30, (1 << 31) - 1, s["out"], dtype=np.int32),
        "sh": rng.integers(44, 47, s["out"], dtype=np.int32),
    }


# ------------------------------------------------------------------------------------------------
# Host
# ------------------------------------------------------------------------------------------------


def build_host_lib(out_dir: Path) -> Path:
    cc = os.environ.get("CC", "cc")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libcats_kbench.so"
    srcs = [HERE / "host_bench.c", KERNELS_C]
    if not lib.exists() or lib.stat().st_mtime < max(p.stat().st_mtime for p in srcs + [SHAPES_H]):
        cmd = [cc, *HOST_CFLAGS, f"-I{INCLUDE}", *map(str, srcs), "-o", str(lib)]
        subprocess.run(cmd, check=True)
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def host_measure(lib_path: Path, shape_list: list[dict[str, Any]], budget_s: float) -> list[dict]:
    lib = ctypes.CDLL(str(lib_path))
    lib.cats_matmul_s8_scratch_bytes.restype = ctypes.c_size_t
    lib.cats_matmul_s8_scratch_bytes.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.cats_bench_matmul.restype = ctypes.c_double
    lib.cats_bench_matmul.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] + [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ] + [ctypes.c_void_p] * 5  # fmt: skip
    out = []
    for s in shape_list:
        op = operands(s)
        y = np.zeros((s["rows"], s["out"]), dtype=np.int8)
        need = lib.cats_matmul_s8_scratch_bytes(s["in"], s["out"])
        scratch = np.zeros((need + 7) // 8, dtype=np.uint64)  # 8-byte aligned
        reps = max(1, int(2e6 // s["macs"]))  # ~1-2 ms per round
        args = (
            _ptr(op["x"]), s["rows"], s["in"], _ptr(op["w"]), s["out"],
            _ptr(op["bias"]), _ptr(op["m"]), _ptr(op["sh"]), _ptr(y), _ptr(scratch),
        )  # fmt: skip
        rounds = 5
        c_ns = lib.cats_bench_matmul(rounds, reps, *args)
        ref = qref.linear(op["x"], op["w"], op["bias"], op["m"], op["sh"])
        exact = bool(np.array_equal(y, ref))

        x32, w32t = op["x"].astype(np.int32), op["w"].astype(np.int32).T.copy()

        def np_matmul(x32=x32, w32t=w32t):
            return x32 @ w32t

        def np_linear(op=op):
            return qref.linear(op["x"], op["w"], op["bias"], op["m"], op["sh"])

        out.append(
            {
                **s,
                "host_c_ns": c_ns,
                "numpy_matmul_ns": _best_ns(np_matmul, budget_s),
                "numpy_linear_ns": _best_ns(np_linear, budget_s),
                "bit_exact": exact,
            }
        )
    return out


def _best_ns(fn, budget_s: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s / 10:
        fn()
        n += 1
    n = max(1, n)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e9


# ------------------------------------------------------------------------------------------------
# Cortex-M4 under QEMU
# ------------------------------------------------------------------------------------------------


def m4_elf(build: Path) -> Path:
    """build/m4's cats_m4_bench.elf, (re)built with CMake (a plain configure if needed)."""
    if not (build / "CMakeCache.txt").exists():
        subprocess.run(
            ["cmake", "-S", str(MODULE / "m4"), "-B", str(build),
             f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "cats_m4_bench"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return build / "cats_m4_bench.elf"


QEMU_ARGS = [
    "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
    "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
]  # fmt: skip


def run_qemu(elf: Path, timeout: float = 300) -> str:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise RuntimeError("qemu-system-arm not found (Debian: apt-get install qemu-system-arm)")
    # QEMU 7.2 writes semihosting output to stderr when stdout is not a terminal: take both.
    proc = subprocess.run(
        [qemu, *QEMU_ARGS, "-kernel", str(elf)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"qemu exited {proc.returncode}: {proc.stdout}")
    return proc.stdout


def parse_m4(text: str) -> dict[str, Any]:
    calib, rows = [], {}
    done = None
    for line in text.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "calib":
            calib.append({"turns": int(w[1]), "instructions": int(w[2])})
        elif w[0] == "shape":
            name, r, k, n, reps, path, insn, crc = w[1:9]
            macs = int(r) * int(k) * int(n) * int(reps)
            rows.setdefault(name, {})[path] = {
                "reps": int(reps),
                "instructions": int(insn),
                "insn_per_mac": int(insn) / macs,
                "checksum": crc,
            }
        elif w[0] == "done":
            done = w[1]
        elif w[0] == "error":
            raise RuntimeError(line)
    if done != "ok":
        raise RuntimeError(f"M4 benchmark did not finish: {text[-500:]}")
    for c in calib:  # 2 instructions per turn + the call: exact up to one 40-insn tick
        if abs(c["instructions"] - 2 * c["turns"]) > 80:
            raise RuntimeError(f"instruction counter calibration failed: {c}")
    return {"calibration": calib, "shapes": rows}


# ------------------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    base = any("m4_baseline" in r for r in results)
    head = (
        "| shape | rows x in x out | MACs | host C ns | numpy @ ns | C vs numpy @ | "
        "C vs numpy qref.linear | "
        + ("M4 DSP insn/MAC baseline | " if base else "")
        + "M4 DSP insn/MAC | M4 C insn/MAC | DSP speed-up |"
    )
    lines = [head, "|" + "---|" * (11 if base else 10)]
    for r in results:
        m4 = r.get("m4", {})
        dsp, c = m4.get("dsp"), m4.get("c")
        old = r.get("m4_baseline", {}).get("dsp")
        lines.append(
            "| {name} | {rows} x {in_} x {out} | {macs:,} | {hc} | {nm} | {ratio} | {ratio2} | "
            "{old}{dsp} | {c} | {sp} |".format(
                name=r["name"], rows=r["rows"], in_=r["in"], out=r["out"], macs=r["macs"],
                hc=f"{r['host_c_ns']:,.0f}" if "host_c_ns" in r else "-",
                nm=f"{r['numpy_matmul_ns']:,.0f}" if "numpy_matmul_ns" in r else "-",
                ratio=f"{r['numpy_matmul_ns'] / r['host_c_ns']:.2f}x" if "host_c_ns" in r else "-",
                ratio2=f"{r['numpy_linear_ns'] / r['host_c_ns']:.2f}x"
                if "host_c_ns" in r else "-",
                old=(f"{old['insn_per_mac']:.3f} | " if old else "- | ") if base else "",
                dsp=f"{dsp['insn_per_mac']:.3f}" if dsp else "-",
                c=f"{c['insn_per_mac']:.3f}" if c else "-",
                sp=f"{c['instructions'] / dsp['instructions']:.2f}x" if dsp and c else "-",
            )
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-host", action="store_true", help="skip the host timing")
    p.add_argument("--no-m4", action="store_true", help="skip the Cortex-M4 count under QEMU")
    p.add_argument("--m4-build", type=Path, default=M4_BUILD, help="CMake build dir (build/m4)")
    p.add_argument("--budget", type=float, default=0.2, help="seconds of numpy timing per shape")
    p.add_argument("--json", type=Path, help="write all numbers as JSON")
    p.add_argument(
        "--baseline",
        type=Path,
        help="an earlier --json output: its M4 counts become a baseline column (and m4_baseline)",
    )
    p.add_argument("--baseline-label", default="", help="what the baseline was (for the JSON)")
    args = p.parse_args(argv)

    shape_list = shapes()
    results = [dict(s) for s in shape_list]
    meta: dict[str, Any] = {
        "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "host_cflags": " ".join(HOST_CFLAGS),
        "qemu": QEMU_ARGS,
    }
    if not args.no_host:
        lib = build_host_lib(REPO / "build" / "bench-kernels")
        for r, h in zip(results, host_measure(lib, shape_list, args.budget), strict=True):
            r.update(h)
        bad = [r["name"] for r in results if not r["bit_exact"]]
        if bad:
            print(f"error: C kernel differs from qref.linear on {bad}", file=sys.stderr)
            return 1
    if not args.no_m4:
        elf = m4_elf(args.m4_build)
        m4 = parse_m4(run_qemu(elf))
        meta["m4_elf"] = str(elf)
        meta["m4_calibration"] = m4["calibration"]
        for r in results:
            r["m4"] = m4["shapes"].get(r["name"], {})
            paths = r["m4"]
            if (
                "dsp" in paths
                and "c" in paths
                and paths["dsp"]["checksum"] != paths["c"]["checksum"]
            ):
                print(f"error: DSP and C paths differ on {r['name']}", file=sys.stderr)
                return 1
    if args.baseline:
        old = json.loads(args.baseline.read_text())
        by_name = {r["name"]: r for r in old["results"]}
        meta["baseline"] = {"file": args.baseline.name, "label": args.baseline_label}
        for r in results:
            prev = by_name.get(r["name"], {})
            if prev.get("m4") and (prev["rows"], prev["in"], prev["out"]) == (
                r["rows"],
                r["in"],
                r["out"],
            ):
                r["m4_baseline"] = prev["m4"]
    print(table(results))
    if not args.no_m4:
        blocks = [r for r in results if r["rows"] > 1 and r["in"] >= 64 and "dsp" in r["m4"]]
        worst = max((r["m4"]["dsp"]["insn_per_mac"] for r in blocks), default=float("nan"))
        verdict = "met" if worst <= TARGET_INSN_PER_MAC else "NOT met"
        print(
            f"\nM4 DSP path, block matmuls (rows > 1, in >= 64): worst {worst:.3f} insn/MAC, "
            f"target <= {TARGET_INSN_PER_MAC:g}: {verdict}"
        )
        meta["dsp_target_met"] = worst <= TARGET_INSN_PER_MAC
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
