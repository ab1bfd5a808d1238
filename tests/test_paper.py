"""The paper's own protocol (issue 12): the reference recipe, its input/output blocks, padding
flags, the all-token metric, full-row pruning importance and pruning at initialisation, the
reference's resource formulas for the baselines, and the paper loss model on the medium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cats.analysis import resource
from cats.base.paths import ETTH2_CSV
from cats.commands import cli
from cats.model.config import ModelConfig, preset
from cats.model.dropout import DropoutConfig, loss_delivery
from cats.model.partition import Partition, exchange_schedule
from cats.model.prune import prune_step, rank_columns
from cats.model.swarm_float import simulate
from cats.model.transformer import CatsModel, token_targets
from cats.sim import loss as lossmod
from cats.training.evaluate import evaluate
from cats.training.recipe import paper_recipe
from cats.training.train import Trainer, TrainOptions, prepare_data, train_model

torch.set_num_threads(2)
PAPER_TEST = preset("test", io="paper", activation="relu", dropout=0.1, io_hidden=20)
needs_etth2 = pytest.mark.skipif(not ETTH2_CSV.is_file(), reason=f"no ETTh2 at {ETTH2_CSV}")


def _model(cfg: ModelConfig = PAPER_TEST, seed: int = 0) -> CatsModel:
    torch.manual_seed(seed)
    m = CatsModel(cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _inputs(m: CatsModel, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, m.cfg.context, generator=g, dtype=torch.float64).cumsum(1)
    r = torch.tensor([[0], [3], [m.cfg.patch - 1]])[:batch]
    return x, (torch.arange(m.cfg.context)[None] < r).double()


# --------------------------------------------------------------------------- the recipe


def test_paper_recipe_values() -> None:
    rec = paper_recipe(0.05)
    c, o = rec.cfg, rec.options
    assert (c.context, c.horizon, c.patch, c.features, c.heads, c.blocks, c.ffn) == (
        512, 96, 16, 128, 16, 6, 128,
    )  # fmt: skip
    assert (c.activation, c.dropout, c.io, c.io_hidden) == ("relu", 0.1, "paper", 128)
    assert (o.batch, o.epochs, o.lr, o.weight_decay, o.clip) == (512, 50, 1e-3, 1e-3, 1.0)
    assert (o.warmup_epochs, o.warmup_start, o.lr_floor) == (1.0, 0.01, 0.0)
    assert o.dropout == DropoutConfig(0.05, 0.05, 0.05)
    assert (o.metric, o.random_padding, o.max_eval_windows) == ("all", True, None)
    assert rec.columns == ["OT"] and rec.scheme == "paper"


@needs_etth2
def test_paper_data_is_ot_only_60_20_20_train_zscore() -> None:
    cfg = paper_recipe().cfg
    d = prepare_data(ETTH2_CSV, cfg, columns=["OT"], scheme="paper")
    raw = np.genfromtxt(ETTH2_CSV, delimiter=",", names=True, dtype=None, encoding=None)["OT"]
    n = len(raw)
    a, b = int(0.6 * n), int(0.8 * n)
    assert d.train.n_channels == 1 and d.columns == ["OT"]
    # train-part z-score (population std) of the OT column, applied to every part
    assert float(d.normaliser.mean[0]) == pytest.approx(raw[:a].mean(), rel=1e-5)
    assert float(d.normaliser.std[0]) == pytest.approx(raw[:a].std(), rel=1e-5)
    assert len(d.train) == a - 512 - 96 + 1
    assert len(d.val) == (b - a) - 512 - 96 + 1  # windows lie wholly inside each part
    assert len(d.test) == (n - b) - 512 - 96 + 1
    x, _ = d.test.batch(np.array([0]))
    assert x[0, 0] == pytest.approx((raw[b] - raw[:a].mean()) / raw[:a].std(), rel=1e-4)


# --------------------------------------------------------------------------- the blocks


def test_paper_blocks_shapes_and_schedule() -> None:
    m = _model()
    cfg = m.cfg
    assert cfg.input_width == 2 * cfg.patch and cfg.exchanges == 4 * cfg.blocks + 4
    kinds = [ex.kind for ex in exchange_schedule(cfg)]
    assert kinds[:2] == ["in_x", "in_hidden"] and kinds[-2:] == ["head_in", "head_hidden"]
    assert m.in1.weight.shape == (2 * cfg.patch, cfg.io_hidden)
    assert m.in2.weight.shape == (cfg.io_hidden, cfg.features)
    assert m.inr.weight.shape == (2 * cfg.patch, cfg.features)
    assert m.head1.weight.shape == (cfg.features, cfg.io_hidden)
    assert m.head.weight.shape == (cfg.io_hidden, cfg.horizon)
    assert m.headr.weight.shape == (cfg.features, cfg.horizon)
    x, pad = _inputs(m)
    assert m(x, pad=pad).shape == (3, cfg.tokens, cfg.horizon)
    part = Partition.full(cfg, 4)
    assert [part.plan.width(s) for s in ("input", "in_hidden", "head_hidden")] == [
        2 * cfg.patch, cfg.io_hidden, cfg.io_hidden,
    ]  # fmt: skip
    # the lean default is unchanged: same JSON, same exchanges
    lean = preset("test")
    assert "io" not in lean.to_dict() and lean.exchanges == 4 * lean.blocks + 1
    assert ModelConfig.from_dict(PAPER_TEST.to_dict()) == PAPER_TEST


def test_padding_flags() -> None:
    m = _model()
    x, pad = _inputs(m)
    u, mu, sd = m.normalise(x, pad)
    p = m.cfg.patch
    assert u.shape == (3, m.cfg.tokens, 2 * p)
    assert torch.equal(u[..., p:].reshape(3, -1), pad)  # flags ride beside the patch values
    assert (u[..., :p].reshape(3, -1)[pad.bool()] == 0).all()  # padded samples are zeroed
    z = ((x - mu) / sd).reshape(3, m.cfg.tokens, p)
    assert torch.allclose(u[1, 1:, :p], z[1, 1:])  # the rest untouched
    u0, _, _ = m.normalise(x)
    assert (u0[..., p:] == 0).all()  # evaluation: no padding
    with pytest.raises(ValueError, match="paper input block"):
        CatsModel(preset("test")).normalise(x.float(), pad.float())
    tr = Trainer.__new__(Trainer)  # the trainer's sampler: r ~ U{0..P-1} leading samples
    tr.opts, tr.cfg, tr.device = TrainOptions(random_padding=True), m.cfg, torch.device("cpu")
    tr.gen = torch.Generator().manual_seed(0)
    flags = tr.padding(4000)
    r = flags.sum(1)
    assert r.min() == 0 and r.max() == p - 1 and float(r.mean()) == pytest.approx((p - 1) / 2, 0.1)
    assert (flags[:, p:] == 0).all() and (flags.diff(dim=1) <= 0).all()


@pytest.mark.parametrize("nodes", [1, 3, 4, 16])
def test_paper_partitioned_equals_monolithic(nodes: int) -> None:
    """DESIGN.md invariant with the paper blocks: p = 0, no loss -> the monolithic result, for
    the vectorised partitioned path and the node-by-node float swarm; with loss the two agree."""
    m = _model()
    x, pad = _inputs(m)
    u = m.normalise(x, pad)[0]
    part = Partition.full(m.cfg, nodes)
    with torch.no_grad():
        mono = m.core(u).numpy()
        vec = m.core(u, part).numpy()
    np.testing.assert_allclose(vec, mono, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(simulate(m, part, u.numpy()), mono, rtol=1e-9, atol=1e-9)
    if nodes > 1:
        dl = loss_delivery(part, None, 1, 0.3, torch.Generator().manual_seed(2))
        assert set(dl) == set(range(m.cfg.exchanges))  # the io exchanges are lossy too
        with torch.no_grad():
            lossy = m.core(u[:1], part, dl).numpy()
        ref = simulate(m, part, u[:1].numpy(), {e: d[0].numpy() for e, d in dl.items()})
        np.testing.assert_allclose(lossy, ref, rtol=1e-9, atol=1e-9)
        assert not np.allclose(lossy, mono[:1])


def test_standard_dropout_only_while_training() -> None:
    m = _model()
    x, pad = _inputs(m)
    with torch.no_grad():
        a, b = m(x), m(x)
        assert torch.equal(a, b)
        m.train()
        c = m(x)
    assert not torch.allclose(a, c)


def test_all_token_metric() -> None:
    """Mean over tokens of each token's horizon-step MSE (TimeseriesPatchedDecoder.loss)."""
    cfg = preset("test")
    m = CatsModel(cfg).eval()

    class Windows:
        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(3)
            self.x = torch.randn(n, cfg.context, generator=g).cumsum(1).numpy()
            self.y = torch.randn(n, cfg.horizon, generator=g).numpy()

        def __len__(self) -> int:
            return len(self.x)

        def batch(self, idx):
            return self.x[idx], self.y[idx]

    w = Windows(10)
    x, y = torch.from_numpy(w.x), torch.from_numpy(w.y)
    with torch.no_grad():
        pred = m(x)  # (B, N, horizon)
    tgt = token_targets(cfg, x, y)
    per_token = ((pred - tgt) ** 2).mean(-1)  # each token's MSE
    want_all = float(per_token.mean(-1).mean())
    want_last = float(per_token[:, -1].mean())
    assert evaluate(m, None, w, metric="all")["mse"] == pytest.approx(want_all, rel=1e-5)
    assert evaluate(m, None, w, metric="last")["mse"] == pytest.approx(want_last, rel=1e-5)
    assert want_all != pytest.approx(want_last)
    with pytest.raises(ValueError):
        evaluate(m, None, w, metric="first")


# --------------------------------------------------------------------------- pruning


def test_row_importance_sums_the_whole_row() -> None:
    m = _model(PAPER_TEST).float()
    part = Partition.full(m.cfg, 4)
    row = rank_columns(m, part, "row")
    remote = rank_columns(m, part, "remote")
    sched = part.schedule
    for e, ex in enumerate(sched):
        if ex.kind == "attn_in":
            blk = m.blocks[ex.block]
            want = sum(
                lin.weight.detach().abs().double().sum(1) for lin in (blk.wq, blk.wk, blk.wv)
            )
            np.testing.assert_allclose(row[e], want.numpy(), rtol=1e-6)
            assert (row[e] > remote[e]).all()
        if ex.kind == "in_x":  # the input block: MLP layer 1 and its residual both consume
            want = m.in1.weight.detach().abs().sum(1) + m.inr.weight.detach().abs().sum(1)
            np.testing.assert_allclose(row[e], want.double().numpy(), rtol=1e-6)
    prune_step(m, part, 0.5, importance="row")
    assert part.pruning_ratio() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError):
        rank_columns(m, part, "column")


def test_prune_at_initialisation_trains_the_masked_model(tmp_path: Path) -> None:
    cfg = preset("test")
    res = train_model(
        cfg,
        "default",
        nodes=4,
        steps=6,
        batch=16,
        max_eval_windows=32,
        max_test_windows=32,
        prune=0.5,
        prune_step=0.25,
        prune_at_init=True,
        prune_importance="row",
        progress=False,
    )
    assert res.part.pruning_ratio() == pytest.approx(0.5, abs=0.02)
    assert [h["target"] for h in res.metrics["pruning"]] == [0.25, 0.5]
    assert all("finetune" not in h for h in res.metrics["pruning"])  # no fine-tune phases
    assert [p["phase"] for p in res.metrics["phases"]] == ["float"]
    assert res.metrics["steps"] == 6


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize(
    ("shape", "method", "p", "want"),
    [
        # D=4, N=8, F=16, H=4 (1 head per device): hand-evaluated calculate_resources.py terms
        ((4, 8, 16, 4), "voltage", 0.0, (128 + 8 + 64 + 64, 4 * 16 * 16, 128)),
        ((4, 8, 16, 4), "astra", 0.0, (92 + 8 + 46 + 64, 4 * 16 * 16, 80)),
        ((4, 8, 16, 4), "bochem", 0.0, (max(128 + 96 + 32, 32 + 128 + 384), 256, 1024)),
        ((4, 8, 16, 4), "allgather", 0.0, (max(32 + 96 + 96 + 32, 160), 256, 512)),
        ((4, 8, 16, 4), "cats", 0.5, (max(32 + 48 + 96 + 32, 112), 160, 256)),
        # D=3, N=10, F=12, H=4 (ceil(4/3) = 2 heads per device)
        ((3, 10, 12, 4), "voltage", 0.0, (120 + 10 + 60 + 80, 576, 120)),
        ((3, 10, 12, 4), "astra", 0.0, (90 + 10 + 45 + 80, 576, 75)),
        ((3, 10, 12, 4), "bochem", 0.0, (max(120 + 90 + 60, 60 + 120 + 240), 288, 720)),
        ((3, 10, 12, 4), "cats", 0.25, (max(40 + 60 + 90 + 60, 60 + 45 + 40), 252, 360)),
    ],
)
def test_baselines_equal_the_reference_formulas(shape, method, p, want) -> None:
    got = resource.baseline_resources(method, *shape, p)
    assert (got["ram"], got["flash"], got["com"]) == pytest.approx(want)


def test_report_baselines_and_fixed_depth(capsys) -> None:
    argv = ["report", "--nodes", "1", "8", "--p", "0", "0.5", "--baselines", "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    names = {r["method"] for r in res["baselines"]["rows"]}
    assert names == {"voltage", "astra", "bochem", "allgather", "cats"}
    cats = [r for r in res["baselines"]["rows"] if r["method"] == "cats" and r["p"] == 0.5][0]
    assert cats["attention_block"] == resource.baseline_resources("cats", 8, 32, 128, 16, 0.5)
    assert cats["whole_model"]["ram_bytes"] > cats["attention_block"]["ram"]
    assert [r for r in res["baselines"]["rows"] if r["method"] == "voltage"][0][
        "whole_model"
    ] is None
    fixed = res["scale_ratio_fixed_depth"]
    assert set(fixed) == {"1", "8"} and fixed["1"] == 1.0 and fixed["8"] > 4
    assert res["scale_fixed_depth_detail"]["8"]["blocks"] == 6


# --------------------------------------------------------------------------- the medium


def test_medium_paper_loss_drops_whole_messages_with_three_modes() -> None:
    m = lossmod.LossModel.parse("paper:0.1", seed=3)
    assert str(m) == "paper:0.1"
    d = 6
    msgs = [(i, e, s, r) for i in range(40) for e in range(25) for s in range(d) for r in range(d)]
    msgs = [k for k in msgs if k[2] != k[3]]
    lost = {k: m.lost(k[0], k[0], k[1], k[2], 0, k[3]) for k in msgs}
    # every fragment of a message shares its fate
    assert all(
        m.lost(k[0], k[0], k[1], k[2], f, k[3]) == lost[k] for k in msgs[:500] for f in (1, 3)
    )
    rate = np.mean([v is not None for v in lost.values()])
    assert rate == pytest.approx(1 - 0.9**3, abs=0.015)
    assert {v for v in lost.values() if v} == {"paper"}
    # whole receivers go deaf together: a receiver missing every sender of an exchange
    deaf = np.mean(
        [
            all(lost[(i, e, s, r)] for s in range(d) if s != r)
            for i in range(40)
            for e in range(25)
            for r in range(d)
        ]
    )
    assert deaf == pytest.approx(0.1, abs=0.03)


@needs_etth2
def test_cli_train_recipe_paper_then_evaluate_each_loss_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "paper"
    argv = ["train", "--recipe", "paper", "--data", str(ETTH2_CSV), "--message-dropout", "0.1"]
    argv += ["--context", "128", "--blocks", "1", "--nodes", "4", "--steps", "2", "--batch", "16"]
    argv += ["--max-eval-windows", "16", "--max-test-windows", "16", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    o = res["options"]
    assert res["dataset"] == "ETTh2[OT]" and res["scheme"] == "paper"
    assert o["dropout"] == {"p_link": 0.1, "p_receiver": 0.1, "p_sender": 0.1}
    assert (o["metric"], o["random_padding"], o["weight_decay"], o["batch"]) == (
        "all", True, 1e-3, 16,
    )  # fmt: skip
    assert res["config"]["io"] == "paper" and res["config"]["context"] == 128
    rates = {}
    for model in ("paper", "link", "frame"):
        argv = ["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--loss", "0", "0.3"]
        argv += ["--loss-model", model, "--seeds", "2", "--max-windows", "16", "--json"]
        assert cli.main(argv) == 0
        ev = json.loads(capsys.readouterr().out)
        assert ev["dataset"] == "ETTh2[OT]" and ev["loss_model"] == model
        assert ev["results"][1]["loss_model"] == model and ev["results"][1]["metric"] == "all"
        rates[model] = ev["results"][1]["mse"]
    assert len(set(rates.values())) == 3  # three different loss models
