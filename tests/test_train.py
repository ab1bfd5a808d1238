"""Training, QAT, message-dropout, checkpoints, evaluation and the train/evaluate/prune CLI."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cats.base.paths import ETTH2_CSV
from cats.commands import cli
from cats.model.config import preset
from cats.model.dropout import DropoutConfig
from cats.model.prune import prune_step
from cats.training import train as train_mod
from cats.training.checkpoint import load_checkpoint, save_checkpoint
from cats.training.evaluate import evaluate, robustness
from cats.training.train import TrainOptions, prepare_data, train_model

torch.set_num_threads(2)
CFG = preset("test")  # context 64, horizon 16, F 32, 16 heads, 2 blocks
FAST = dict(steps=80, batch=32, max_eval_windows=256, max_test_windows=512, progress=False)
needs_etth2 = pytest.mark.skipif(
    not ETTH2_CSV.is_file(), reason=f"ETTh2 not found at {ETTH2_CSV} (lay shared/data/ETT)"
)


@pytest.fixture(scope="module")
def ett():
    if not ETTH2_CSV.is_file():
        pytest.skip(f"ETTh2 not found at {ETTH2_CSV} (lay shared/data/ETT)")
    return prepare_data(ETTH2_CSV, CFG)


@needs_etth2
def test_training_on_etth2_lowers_validation_loss(ett) -> None:
    res = train_model(CFG, ett, nodes=1, **FAST)
    m = res.metrics
    assert m["val_loss"] < 0.9 * m["initial_val_loss"]
    assert np.isfinite(m["test_mse"]) and 0 < m["test_mae"] < 2
    assert m["dataset"] == "ETTh2" and m["scheme"] == "ett-hourly" and m["steps"] == 80
    assert m["history"][0]["step"] == 0 and m["history"][-1]["step"] == 80


def test_training_on_default_dataset_lowers_validation_loss() -> None:
    if importlib.util.find_spec("vega_datasets") is None:
        pytest.skip("the default dataset ships in the PyPI package vega-datasets (not installed)")
    res = train_model(CFG, "default", nodes=2, **FAST)
    assert res.data.name == "seattle-sf-temps"
    assert res.metrics["val_loss"] < 0.9 * res.metrics["initial_val_loss"]


@needs_etth2
def test_qat_run(ett) -> None:
    res = train_model(CFG, ett, nodes=4, qat=True, qat_fraction=0.25, **FAST)
    assert res.model.quant and res.metrics["quant"]
    assert [p["phase"] for p in res.metrics["phases"]] == ["float", "qat"]
    assert res.metrics["val_loss"] < res.metrics["initial_val_loss"]
    used = {k: q for k, q in res.model.act_quants().items() if k != "aq.pool"}  # classify only
    assert all(float(q.amax) > 0 for q in used.values())


@needs_etth2
def test_message_dropout_uses_partitioned_path(ett, monkeypatch) -> None:
    calls: list[int] = []
    real = train_mod.sample_delivery

    def spy(part, exchanges, batch, cfg, gen):
        out = real(part, exchanges, batch, cfg, gen)
        calls.append(len(out))
        return out

    monkeypatch.setattr(train_mod, "sample_delivery", spy)
    drop = DropoutConfig(p_link=0.2, p_receiver=0.05, p_sender=0.05)
    res = train_model(CFG, ett, nodes=4, dropout=drop, **{**FAST, "steps": 40})
    assert calls and all(n == CFG.exchanges for n in calls)
    assert res.metrics["val_loss"] < res.metrics["initial_val_loss"]
    lossy = evaluate(res.model, res.part, ett.test, 0.2, seeds=2, max_windows=128)
    assert len(lossy["per_seed"]["mse"]) == 2 and lossy["mse"] > 0


@needs_etth2
def test_pruning_during_training(ett) -> None:
    res = train_model(
        CFG, ett, nodes=4, prune=0.5, prune_step=0.25, finetune_steps=10, **{**FAST, "steps": 30}
    )
    assert res.metrics["pruning_ratio"] == pytest.approx(0.5)
    assert [round(h["target"], 2) for h in res.metrics["pruning"]] == [0.25, 0.5]


@needs_etth2
def test_robustness_rows(ett) -> None:
    torch.manual_seed(0)
    model = train_mod.CatsModel(CFG)
    part = train_mod.Partition.full(CFG, 8)
    rows = robustness(model, part, ett.test, [0.0, 0.5], seeds=2, max_windows=64)
    assert rows[0]["ratio"] == pytest.approx(1.0) and rows[0]["seeds"] == [0]
    assert rows[1]["ratio"] != pytest.approx(1.0)


def test_checkpoint_roundtrip_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = train_mod.CatsModel(CFG)
    part = train_mod.Partition.full(CFG, 4)
    prune_step(model, part, 0.5)
    model.train()
    x = torch.randn(3, CFG.context).cumsum(1)
    model(x, part)  # warm the quantiser observers
    model.set_quant(True)
    model.eval()
    norm = {"mean": [1.0, 2.0], "std": [3.0, 4.0]}
    path = save_checkpoint(
        tmp_path / "c.pt",
        model,
        part,
        dropout=DropoutConfig(0.1),
        metrics={"test_mse": 0.5},
        normaliser=norm,
        dataset="x",
        extra={"data": "default"},
    )
    ck = load_checkpoint(path)
    m2, p2 = ck.model(), ck.partition()
    assert ck.quant and ck.dropout == DropoutConfig(0.1) and ck.normaliser == norm
    assert ck.metrics == {"test_mse": 0.5} and ck.dataset == "x" and ck.cfg == CFG
    assert p2.content_hash() == part.content_hash()
    with torch.no_grad():
        assert torch.equal(model(x, part), m2(x, p2))
        assert torch.equal(model(x), m2(x))


def test_corrupt_or_missing_checkpoint_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.manual_seed(0)
    model = train_mod.CatsModel(CFG)
    good = save_checkpoint(tmp_path / "good.pt", model, train_mod.Partition.full(CFG, 2))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a CATS checkpoint"):
        load_checkpoint(other)


def _available_commands() -> tuple[str, ...]:
    """Subcommand modules that import (siblings may still be under construction)."""
    ok = []
    for name in cli.COMMANDS:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        ok.append(name)
    return tuple(ok)


@needs_etth2
def test_cli_train_evaluate_prune_json(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", _available_commands())
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(ETTH2_CSV),
        "--preset",
        "test",
        "--nodes",
        "4",
        "--steps",
        "30",
        "--batch",
        "32",
        "--max-eval-windows",
        "128",
        "--max-test-windows",
        "256",
        "--dropout-link",
        "0.1",
        "--out",
        str(out),
        "--json",
    ]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] and res["nodes"] == 4 and np.isfinite(res["test_mse"])
    assert res["options"]["dropout"]["p_link"] == 0.1
    for f in ("checkpoint.pt", "metrics.json", "forecast.png"):
        assert (out / f).stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["test_mse"] == res["test_mse"]

    ck = str(out / "checkpoint.pt")
    argv = [
        "evaluate",
        "--checkpoint",
        ck,
        "--loss",
        "0",
        "0.1",
        "--seeds",
        "2",
        "--max-windows",
        "64",
        "--json",
    ]
    assert cli.main(argv) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [r["loss_rate"] for r in ev["results"]] == [0.0, 0.1]
    assert ev["results"][0]["ratio"] == 1.0

    argv = [
        "prune",
        "--checkpoint",
        ck,
        "--target",
        "0.5",
        "--step",
        "0.5",
        "--finetune-steps",
        "5",
        "--max-eval-windows",
        "64",
        "--max-test-windows",
        "64",
        "--out",
        str(tmp_path / "p"),
        "--json",
    ]
    assert cli.main(argv) == 0
    pr = json.loads(capsys.readouterr().out)
    assert pr["pruning_ratio"] == pytest.approx(0.5)
    assert load_checkpoint(tmp_path / "p" / "checkpoint.pt").partition().pruning_ratio() == 0.5

    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_options_validation() -> None:
    with pytest.raises(ValueError):
        TrainOptions(prune=1.0)
    with pytest.raises(ValueError):
        TrainOptions(batch=0)
