"""The integer reference: primitives, D-invariance (bit-exact) and closeness to the float model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cats.model.config import preset
from cats.model.partition import Partition
from cats.model.swarm_float import simulate
from cats.model.transformer import CatsModel
from cats.quant import qref


def _series(batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    phase = torch.rand(batch, 1, generator=g) * 6.28
    noise = torch.randn(batch, length, generator=g).cumsum(1) * 0.1
    return torch.sin(t / 7 + phase) + noise


# The paper recipe's blocks (ReLU) on the test shape; the io MLPs narrow to keep it fast.
PAPER = {"io": "paper", "activation": "relu", "io_hidden": 20}


def _qmodel(task: str = "forecast", seed: int = 0, **cfg):
    torch.manual_seed(seed)
    m = CatsModel(preset("test", task=task, **cfg))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    patches = m.normalise(_series(64, m.cfg.context, seed + 1))[0]
    qref.calibrate(m, patches)
    return m, qref.quantize(m)


def _delivery(exchanges: int, rng: np.random.Generator, loss: float) -> dict[int, np.ndarray]:
    """A random 4-node delivery mask per exchange (each link lost with `loss`, diagonal on)."""
    delivery = {}
    for e in range(exchanges):
        dm = rng.random((4, 4)) > loss
        np.fill_diagonal(dm, True)
        delivery[e] = dm
    return delivery


def _inputs(
    m: CatsModel, qm: qref.QModel, batch: int, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    patches = m.normalise(_series(batch, m.cfg.context, seed))[0]
    return patches, qref.quantize_input(patches.numpy(), qm.input_scale)


def test_quantize_multiplier_roundtrip() -> None:
    for real in (1e-9, 3.7e-5, 0.0123, 0.5, 0.999, 1.0, 7.25, -0.3):
        m, sh = qref.quantize_multiplier(real)
        assert 1 <= sh <= 62
        assert math.isclose(m / 2**sh, real, rel_tol=1e-6, abs_tol=1e-18)
    assert qref.quantize_multiplier(0.0) == (0, 1)


def test_requant_rounds_half_up_and_saturates() -> None:
    m, sh = 1 << 30, 31  # x 0.5
    assert list(qref.requant(np.array([1, 3, -1, -3]), m, sh)) == [1, 2, 0, -1]
    assert list(qref.sat8(np.array([300, -300, 5]))) == [127, -127, 5]


def test_isqrt_exact() -> None:
    v = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**40 - 1, 2**40, 2**50 + 12345], dtype=np.int64)
    r = qref.isqrt(v)
    assert all(int(a) == math.isqrt(int(b)) for a, b in zip(r, v, strict=True))


def test_softmax_sums_to_one_and_respects_mask() -> None:
    rng = np.random.default_rng(0)
    logits = rng.integers(-400, 400, size=(5, 9))
    p = qref.softmax(logits, None).astype(np.int64)
    assert np.all(np.abs(p.sum(-1) - 128) <= 9)  # each entry rounds by <= 1/2 LSB
    ref = np.exp((logits - logits.max(-1, keepdims=True)) / 16)
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(p / 128 - ref).max() < 0.02
    valid = np.tril(np.ones((9, 9), dtype=bool))
    pm = qref.softmax(rng.integers(-50, 50, size=(9, 9)), valid)
    assert np.all(pm[~valid] == 0) and pm[0, 0] == 127


def test_layer_norm_matches_float_and_ignores_absent() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-100, 100, size=(4, 16)).astype(np.int8)
    present = rng.random(16) < 0.7
    g, b, s_out = rng.normal(1, 0.2, 16), rng.normal(0, 0.1, 16), 4 / 127
    m, sh = qref.quantize_multipliers(g / (s_out * 2**qref.LN_NORM_BITS))
    beta = np.round(b / s_out).astype(np.int64)
    out = qref.layer_norm(x, present, m, sh, beta, 0)
    xs = x[:, present].astype(np.float64)
    ref = (xs - xs.mean(-1, keepdims=True)) / xs.std(-1, keepdims=True) * g[present] + b[present]
    assert np.abs(out[:, present] * s_out - ref).max() <= 1.01 * s_out
    assert np.all(out[:, ~present] == 0)


@pytest.mark.parametrize("io", ["lean", "paper"])
@pytest.mark.parametrize("task", ["forecast", "classify"])
def test_swarm_is_bit_exact_for_every_node_count(task: str, io: str) -> None:
    """p = 0, no loss: integer sums do not depend on the split, so every D gives the same bits."""
    m, qm = _qmodel(task, **(PAPER if io == "paper" else {}))
    _, inp = _inputs(m, qm, 3, seed=5)
    outs = {}
    for nodes in (1, 2, 4, 8, 16):
        swarm = qref.build_nodes(qm, Partition.full(m.cfg, nodes))
        outs[nodes] = np.stack([qref.run_swarm(swarm, x) for x in inp])
    for nodes, y in outs.items():
        assert y.dtype == np.int8 and y.shape == (3, m.cfg.outputs)
        assert np.array_equal(y, outs[1]), f"D={nodes} differs from D=1"


@pytest.mark.parametrize("cfg", [{}, PAPER, {**PAPER, "activation": "gelu"}])
def test_int8_tracks_the_qat_float_model(cfg: dict) -> None:
    m, qm = _qmodel(**cfg)
    patches, inp = _inputs(m, qm, 8, seed=9)
    m.set_quant(True)
    m.eval()
    with torch.no_grad():
        ref = m.core(patches)[:, -1].numpy()
    swarm = qref.build_nodes(qm, Partition.full(m.cfg, 4))
    got = np.stack([qref.run_swarm(swarm, x) for x in inp]) * qm.output_scale
    err = np.abs(got - ref).max()
    assert err < 0.1 * np.abs(ref).max(), err


@pytest.mark.parametrize("io", ["lean", "paper"])
def test_losses_change_output_like_the_float_masked_model(io: str) -> None:
    m, qm = _qmodel(**(PAPER if io == "paper" else {}))
    patches, inp = _inputs(m, qm, 1, seed=11)
    part = Partition.full(m.cfg, 4)
    delivery = _delivery(m.cfg.exchanges, np.random.default_rng(3), 0.4)
    swarm = qref.build_nodes(qm, part)
    clean = qref.run_swarm(swarm, inp[0]) * qm.output_scale
    lossy = qref.run_swarm(swarm, inp[0], delivery) * qm.output_scale
    m.set_quant(True)
    m.eval()
    with torch.no_grad():
        ref = m.core(patches, part, {e: torch.as_tensor(d)[None] for e, d in delivery.items()})
    ref = ref[0, -1].numpy()
    assert np.abs(lossy - clean).max() > 3 * qm.output_scale
    assert np.abs(lossy - ref).max() < 0.1 * np.abs(ref).max() + 4 * qm.output_scale


def test_node_rejects_malformed_frames() -> None:
    m, qm = _qmodel()
    _, inp = _inputs(m, qm, 1, seed=2)
    a, b = qref.build_nodes(qm, Partition.full(m.cfg, 2))
    a.begin(inp[0])
    b.begin(inp[0])
    e, cols, vals = b.send()
    with pytest.raises(ValueError, match="exchange"):
        a.receive(e + 1, cols, vals)
    with pytest.raises(ValueError, match="not held"):
        a.receive(e, cols + 1000, vals)
    with pytest.raises(ValueError, match="values must be"):
        a.receive(e, cols, vals[:, :-1])
    with pytest.raises(ValueError, match="input must be"):
        a.begin(inp[0].astype(np.int16))


def test_batched_inputs_give_the_same_bits_as_one_at_a_time() -> None:
    m, qm = _qmodel("classify")
    _, inp = _inputs(m, qm, 5, seed=4)
    part = Partition.full(m.cfg, 4)
    rng = np.random.default_rng(9)
    dm = {e: rng.random((4, 4)) > 0.3 for e in range(m.cfg.exchanges)}
    swarm = qref.build_nodes(qm, part)
    one = np.stack([qref.run_swarm(swarm, x, dm) for x in inp])
    assert np.array_equal(qref.run_swarm(swarm, inp, dm), one)


def test_paper_blocks_track_the_float_swarm_node_by_node() -> None:
    """io = paper: the integer swarm (input block: in_x and in_hidden exchanged; output block:
    LN -> MLP + residual, head_hidden exchanged) against cats.model.swarm_float with the same
    lost messages, pruned columns included, within int8 tolerance."""
    m, qm = _qmodel(**PAPER)
    assert "embed.w" not in qm.t and {"in1.w", "inr.bias", "head1.w", "headr.w"} <= set(qm.t)
    patches, inp = _inputs(m, qm, 2, seed=13)
    part = Partition.full(m.cfg, 4)
    rng = np.random.default_rng(5)
    for k in part.kept[:2] + part.kept[-2:]:  # prune the io exchanges' columns too
        k[:] = rng.random(k.size) > 0.3
        k[::3] = True
    part.validate()
    delivery = _delivery(m.cfg.exchanges, rng, 0.3)
    swarm = qref.build_nodes(qm, part)
    got = np.stack([qref.run_swarm(swarm, x, delivery) for x in inp]) * qm.output_scale
    clean = np.stack([qref.run_swarm(swarm, x) for x in inp]) * qm.output_scale
    ref = simulate(m, part, patches.numpy(), delivery)[:, -1]
    assert np.abs(got - clean).max() > 3 * qm.output_scale  # the losses matter
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 4 * qm.output_scale
