"""The C node core (cats_zephyr_module/src/core) is bit-exact with the integer reference.

Kernels against the qref primitives on random data and extremes; whole swarms of C nodes
loaded from `cats export` artefacts against qref.Node, exchange by exchange, with pruned kept
sets, lost frames and row fragments; manifest/blob verification and put() validation; one run
of the swarm executable under AddressSanitizer + UBSan.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cats.artefacts import export
from cats.firmware import cnode
from cats.firmware.cnode import CNode, CNodeError
from cats.model.config import preset
from cats.model.partition import Partition, Plan
from cats.quant import qref
from cats.wire.proto import pb

pytestmark = pytest.mark.bitexact

i8p, i32p, i64p, u8p = ctypes.c_int8, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint8


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    return cnode.lib()


def _p(a: np.ndarray, ctype=ctypes.c_int8):
    return cnode.ptr(a, ctype)


# ------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------


def test_isqrt_exact_on_edges_and_random(lib) -> None:
    rng = np.random.default_rng(0)
    vals = [0, 1, 2, 3, 4, 8, 9, 15, 16, 17, 2**32 - 1, 2**32, 2**52 - 1, 2**62, 2**63,
            2**64 - 1]  # fmt: skip
    vals += [k * k + d for k in (1, 3, 2**20 - 1, 2**26 + 5, 2**31 - 1, 2**32 - 1)
             for d in (-1, 0, 1) if k * k + d >= 0]  # fmt: skip
    vals += [int(v) for v in rng.integers(0, 2**52, 2000)]
    for v in vals:
        assert lib.cats_isqrt64(v) == math.isqrt(v), v
    small = np.array([v for v in vals if v < 2**52], dtype=np.int64)
    assert [lib.cats_isqrt64(int(v)) for v in small] == qref.isqrt(small).tolist()


GUARD = 64  # bytes past the scratch buffer and around y that the kernels must not touch


def _matmul_c(lib, fn: str, x, w, bias, m, sh, offset: int = 0) -> np.ndarray:
    """One C matmul. The scratch buffer is exactly cats_matmul_s8_scratch_bytes(in, out) long
    (8-byte aligned) and followed by guard bytes, y is surrounded by guard bytes: none may
    change. offset > 0 moves x and w off word alignment by that many bytes."""
    rows, n_in = x.shape
    out = w.shape[0]
    if offset:
        xb = np.zeros(x.size + offset, np.int8)
        wb = np.zeros(w.size + offset, np.int8)
        xb[offset:] = x.ravel()
        wb[offset:] = w.ravel()
        x, w = xb[offset:], wb[offset:]
    ybuf = np.full(rows * out + 2 * GUARD, 0x5A, dtype=np.int8)
    y = ybuf[GUARD : GUARD + rows * out]
    args = [_p(x), rows, n_in, _p(w), out, _p(bias, i32p), _p(m, i32p), _p(sh, i32p), _p(y)]
    if fn != "cats_matmul_s8_c":
        need = lib.cats_matmul_s8_scratch_bytes(n_in, out)
        scratch = np.zeros((need + GUARD + 7) // 8, dtype=np.int64)  # 8-byte aligned
        scratch.view(np.uint8)[:need] = 0x77  # stale data: padding must be written, not assumed
        scratch.view(np.uint8)[need:] = 0xA5
        args.append(scratch.ctypes.data_as(ctypes.c_void_p))
    getattr(lib, fn)(*args)
    if fn != "cats_matmul_s8_c":
        assert (scratch.view(np.uint8)[need:] == 0xA5).all(), "scratch overrun"
    assert (ybuf[:GUARD] == 0x5A).all() and (ybuf[GUARD + rows * out :] == 0x5A).all()
    return y.reshape(rows, out).copy()


@pytest.mark.parametrize("fn", ["cats_matmul_s8", "cats_matmul_s8_c", "cats_matmul_s8_dsp"])
def test_matmul_matches_qref_linear(lib, fn: str) -> None:
    rng = np.random.default_rng(1)
    for trial in range(300):
        rows, n_in, out = (int(v) for v in rng.integers(1, (6, 40, 8)))
        lo = -128 if trial % 3 == 0 else -127
        if trial % 7 == 0:  # extremes: every product at its largest, saturating
            x = np.full((rows, n_in), rng.choice([-127, 127]), dtype=np.int8)
            w = np.full((out, n_in), rng.choice([lo, 127]), dtype=np.int8)
        else:
            x = rng.integers(lo, 128, (rows, n_in), dtype=np.int8)
            w = rng.integers(lo, 128, (out, n_in), dtype=np.int8)
        sh = rng.integers(1, 63, out).astype(np.int32)
        if trial % 2:  # realistic multipliers (|m| in [2^30, 2^31)) and shifts, either sign
            m = (rng.integers(2**30, 2**31, out) * rng.choice([-1, 1], out)).astype(np.int32)
            sh = rng.integers(28, 48, out).astype(np.int32)
        else:
            m = rng.integers(-(2**31) + 1, 2**31, out).astype(np.int32)
        bias = rng.integers(-(2**31) + 1, 2**31, out).astype(np.int32)
        if trial % 4 == 1:
            bias //= 2**20
        want = qref.linear(x, w, bias, m, sh)
        got = _matmul_c(lib, fn, x, w, bias, m, sh)
        assert np.array_equal(got, want), (trial, rows, n_in, out)


@pytest.mark.parametrize("rows", [1, 2])
def test_requant_rounding_and_every_shift(lib, rows: int) -> None:
    """y = sat8(requant(bias, m, sh)) through a rows x 1 matmul with x = w = 0: every shift
    1..62, negative multipliers, results inside the int8 range (so the rounding is visible) and
    ties. rows = 1 takes the DSP path's one-token code, rows = 2 the blocked one (its SMLAL +
    high-word shift for sh > 32)."""
    rng = np.random.default_rng(2)
    for sh in range(1, 63):
        m = rng.integers(2**30, 2**31, 64) * rng.choice([-1, 1], 64)
        target = rng.integers(-127, 128, 64)
        # acc close to target * 2^sh / m, plus exact ties (acc * m = (t + 1/2) 2^sh) where possible
        acc = np.array([round(int(t) * 2**sh / int(mm)) + int(d) for t, mm, d in
                        zip(target, m, rng.integers(-3, 4, 64), strict=True)])  # fmt: skip
        if sh > 1:
            acc[:4] = [(2 * t + 1) * 2 ** (sh - 1) // int(m[0]) for t in (0, 1, -1, 5)]
            m[:4] = m[0]
        acc = np.clip(acc, -(2**31) + 1, 2**31 - 1)
        x = np.zeros((rows, 1), np.int8)
        w = np.zeros((len(acc), 1), np.int8)
        bias, mv = acc.astype(np.int32), m.astype(np.int32)
        shv = np.full(len(acc), sh, np.int32)
        got = _matmul_c(lib, "cats_matmul_s8", x, w, bias, mv, shv)
        want = qref.sat8(qref.requant(acc.astype(np.int64), m, sh))
        for r in range(rows):
            assert np.array_equal(got[r], want), (sh, r)


@pytest.mark.parametrize("fn", ["cats_matmul_s8", "cats_matmul_s8_dsp"])
def test_matmul_dsp_blocking_edges(lib, fn: str) -> None:
    """The DSP path's blocking (token pairs, output pairs, blocks of CATS_MATMUL_OUT_BLOCK
    outputs, inputs padded to quads and its 8-quad loop entered part way): one row, odd rows
    and outputs, every in % 16, outputs across block boundaries, misaligned x and w, shifts
    on both sides of 32 in one block, extreme products. Equal to qref.linear and the plain C
    path; no byte written outside y, no scratch byte past cats_matmul_s8_scratch_bytes()."""
    rng = np.random.default_rng(11)
    cases = [(r, k, o) for r in (1, 2, 3, 5, 32, 33) for k in (1, 3, 4, 5, 8, 12, 16, 17, 28, 31,
             32, 33, 36, 60, 64, 127, 128, 129) for o in (1, 2, 3, 8, 15, 16, 17, 33)]  # fmt: skip
    for i, (rows, n_in, out) in enumerate(cases):
        lo = -128 if i % 2 else -127
        x = rng.integers(lo, 128, (rows, n_in), dtype=np.int8)
        w = rng.integers(lo, 128, (out, n_in), dtype=np.int8)
        if i % 11 == 0:  # extremes: every product at its largest, saturating
            x[:] = lo
            w[:] = rng.choice([lo, 127])
        m = (rng.integers(2**30, 2**31, out) * rng.choice([-1, 1], out)).astype(np.int32)
        sh = rng.integers(33, 48, out).astype(np.int32)
        if i % 5 == 0:  # some shifts <= 32 (64-bit shift path) next to > 32 ones
            sh[rng.random(out) < 0.5] = rng.integers(1, 33)
        sh = np.minimum(sh, 62).astype(np.int32)
        bias = rng.integers(-(2**31) + 1, 2**31, out).astype(np.int32) // (2 ** (i % 21))
        want = qref.linear(x, w, bias, m, sh)
        got = _matmul_c(lib, fn, x, w, bias, m, sh, offset=i % 4)
        assert np.array_equal(got, want), (rows, n_in, out)
        assert np.array_equal(got, _matmul_c(lib, "cats_matmul_s8_c", x, w, bias, m, sh))


def test_matmul_scratch_bytes(lib) -> None:
    """cats_matmul_s8_scratch_bytes = CATS_MATMUL_SCRATCH_BYTES: K = in rounded up to 4, a block
    of ob = min(out rounded up to 2, 16) outputs: 4K + ob (2K + 24)."""
    for n_in in (1, 4, 5, 16, 128, 129):
        for out in (0, 1, 2, 7, 16, 17, 128):
            k = -(-n_in // 4) * 4
            ob = min(-(-out // 2) * 2, 16)
            assert lib.cats_matmul_s8_scratch_bytes(n_in, out) == 4 * k + ob * (2 * k + 24)


def test_layer_norm_matches_qref(lib) -> None:
    rng = np.random.default_rng(3)
    for trial in range(300):
        # up to 128 present columns take kernels.c's 32-bit row path, more the 64-bit one
        rows = int(rng.integers(1, 5))
        cols = int(rng.integers(1, 40) if trial % 3 else rng.integers(100, 260))
        x = rng.integers(-127 if trial % 2 else -128, 128, (rows, cols), dtype=np.int8)
        if trial % 10 == 0:
            x[:] = x[0, 0]  # zero variance
        present = rng.random(cols) < rng.random()
        if trial % 5 == 0:
            present[:] = False
            present[rng.integers(cols)] = True  # one column present
        if trial % 17 == 0:
            present[:] = False  # nothing present
        m = (rng.integers(2**30, 2**31, cols) * rng.choice([-1, 1], cols)).astype(np.int32)
        sh = rng.integers(1, 63, cols).astype(np.int32)
        beta = rng.integers(-300, 300, cols).astype(np.int32)
        eps = int(rng.choice([0, 1, 255, int(rng.integers(0, 2**24))]))
        want = qref.layer_norm(x, present, m, sh, beta, eps)
        y = np.zeros_like(x)
        pres = present.astype(np.uint8)
        lib.cats_layer_norm_s8(_p(x), rows, cols, _p(pres, u8p), _p(m, i32p), _p(sh, i32p),
                               _p(beta, i32p), eps, _p(y))  # fmt: skip
        assert np.array_equal(y, want), trial
        lib.cats_layer_norm_s8(_p(x), rows, cols, _p(pres, u8p), _p(m, i32p), _p(sh, i32p),
                               _p(beta, i32p), eps, _p(x))  # in place  # fmt: skip
        assert np.array_equal(x, want), trial


def test_softmax_matches_qref(lib) -> None:
    rng = np.random.default_rng(4)
    for trial in range(400):
        n = int(rng.integers(1, 40))
        scale = [4, 64, 600, 2**20][trial % 4]
        logits = rng.integers(-scale, scale + 1, n).astype(np.int64)
        valid = rng.random(n) < 0.7
        if trial % 3 == 0:
            valid[:] = False
            valid[rng.integers(n)] = True  # a single valid entry
        if trial % 11 == 0:
            valid[:] = True
            valid = None
        p = np.zeros(n, dtype=np.int8)
        vptr = None if valid is None else _p(valid.astype(np.uint8), u8p)
        lib.cats_softmax_s8(_p(logits, i64p), vptr, n, _p(p))
        with np.errstate(divide="ignore"):  # no valid entry: qref divides by zero -> all 0
            want = qref.softmax(logits[None, :], None if valid is None else valid[None, :])[0]
        assert np.array_equal(p, want), trial
    p = np.zeros(3, dtype=np.int8)  # one valid entry: probability 1.0 -> 127
    lib.cats_softmax_s8(_p(np.array([5, -9, 100], np.int64), i64p),
                        _p(np.array([0, 1, 0], np.uint8), u8p), 3, _p(p))  # fmt: skip
    assert p.tolist() == [0, 127, 0]


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_qref(lib, causal: bool) -> None:
    rng = np.random.default_rng(5 + causal)
    for trial in range(60):
        n, hd, heads = int(rng.integers(1, 12)), int(rng.integers(1, 9)), int(rng.integers(1, 4))
        width = hd * heads
        q, k, v = (rng.integers(-127, 128, (n, width), dtype=np.int8) for _ in range(3))
        if trial % 2:
            ml, shl = qref.quantize_multiplier(float(rng.uniform(1e-4, 0.05)))
            ma, sha = qref.quantize_multiplier(float(rng.uniform(1e-3, 0.02)))
        else:  # extremes: huge logits (all mass on the max), negative multipliers
            ml, shl = int(rng.integers(-(2**31) + 1, 2**31)), int(rng.integers(1, 40))
            ma, sha = int(rng.integers(-(2**31) + 1, 2**31)), int(rng.integers(20, 63))
        want = qref.attention(q, k, v, hd, causal, ml, shl, ma, sha)
        logits = np.zeros(n, np.int64)
        probs = np.zeros(n, np.int8)
        lib.cats_attention_s8(_p(q), _p(k), _p(v), n, width, hd, int(causal), ml, shl, ma, sha,
                              _p(logits, i64p), _p(probs))  # fmt: skip
        assert np.array_equal(q, want), trial


def test_add_lut_pool_match_qref(lib) -> None:
    rng = np.random.default_rng(6)
    for trial in range(200):
        n = int(rng.integers(1, 64))
        x, o = (rng.integers(-128, 128, n, dtype=np.int8) for _ in range(2))
        sh = int(rng.integers(1, 63))
        mx, mo = (int(v) for v in rng.integers(-(2**31) + 1, 2**31, 2))
        y = np.zeros(n, np.int8)
        lib.cats_add_s8(_p(x), mx, _p(o), mo, sh, n, _p(y))
        assert np.array_equal(y, qref.add(x, mx, o, mo, sh)), trial
        lut = rng.integers(-127, 128, 256, dtype=np.int8)
        lib.cats_lut_s8(_p(lut), _p(x), n, _p(y))
        assert np.array_equal(y, lut[x.astype(np.int64) + 128])
        rows = int(rng.integers(1, 9))
        xm = rng.integers(-127, 128, (rows, n), dtype=np.int8)
        m, shp = qref.quantize_multiplier(float(rng.uniform(1e-3, 2.0)))
        if trial % 3 == 0:
            m = -m
        lib.cats_pool_s8(_p(xm), rows, n, m, shp, _p(y))
        assert np.array_equal(y, qref.sat8(qref.requant(xm.astype(np.int64).sum(0), m, shp)))


def test_sha256_matches_hashlib(lib) -> None:
    rng = np.random.default_rng(7)
    for n in [*range(0, 130), 1000, 65536, 1 << 20]:
        data = rng.integers(0, 256, n, dtype=np.uint8)
        out = np.zeros(32, np.uint8)
        lib.cats_sha256(_p(data, u8p), n, _p(out, u8p))
        assert out.tobytes() == hashlib.sha256(data.tobytes()).digest(), n


# ------------------------------------------------------------------------------------------------
# Whole nodes against qref.Node
# ------------------------------------------------------------------------------------------------


def _pruned(cfg, nodes: int, seed: int, keep: float = 0.6) -> Partition:
    part = Partition.full(cfg, nodes)
    if nodes == 1:
        return part
    rng = np.random.default_rng(seed)
    for e, ex in enumerate(part.schedule):
        for d in range(nodes):
            a, b = part.plan.ranges[ex.space][d]
            if b > a:
                k = rng.random(b - a) < keep
                k[rng.integers(b - a)] = True
                part.kept[e][a:b] = k
    return part


def _delivery(rng, nodes: int, exchanges: int, p: float) -> dict[int, np.ndarray]:
    """Per exchange one of the three message-dropout modes (link, deaf receiver, mute sender)."""
    out = {}
    for e in range(exchanges):
        mode = rng.integers(3)
        if mode == 0:
            dm = rng.random((nodes, nodes)) >= p
        elif mode == 1:
            dm = np.broadcast_to(rng.random((1, nodes)) >= 2 * p, (nodes, nodes)).copy()
        else:
            dm = np.broadcast_to(rng.random((nodes, 1)) >= 2 * p, (nodes, nodes)).copy()
        np.fill_diagonal(dm, True)
        out[e] = dm
    return out


def _inputs(model, qm, n: int, seed: int) -> np.ndarray:
    series = export.synthetic_calibration(model.cfg, seed=seed, batch=n)
    return qref.quantize_input(model.normalise(series)[0].numpy(), qm.input_scale)


def lockstep(cnodes: list[CNode], qnodes: list[qref.Node], part: Partition, inp: np.ndarray,
             delivery: dict[int, np.ndarray] | None = None, frag_rows: int | None = None,
             inference_id: int = 0) -> np.ndarray:  # fmt: skip
    """Run both swarms exchange by exchange; every outgoing frame, every lost count and every
    output slice must be identical. Returns the assembled output."""
    delivery = delivery or {}
    nodes = len(cnodes)
    for c, q in zip(cnodes, qnodes, strict=True):
        c.begin(inference_id, inp)
        q.begin(inp)
        assert c.current_exchange == 0 and c.inference == inference_id
    for e in range(part.cfg.exchanges):
        fq = [q.send() for q in qnodes]
        fc = [c.outgoing() for c in cnodes]
        for d, ((ex, qcols, qvals), (ccols, cvals)) in enumerate(zip(fq, fc, strict=True)):
            assert ex == e
            assert np.array_equal(ccols, qcols), (e, d)
            assert np.array_equal(cvals, qvals), f"exchange {e} node {d}: outgoing differs"
        dm = delivery.get(e)
        _q_deliver(qnodes, fq, dm)
        cnode.deliver(cnodes, fc, dm, frag_rows)
        for r, (c, q) in enumerate(zip(cnodes, qnodes, strict=True)):
            want_lost = sum(part.kept_cols(e, s).size for s in range(nodes)
                            if s != r and dm is not None and not dm[s, r])  # fmt: skip
            assert c.compute() == want_lost, (e, r)
            q.compute()
    for c, q in zip(cnodes, qnodes, strict=True):
        assert c.current_exchange == -1
        assert np.array_equal(c.output(), q.y)
    return np.concatenate([c.output() for c in cnodes])


@pytest.fixture(scope="module")
def models():
    return {
        ("test", "forecast"): export.untrained("test", seed=11),
        ("test", "classify"): export.untrained("test", seed=12, task="classify"),
        ("verytiny", "forecast"): export.untrained("verytiny", seed=13),
        ("paper", "forecast"): export.untrained("test", seed=15, **PAPER),
        ("paper", "classify"): export.untrained("test", seed=16, task="classify", **PAPER),
    }


# The paper recipe's input/output blocks (io = paper, ReLU) on the test shape; io_hidden 20
# splits unevenly over 3 and 8 nodes.
PAPER = {"io": "paper", "activation": "relu", "io_hidden": 20}


def _exported(qm, part: Partition, path: Path) -> list[CNode]:
    export.export_partition(qm, part, path)
    return cnode.load_swarm(path)


@pytest.mark.parametrize("task", ["forecast", "classify"])
@pytest.mark.parametrize("nodes", [1, 2, 4, 8, 16])
def test_swarm_bit_exact_test_preset(models, tmp_path: Path, task: str, nodes: int) -> None:
    model, qm = models[("test", task)]
    part = _pruned(model.cfg, nodes, seed=nodes)
    cnodes = _exported(qm, part, tmp_path)
    rng = np.random.default_rng(100 + nodes)
    inputs = list(_inputs(model, qm, 2, seed=nodes))
    inputs.append(rng.integers(-128, 128, inputs[0].shape, dtype=np.int8))  # full int8 range
    for i, inp in enumerate(inputs):
        for loss in (0.0, 0.25):
            delivery = _delivery(rng, nodes, model.cfg.exchanges, loss) if loss else None
            frag = [None, 1, 3][i % 3]
            y = lockstep(cnodes, qref.build_nodes(qm, part), part, inp, delivery, frag, i)
            assert np.array_equal(y, qref.run_swarm(qref.build_nodes(qm, part), inp, delivery))
            assert np.array_equal(y, cnode.run_swarm(cnodes, inp, delivery, inference_id=i))


@pytest.mark.parametrize("task", ["forecast", "classify"])
@pytest.mark.parametrize("nodes", [1, 3, 4, 8])
def test_swarm_bit_exact_paper_blocks(models, tmp_path: Path, task: str, nodes: int) -> None:
    """io = paper: the input block (own input columns exchanged in in_x, MLP hidden units in
    in_hidden) and the output block (head_in, head_hidden) in C, frame by frame against qref,
    pruned and with lost frames; and the float model's padding flags reach the nodes."""
    model, qm = models[("paper", task)]
    part = _pruned(model.cfg, nodes, seed=30 + nodes)
    cnodes = _exported(qm, part, tmp_path)
    assert cnodes[0].shape["patch"] == 2 * model.cfg.patch and cnodes[0].shape["io"] == 1
    assert [ex.kind for ex in cnodes[0].exchanges][:2] == ["in_x", "in_hidden"]
    rng = np.random.default_rng(200 + nodes)
    import torch

    series = export.synthetic_calibration(model.cfg, seed=nodes, batch=2)
    pad = (torch.arange(model.cfg.context)[None] < torch.tensor([[0], [5]])).float()
    inputs = list(qref.quantize_input(model.normalise(series, pad)[0].numpy(), qm.input_scale))
    assert (inputs[1][0, model.cfg.patch :] > 0).any()  # a padding flag is set
    inputs.append(rng.integers(-128, 128, inputs[0].shape, dtype=np.int8))  # full int8 range
    outs = []
    for i, inp in enumerate(inputs):
        for loss in (0.0, 0.3):
            delivery = _delivery(rng, nodes, model.cfg.exchanges, loss) if loss else None
            y = lockstep(
                cnodes, qref.build_nodes(qm, part), part, inp, delivery, [None, 3][i % 2], i
            )
            assert np.array_equal(y, qref.run_swarm(qref.build_nodes(qm, part), inp, delivery))
            outs.append(y)
    # every input matters, and so does every loss pattern where there is anyone to lose
    assert len({y.tobytes() for y in outs}) == (len(outs) if nodes > 1 else len(inputs))


@pytest.mark.parametrize("nodes", [1, 2, 4, 8, 16])
def test_swarm_bit_exact_verytiny(models, tmp_path: Path, nodes: int) -> None:
    model, qm = models[("verytiny", "forecast")]
    part = _pruned(model.cfg, nodes, seed=50 + nodes, keep=0.7)
    cnodes = _exported(qm, part, tmp_path)
    rng = np.random.default_rng(nodes)
    inp = _inputs(model, qm, 1, seed=3)[0]
    delivery = _delivery(rng, nodes, model.cfg.exchanges, 0.1) if nodes > 1 else None
    lockstep(cnodes, qref.build_nodes(qm, part), part, inp, delivery, frag_rows=7)


def test_nodes_owning_no_hidden_units_or_outputs(tmp_path: Path) -> None:
    """ffn = 6 and 3 classes over 16 nodes: most nodes own no hidden unit and no output."""
    model, qm = export.untrained("test", seed=14, task="classify", ffn=6)
    part = _pruned(model.cfg, 16, seed=2)
    cnodes = _exported(qm, part, tmp_path)
    assert sum(c.exchanges[3].own[0] == c.exchanges[3].own[1] for c in cnodes) == 10
    inp = _inputs(model, qm, 1, seed=8)[0]
    delivery = _delivery(np.random.default_rng(3), 16, model.cfg.exchanges, 0.2)
    y = lockstep(cnodes, qref.build_nodes(qm, part), part, inp, delivery)
    assert y.shape == (3,)


def test_unpruned_swarm_gives_the_same_bits_for_every_node_count(models, tmp_path: Path) -> None:
    model, qm = models[("test", "classify")]
    inp = _inputs(model, qm, 1, seed=4)[0]
    outs = [cnode.run_swarm(_exported(qm, Partition.full(model.cfg, d), tmp_path / str(d)), inp)
            for d in (1, 3, 5, 16)]  # fmt: skip
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert np.array_equal(outs[0], qref.run_swarm(qref.build_nodes(qm, Partition.full(
        model.cfg, 1)), inp))  # fmt: skip


@pytest.mark.parametrize("io", ["lean", "paper"])
def test_trained_qat_export_bit_exact(tmp_path: Path, io: str) -> None:
    pytest.importorskip("vega_datasets", reason="the default dataset ships in vega-datasets")
    from cats.quant.int8 import quantized
    from cats.training.train import train_model

    cfg = preset("test", **(PAPER if io == "paper" else {}))
    res = train_model(cfg, "default", nodes=4, steps=10, batch=32, qat=True,
                      qat_fraction=0.5, max_eval_windows=64, max_test_windows=64,
                      progress=False)  # fmt: skip
    assert res.model.quant
    qm = quantized(res.model, res.data.train)
    part = _pruned(res.model.cfg, 4, seed=9, keep=0.5)
    cnodes = _exported(qm, part, tmp_path)
    x, _ = res.data.test.batch(np.arange(0, 300, 100))
    import torch

    patches = res.model.normalise(torch.from_numpy(x))[0]
    inp = qref.quantize_input(patches.numpy(), qm.input_scale)
    rng = np.random.default_rng(0)
    for i, row in enumerate(inp):
        delivery = _delivery(rng, 4, res.model.cfg.exchanges, 0.2) if i else None
        lockstep(cnodes, qref.build_nodes(qm, part), part, row, delivery, frag_rows=3)
    # and the integer swarm tracks the QAT float model it came from (nothing pruned or lost)
    with torch.no_grad():
        ref = res.model.eval().core(patches)[:, -1].numpy()
    full = qref.build_nodes(qm, Partition.full(res.model.cfg, 4))
    got = np.stack([qref.run_swarm(full, row) for row in inp]) * qm.output_scale
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 2 * qm.output_scale


@pytest.mark.parametrize("io", ["test", "paper"])
def test_exchange_tables_and_owners(models, tmp_path: Path, io: str) -> None:
    model, qm = models[(io, "forecast")]
    cfg = model.cfg
    for nodes in (3, 5, 16):
        part = _pruned(cfg, nodes, seed=nodes)
        cnodes = _exported(qm, part, tmp_path / str(nodes))
        plan = Plan.build(cfg, nodes)
        for d, c in enumerate(cnodes):
            assert (c.id, c.nodes, c.n_exchanges) == (d, nodes, cfg.exchanges)
            assert c.shape["tokens"] == cfg.tokens and c.shape["outputs"] == cfg.outputs
            for e, ex in enumerate(part.schedule):
                got = c.exchanges[e]
                assert (got.kind, got.space, got.block) == (ex.kind, ex.space, ex.block)
                assert np.array_equal(got.kept, part.kept_cols(e, d))
                assert np.array_equal(got.held, part.held_cols(e, d))
                assert got.own == plan.ranges[ex.space][d]
            for space in plan.ranges:  # with paper blocks also input, in/head_hidden
                owner = plan.owner(space)
                assert [c.owner(space, i) for i in range(owner.size + 2)] == [
                    *owner.tolist(),
                    -1,
                    -1,
                ]


# ------------------------------------------------------------------------------------------------
# Arena, verification, put() validation
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_files(models, tmp_path_factory) -> tuple[Path, Partition]:
    model, qm = models[("test", "forecast")]
    part = _pruned(model.cfg, 4, seed=21)
    out = tmp_path_factory.mktemp("export")
    export.export_partition(qm, part, out)
    return out, part


def test_arena_too_small_reports_needed_size(node_files) -> None:
    out, _ = node_files
    man = (out / "node-1" / "manifest.pb").read_bytes()
    blob = (out / "node-1" / "weights.bin").read_bytes()
    need = cnode.arena_needed(man)
    assert need > 0 and need % 8 == 0
    for size in (0, 64, need - 1):
        with pytest.raises(CNodeError) as err:
            CNode(man, blob, arena_size=size)
        assert err.value.code == cnode.ERR_ARENA and err.value.needed == need
    assert CNode(man, blob, arena_size=need).arena_needed == need
    assert cnode.arena_needed(b"") == 0  # decodes, but format version 0
    assert cnode.arena_needed(b"\xff\xff\xff") == 0


def _resigned(man, blob: bytes) -> tuple[bytes, bytes]:
    man.blob_sha256 = hashlib.sha256(blob).digest()
    man.blob_size = len(blob)
    return man.SerializeToString(), blob


def _init_code(man: bytes, blob: bytes) -> int:
    try:
        CNode(man, blob, arena_size=1 << 20)
    except CNodeError as exc:
        return exc.code
    return cnode.OK


def test_corrupted_artefacts_are_refused(node_files) -> None:
    out, _ = node_files
    raw = (out / "node-2" / "manifest.pb").read_bytes()
    blob = (out / "node-2" / "weights.bin").read_bytes()
    assert _init_code(raw, blob) == cnode.OK

    def man():
        m = pb().NodeManifest()
        m.ParseFromString(raw)
        return m

    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    assert _init_code(raw, bytes(flipped)) == cnode.ERR_HASH
    assert _init_code(raw, blob[:-1]) == cnode.ERR_BLOB
    assert _init_code(raw, blob + b"\0") == cnode.ERR_BLOB
    m = man()
    m.blob_sha256 = bytes(32)
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_HASH
    m = man()
    m.format_version = 2
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_VERSION
    for cut in (1, 7, len(raw) // 3, len(raw) // 2, len(raw) - 1):  # truncated manifests
        assert _init_code(raw[:cut], blob) in (cnode.ERR_MANIFEST, cnode.ERR_VERSION), cut
    m = man()
    m.node_id = 4
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_MANIFEST
    m = man()
    m.ranges[0].end += 1  # not the split rule's range
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_MANIFEST
    m = man()
    held = list(m.exchanges[3].held_cols)
    del m.exchanges[3].held_cols[:]
    m.exchanges[3].held_cols.extend([held[1], held[0], *held[2:]])  # unsorted
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_MANIFEST
    m = man()
    m.exchanges[6].kind = "attn_out"  # b1.ffn_in
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_MANIFEST
    m = man()
    del m.exchanges[-1]
    assert _init_code(m.SerializeToString(), blob) == cnode.ERR_MANIFEST

    # Tensor table: wrong shape, dtype, offset, unknown / missing / duplicated names.
    def with_tensor(change) -> int:
        m = man()
        change(m, {t.name: t for t in m.tensors})
        return _init_code(m.SerializeToString(), blob)

    assert with_tensor(lambda m, t: t["b0.wq.w"].shape.__setitem__(1, 3)) == cnode.ERR_TENSOR
    assert with_tensor(lambda m, t: setattr(t["b1.act"], "dtype", 2)) == cnode.ERR_TENSOR
    assert (
        with_tensor(lambda m, t: setattr(t["head.bias"], "offset", t["head.bias"].offset + 4))
        == cnode.ERR_TENSOR
    )
    assert with_tensor(lambda m, t: setattr(t["lnf.beta"], "offset", len(blob))) == (
        cnode.ERR_TENSOR
    )
    assert with_tensor(lambda m, t: setattr(t["b0.ln1.m"], "name", "b0.ln3.m")) == (
        cnode.ERR_TENSOR
    )
    assert with_tensor(lambda m, t: setattr(t["b0.ln1.m"], "name", "b7.ln1.m")) == (
        cnode.ERR_TENSOR
    )
    assert with_tensor(lambda m, t: setattr(t["b0.ln1.m"], "name", "b0.ln1.sh")) == (
        cnode.ERR_TENSOR
    )
    assert with_tensor(lambda m, t: m.tensors.remove(t["b1.w2.m"])) == cnode.ERR_TENSOR
    assert with_tensor(lambda m, t: m.tensors.add().CopyFrom(t["b1.add2"])) == cnode.ERR_TENSOR
    assert with_tensor(lambda m, t: setattr(t["b1.add2"], "name", "pool")) == cnode.ERR_TENSOR

    # Values the kernels rely on: requantisation shifts in [1, 62], LayerNorm eps >= 0.
    refs = {t.name: t for t in man().tensors}
    for name, value in (("b0.wq.sh", 0), ("b1.w1.sh", 63), ("b0.attn", None), ("lnf.eps", -1)):
        patched = bytearray(blob)
        off = refs[name].offset + (4 if value is None else 0)  # attn[1] = shl
        patched[off : off + 4] = int(value or 0).to_bytes(4, "little", signed=True)
        mb, bb = _resigned(man(), bytes(patched))
        assert _init_code(mb, bb) == cnode.ERR_TENSOR, name


def test_random_manifest_mutations_never_crash(node_files) -> None:
    out, _ = node_files
    raw = (out / "node-0" / "manifest.pb").read_bytes()
    blob = (out / "node-0" / "weights.bin").read_bytes()
    rng = np.random.default_rng(8)
    codes = set()
    for _ in range(400):
        m = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            m[int(rng.integers(len(m)))] = int(rng.integers(256))
        code = _init_code(bytes(m), blob)
        codes.add(code)
        assert code in (cnode.OK, cnode.ERR_MANIFEST, cnode.ERR_VERSION, cnode.ERR_HASH,
                        cnode.ERR_BLOB, cnode.ERR_TENSOR, cnode.ERR_UNSUPPORTED,
                        cnode.ERR_ARENA)  # fmt: skip
    assert len(codes) > 2


def _q_deliver(qnodes: list[qref.Node], frames: list, dm: np.ndarray | None = None) -> None:
    for r, q in enumerate(qnodes):
        for s, frame in enumerate(frames):
            if s != r and (dm is None or dm[s, r]):
                q.receive(*frame)


def test_put_rejects_and_leaves_buffer_untouched(models, node_files) -> None:
    out, part = node_files
    model, qm = models[("test", "forecast")]
    cnodes = cnode.load_swarm(out)
    qnodes = qref.build_nodes(qm, part)
    inp = _inputs(model, qm, 1, seed=5)[0]
    e, r = 1, 0  # receiver node 0 in b0.attn_out
    for c, q in zip(cnodes, qnodes, strict=True):
        c.begin(7, inp)
        q.begin(inp)
    for _ in range(e):  # exchange 0 as usual
        cnode.deliver(cnodes, [c.outgoing() for c in cnodes], None)
        _q_deliver(qnodes, [q.send() for q in qnodes])
        for c, q in zip(cnodes, qnodes, strict=True):
            c.compute()
            q.compute()
    node = cnodes[r]
    rows = node.exchanges[e].rows
    kept1 = part.kept_cols(e, 1)
    col = int(kept1[0])
    width = part.plan.width("model")
    pruned1 = [c for c in range(*part.plan.ranges["model"][1]) if c not in kept1]
    own = part.plan.ranges["model"][r][0]
    junk = np.full(rows, 99, np.int8)
    bad = [
        (2, col, 0, junk, None, cnode.ERR_COLUMN),  # wrong sender
        (r, own, 0, junk, None, cnode.ERR_COLUMN),  # our own id, our own column
        (1, own, 0, junk, None, cnode.ERR_COLUMN),  # our column claimed by another node
        (4, col, 0, junk, None, cnode.ERR_COLUMN),  # sender >= D
        (1, width, 0, junk, None, cnode.ERR_COLUMN),  # column out of range
        (1, col, 0, junk, e + 1, cnode.ERR_STATE),  # another exchange
        (1, col, 0, junk, e - 1, cnode.ERR_STATE),
        (1, col, 1, junk, None, cnode.ERR_COLUMN),  # rows past the end
        (1, col, rows, junk[:1], None, cnode.ERR_COLUMN),
        (1, col, 0, junk[:0], None, cnode.ERR_COLUMN),  # no rows
    ]
    if pruned1:
        bad.append((1, pruned1[0], 0, junk, None, cnode.ERR_COLUMN))  # not kept by its owner
    for sender, c, row0, vals, ex, code in bad:
        assert node.put(sender, c, row0, vals, exchange=ex) == code, (sender, c, row0, ex)
    assert not node.has(col) and node.has(own)
    # Everything else arrives; `col` only in part (its last row is missing) and one other
    # column twice (a duplicate must not complete anything twice).
    frames = [c.outgoing() for c in cnodes]
    fq = [q.send() for q in qnodes]
    for s in range(1, 4):
        cols, vals = frames[s]
        for k, cc in enumerate(cols):
            if cc == col:
                assert node.put(s, int(cc), 0, vals[: rows - 1, k]) == cnode.OK
                assert node.put(s, int(cc), 0, vals[: rows - 1, k]) == cnode.OK
                assert not node.has(col)
            else:
                assert node.put(s, int(cc), 0, vals[:, k]) == cnode.OK
                assert node.has(int(cc))
        ex_, qcols, qvals = fq[s]
        keep = qcols != col
        qnodes[r].receive(ex_, qcols[keep], qvals[:, keep])
    hears_all = np.ones((4, 4), dtype=bool)
    hears_all[:, r] = False  # node r got its frames above
    cnode.deliver(cnodes, frames, hears_all)
    _q_deliver(qnodes, fq, hears_all)
    lost = [c.compute() for c in cnodes]
    for q in qnodes:
        q.compute()
    assert lost == [1, 0, 0, 0]
    assert node.put(1, col, 0, junk, exchange=e) == cnode.ERR_STATE  # closed: now at e + 1
    for _ in range(e + 1, part.cfg.exchanges):
        frames = [c.outgoing() for c in cnodes]
        fq = [q.send() for q in qnodes]
        for i, (a, b) in enumerate(zip(frames, fq, strict=True)):
            assert np.array_equal(a[1], b[2]), i
        cnode.deliver(cnodes, frames, None)
        _q_deliver(qnodes, fq)
        for c, q in zip(cnodes, qnodes, strict=True):
            c.compute()
            q.compute()
    for c, q in zip(cnodes, qnodes, strict=True):
        assert np.array_equal(c.output(), q.y)
        assert c.put(1, col, 0, junk) == cnode.ERR_STATE  # finished: idle
        with pytest.raises(CNodeError):
            c.compute()


# ------------------------------------------------------------------------------------------------
# Sanitizers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asan_node_run() -> Path:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake or a C compiler is missing")
    build = cnode.ASAN_BUILD_DIR
    # Same configuration as tests/test_frames.py, so the two share one build directory.
    cfg = ["cmake", "-S", str(cnode.HOST_SOURCE_DIR), "-B", str(build), "-DCATS_SANITIZE=ON",
           "-DCMAKE_BUILD_TYPE=Debug"]  # fmt: skip
    for cmd in (cfg, ["cmake", "--build", str(build), "--target", "cats_node_run", "-j2"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return build / "cats_node_run"


@pytest.mark.parametrize("task", ["forecast", "classify"])
def test_node_run_under_asan_and_ubsan(models, asan_node_run: Path, tmp_path: Path,
                                       task: str) -> None:  # fmt: skip
    model, qm = models[("test", task)]
    nodes = 4
    part = _pruned(model.cfg, nodes, seed=31)
    export.export_partition(qm, part, tmp_path / "export")
    inputs = _inputs(model, qm, 3, seed=6)
    (tmp_path / "input.bin").write_bytes(inputs.tobytes())
    rng = np.random.default_rng(9)
    delivery = _delivery(rng, nodes, model.cfg.exchanges, 0.3)
    mask = np.stack([delivery[e] for e in range(model.cfg.exchanges)]).astype(np.uint8)
    (tmp_path / "mask.bin").write_bytes(mask.tobytes())
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}  # fmt: skip
    for args, dm in (([], None), (["-m", str(tmp_path / "mask.bin"), "-f", "3"], delivery)):
        res = subprocess.run([str(asan_node_run), *args, str(tmp_path / "export"),
                              str(tmp_path / "input.bin")], capture_output=True, text=True,
                             env=env, timeout=300)  # fmt: skip
        text = res.stdout + res.stderr
        assert res.returncode == 0, text[-4000:]
        assert "runtime error" not in text and "AddressSanitizer" not in text, text[-4000:]
        got = np.array([[int(v) for v in line.split()] for line in res.stdout.splitlines()])
        want = np.stack([qref.run_swarm(qref.build_nodes(qm, part), x, dm) for x in inputs])
        assert np.array_equal(got, want)
