"""The portable core cross-compiled for the Cortex-M4F and run under QEMU (mps2-an386): the
node image bit-exact with cats.quant.qref, and the kernel benchmark's instruction counter."""

from __future__ import annotations

import numpy as np
import pytest
from _m4 import BUILDS, ROOT, build, run_qemu

from cats.artefacts.export import load_node


def _parse(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        w = line.split()
        if w and w[0] == "output":
            out["start"], out["count"] = int(w[1]), int(w[2])
            out["values"] = [int(v) for v in w[3:]]
        elif w and w[0] == "insn":
            out["insn_init"], out["insn_infer"] = int(w[2]), int(w[4])
    return out


def _node_main_input(n: int) -> np.ndarray:
    """node_main.c's make_input(): v = (37 i) % 255 - 127, C division by 2 (toward zero)."""
    v = (np.arange(n) * 37) % 255 - 127
    return (np.sign(v) * (np.abs(v) // 2)).astype(np.int8)


@pytest.mark.bitexact
@pytest.mark.parametrize(("nodes", "io"), [(8, "lean"), (16, "lean"), (8, "paper")])
def test_m4_node_matches_qref_with_silent_neighbours(nodes: int, io: str) -> None:
    """One inference on the emulated M4 over the loopback link (every other node silent)
    equals qref's node 0 with every other node's columns lost; with the paper blocks too (the
    node's own input columns and io MLP hidden units, the DSP matmul on their shapes)."""
    b = build(nodes, io)
    got = _parse(run_qemu(b / "cats_m4_node_qemu.elf"))
    ln = load_node(ROOT / BUILDS[nodes, io][0] / "node-0")
    node = ln.runtime()
    cfg = node.cfg
    assert cfg.io == io
    width = cfg.input_width  # 2 x patch with the paper blocks: patch values and padding flags
    node.begin(_node_main_input(cfg.tokens * width).reshape(cfg.tokens, width))
    for _ in range(cfg.exchanges):
        node.compute()  # nothing received: all other nodes' columns are absent
    assert got["values"] == node.y.tolist()
    assert got["count"] == len(node.y) and got["start"] == 0
    assert got["insn_infer"] > 0


def test_m4_bench_counts_instructions() -> None:
    """The calibration loop (2 instructions per turn) reads back exactly, and the DSP and C
    paths of cats_matmul_s8 agree on every shape."""
    b = build(8)
    text = run_qemu(b / "cats_m4_bench.elf")
    calib = [line.split() for line in text.splitlines() if line.startswith("calib")]
    assert calib
    for _, turns, insn in calib:
        assert abs(int(insn) - 2 * int(turns)) <= 80
    shapes = {}
    for line in text.splitlines():
        w = line.split()
        if w and w[0] == "shape":
            shapes.setdefault(w[1], {})[w[6]] = (int(w[7]), w[8])
    assert "done ok" in text
    assert {"d8.block", "d16.block", "mono.qkvo", "mono.head"} <= set(shapes)
    for name, paths in shapes.items():
        assert paths["dsp"][1] == paths["c"][1], name  # same output checksum
        assert paths["dsp"][0] < paths["c"][0] or name.endswith(".head"), name
