"""Modelled latency of one inference on the swarm: Cortex-M4 compute + airtime of the schedule.

Compute. Every matmul a node runs is counted in multiply-accumulates (MACs) per *stage* (stage
0: the input embedding; stage e + 1: what the node computes after exchange e closes, up to its
next broadcast) and converted to time as MACs x instructions per MAC / 64 MHz (nRF52840). The
instructions per MAC are the measured Cortex-M4 numbers of ``bench/kernels/results.json``
(``cats_matmul_s8_dsp``, instructions executed in QEMU with -icount, see bench/kernels/README):

* a matmul whose (rows, in, out) is one of the measured shapes uses its DSP number;
* any other shape (pruned models hold fewer input columns, other D own other numbers of
  outputs): among the measured shapes with the same rows, those with the nearest number of
  outputs (log scale); if they were measured at several input widths, instructions per MAC
  = b + a / in through the two nearest widths (a per-(row, output) cost - requantisation,
  loop set-up - amortised over the `in` MACs of one dot product, plus a per-MAC cost b),
  else their one value; DEFAULT_INSN_PER_MAC when no shape has these rows;
* attention (QK^T and PV of the node's own heads; causal rows count only their valid prefix,
  as ``cats_attention_s8`` computes them) runs plain C loops with a 64-bit requantisation per
  logit, not the DSP matmul: it uses the mean of the *plain C* matmul numbers of the same file
  (an estimate, not a measurement of the attention kernel).

Whole node. The matmuls are not all a node computes: LayerNorm, softmax, the activation table,
residual adds, and per frame the SomeGather encode/decode and storing of columns cost more
than they do. ``bench/swarm/m4_profile.json`` (``python -m cats.sim.m4profile --swarm
build/parts/verytiny-d8 --json``: every instruction node 0 of verytiny D = 8 executes in one
loss-free swarm inference on the M4 image under QEMU, by function, cycles estimated from the
instruction mix) gives three unit costs (``WholeNode``):

* cycles per matmul instruction (the matmul group's instruction mix), applied to the matmul
  instructions above;
* cycles per frame handled (sent or received: the framing, slot-lookup and other groups over
  the frames the profiled node sent and received), applied to each node's frames of each
  exchange (``cats.artefacts.frames.plan`` at the link MTU: its own frames + every other node's). A
  node handles a frame (~0.17 ms at 64 MHz) while the next one is on the air (4.3 ms on
  802.15.4), so this work overlaps the airtime: it is reported as CPU busy time
  (``cpu_busy_s_per_node``), not added to the critical path;
* cycles per held activation element (LayerNorm, softmax, activation table, adds over the
  rows x held columns of the profiled node's exchanges), applied to each node's.

``compute_s_matmul_only`` keeps the matmul instructions alone (the old figure). The nodes of a
stage run in parallel and wait for each other at every exchange, so the compute time of an
inference is the sum over stages of the slowest node's stage time.

Airtime. The medium serialises every frame on one channel (``cats.wire.phy``): the input
broadcast, each exchange's slot, the output frames, each frame with the MAC time of the link
the firmware uses (CSMA-CA backoff, CCA and turnaround on 802.15.4; advertising events on
BLE); the modelled latency adds those airtimes to the compute time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cats.base.paths import REPO_ROOT
from cats.quant import qref

KERNEL_RESULTS = REPO_ROOT / "bench" / "kernels" / "results.json"
NODE_PROFILE = REPO_ROOT / "bench" / "swarm" / "m4_profile.json"
CPU_HZ = 64e6  # nRF52840
DEFAULT_INSN_PER_MAC = 1.0  # DSP matmul when no measurement applies (bench/kernels: ~0.85-0.92)
DEFAULT_ATTENTION_INSN_PER_MAC = 5.8  # plain C matmul mean (bench/kernels), when no file


@dataclass(frozen=True)
class KernelTable:
    """Measured instructions per MAC by (rows, in, out)."""

    dsp: dict[tuple[int, int, int], float]
    c: dict[tuple[int, int, int], float]
    source: str

    @classmethod
    @lru_cache(maxsize=4)
    def load(cls, path: Path = KERNEL_RESULTS) -> KernelTable:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return cls({}, {}, f"defaults ({path} not readable)")
        dsp, c = {}, {}
        for r in data.get("results", []):
            key = (int(r["rows"]), int(r["in"]), int(r["out"]))
            m4 = r.get("m4") or {}
            if "dsp" in m4:
                dsp[key] = float(m4["dsp"]["insn_per_mac"])
            if "c" in m4:
                c[key] = float(m4["c"]["insn_per_mac"])
        return cls(dsp, c, str(path))

    def matmul(self, rows: int, n_in: int, n_out: int) -> float:
        """Instructions per MAC of the DSP matmul for this shape (see the module docstring)."""
        if (rows, n_in, n_out) in self.dsp:
            return self.dsp[(rows, n_in, n_out)]
        same = [k for k in self.dsp if k[0] == rows]
        if not same or n_in < 1 or n_out < 1:
            return DEFAULT_INSN_PER_MAC
        out = min({k[2] for k in same}, key=lambda o: (abs(math.log2(o / n_out)), o))
        by_in = sorted((k[1], v) for k, v in self.dsp.items() if k[0] == rows and k[2] == out)
        if len(by_in) == 1:
            return by_in[0][1]
        # insn/MAC = b + a / in: a per-(row, output) cost (requantisation, loop set-up)
        # amortised over the `in` MACs of each dot product, through the two nearest inputs
        lo = max([p for p in by_in if p[0] <= n_in], default=by_in[0], key=lambda p: p[0])
        hi = min([p for p in by_in if p[0] >= n_in], default=by_in[-1], key=lambda p: p[0])
        if lo[0] == hi[0]:
            lo, hi = (by_in[0], by_in[1]) if n_in < by_in[0][0] else (by_in[-2], by_in[-1])
        a = (lo[1] - hi[1]) / (1 / lo[0] - 1 / hi[0])
        b = hi[1] - a / hi[0]
        return max(b + a / n_in, 0.0)

    @property
    def attention(self) -> float:
        if not self.c:
            return DEFAULT_ATTENTION_INSN_PER_MAC
        return sum(self.c.values()) / len(self.c)


ELEMENT_GROUPS = ("layernorm", "softmax", "activation", "requant/add")


@dataclass(frozen=True)
class WholeNode:
    """Unit costs of a whole node, from a loss-free swarm profile (cats.sim.m4profile)."""

    cycles_per_matmul_insn: float
    cycles_per_frame: float  # sent or received
    cycles_per_element: float  # per held activation element (rows x held columns)
    non_matmul_share: float  # of the profiled node's instructions
    source: str

    @classmethod
    @lru_cache(maxsize=4)
    def load(cls, path: Path = NODE_PROFILE) -> WholeNode:
        try:
            data = json.loads(Path(path).read_text())
            g = {r["group"]: r for r in data["groups"]}
            mm = g["matmul"]
            elem = sum(g[k]["cycles_est"] for k in ELEMENT_GROUPS if k in g)
            rest = data["cycles_est"] - mm["cycles_est"] - elem
            frames = data["frames_received"] + data["frames_sent"]
            return cls(
                mm["cycles_est"] / mm["instructions"],
                rest / frames,
                elem / data["held_elements"],
                float(data["non_matmul_share"]),
                str(path),
            )
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return cls(1.0, 0.0, 0.0, 0.0, f"matmul instructions only ({path} not readable)")


@dataclass(frozen=True)
class Op:
    stage: int
    name: str
    rows: int
    n_in: int
    n_out: int
    macs: int
    insn_per_mac: float

    @property
    def seconds(self) -> float:
        return self.macs * self.insn_per_mac / CPU_HZ


def node_ops(spec: qref.NodeSpec, table: KernelTable | None = None) -> list[Op]:
    """Every matmul node `spec` runs in one inference, by stage."""
    table = table or KernelTable.load()
    cfg = spec.cfg
    n = cfg.tokens
    own = {sp: b - a for sp, (a, b) in spec.ranges.items()}
    ops: list[Op] = []

    def mm(stage: int, name: str, rows: int, n_in: int, n_out: int) -> None:
        if rows and n_in and n_out:
            macs = rows * n_in * n_out
            ops.append(Op(stage, name, rows, n_in, n_out, macs, table.matmul(rows, n_in, n_out)))

    if cfg.io != "paper":  # the paper input block's layers follow its exchanges
        mm(0, "embed", n, cfg.patch, own["model"])
    for ex in spec.exchanges:
        stage, held = ex.index + 1, int(ex.held_cols.size)
        pre = f"b{ex.block}." if ex.block >= 0 else ""
        if ex.kind == "attn_in":
            for w in ("wq", "wk", "wv"):
                mm(stage, pre + w, n, held, own["model"])
            heads = own["model"] // cfg.head_dim
            pairs = n * (n + 1) // 2 if cfg.task == "forecast" else n * n
            macs = 2 * heads * pairs * cfg.head_dim
            if macs:
                ops.append(Op(stage, pre + "attention", n, n, own["model"], macs, table.attention))
        elif ex.kind == "attn_out":
            mm(stage, pre + "wo", n, held, own["model"])
        elif ex.kind == "ffn_in":
            mm(stage, pre + "w1", n, held, own["hidden"])
        elif ex.kind == "ffn_hidden":
            mm(stage, pre + "w2", n, held, own["model"])
        elif ex.kind == "in_x":
            mm(stage, "in1", n, held, own["in_hidden"])
            mm(stage, "inr", n, held, own["model"])
        elif ex.kind == "in_hidden":
            mm(stage, "in2", n, held, own["model"])
        elif ex.kind == "head_in" and cfg.io == "paper":
            mm(stage, "head1", ex.rows, held, own["head_hidden"])
            mm(stage, "headr", ex.rows, held, own["output"])
        else:  # head_in (lean), head_hidden (paper)
            mm(stage, "head", ex.rows, held, own["output"])
    return ops


def frames_per_exchange(specs: list[qref.NodeSpec], mtu: int) -> list[list[int]]:
    """[exchange][node] ColumnFrames node d sends (``cats.artefacts.frames.plan``, the C rule)."""
    from cats.artefacts import frames

    if len(specs) < 2:
        return [[0] * len(specs) for _ in specs[0].exchanges]
    return [
        [
            len(
                frames.plan(
                    e, [int(c) for c in s.exchanges[e].kept_cols], int(s.exchanges[e].rows), mtu
                )
            )  # fmt: skip
            for d, s in enumerate(specs)
        ]
        for e in range(len(specs[0].exchanges))
    ]


def compute(
    specs: list[qref.NodeSpec],
    table: KernelTable | None = None,
    whole: WholeNode | None = None,
    mtu: int | None = None,
) -> dict:
    """Per node MACs and seconds (whole node: matmuls, per-frame and per-element work, see
    the module docstring; frames planned at `mtu`, default 802.15.4's), and the critical path:
    sum over stages of the slowest node; ``compute_s_matmul_only`` with the matmuls alone."""
    from cats.wire import phy

    table = table or KernelTable.load()
    whole = whole or WholeNode.load()
    scale = whole.cycles_per_matmul_insn
    sent = frames_per_exchange(specs, mtu or phy.IEEE802154.column_mtu)
    per_node = [node_ops(s, table) for s in specs]
    stages = max((op.stage for ops in per_node for op in ops), default=-1) + 1
    stages = max(stages, len(specs[0].exchanges) + 1)
    stage_s = [[0.0] * stages for _ in specs]  # matmul instructions / CPU_HZ
    other_s = [[0.0] * stages for _ in specs]  # per-element cycles / CPU_HZ
    frame_s = [0.0] * len(specs)  # per-frame cycles / CPU_HZ (overlapping the air)
    for d, ops in enumerate(per_node):
        for op in ops:
            stage_s[d][op.stage] += op.seconds
        for ex in specs[d].exchanges:
            handled = sum(sent[ex.index])  # its own frames out, everybody else's in
            frame_s[d] += whole.cycles_per_frame * handled / CPU_HZ
            cyc = whole.cycles_per_element * ex.rows * len(ex.held_cols)
            other_s[d][ex.index + 1] += cyc / CPU_HZ
    critical_mm = sum(max(stage_s[d][k] for d in range(len(specs))) for k in range(stages))
    total_s = [
        [stage_s[d][k] * scale + other_s[d][k] for k in range(stages)] for d in range(len(specs))
    ]
    critical = sum(max(total_s[d][k] for d in range(len(specs))) for k in range(stages))
    return {
        "cpu_hz": CPU_HZ,
        "kernel_table": table.source,
        "node_profile": whole.source,
        "cycles_per_matmul_insn": scale,
        "cycles_per_frame": whole.cycles_per_frame,
        "cycles_per_element": whole.cycles_per_element,
        "non_matmul_share": whole.non_matmul_share,
        "macs_per_node": [sum(op.macs for op in ops) for ops in per_node],
        "compute_s_per_node": [sum(row) for row in total_s],
        "frame_cpu_s_per_node": frame_s,
        "cpu_busy_s_per_node": [sum(row) + f for row, f in zip(total_s, frame_s, strict=True)],
        "compute_s": critical,
        "compute_s_matmul_only": critical_mm,
    }
