"""From a trained float model to the int8 swarm, and how much accuracy that costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats.model.partition import Partition
from cats.model.transformer import CatsModel
from cats.quant import qref
from cats.training.checkpoint import load_checkpoint
from cats.training.evaluate import eval_indices, evaluate
from cats.training.train import data_kwargs_of, prepare_data


def quantized(model: CatsModel, calib_windows: Any, n: int = 512, seed: int = 0) -> qref.QModel:
    """Quantise `model`; observers left unset (no QAT) are calibrated on `n` sampled windows."""
    if any(float(a.amax) == 0 for k, a in model.act_quants().items() if k != "aq.pool"):
        idx = calib_windows.sample_indices(min(n, len(calib_windows)), np.random.default_rng(seed))
        x, _ = calib_windows.batch(np.sort(idx))
        qref.calibrate(model, model.normalise(torch.from_numpy(x))[0])
    return qref.quantize(model)


def load_for_export(checkpoint: Path, nodes: int | None) -> tuple[qref.QModel, Partition]:
    """The quantised model and partition to export from a `cats train` checkpoint."""
    ck = load_checkpoint(checkpoint)
    part = ck.partition()
    if nodes is not None and nodes != part.nodes:
        if part.pruning_ratio() > 0:
            raise ValueError(
                f"checkpoint is pruned for {part.nodes} nodes; export it with --nodes "
                f"{part.nodes} or prune again for {nodes} (`cats prune --nodes {nodes}`)"
            )
        part = Partition.full(ck.cfg, nodes)
    model = ck.model()
    bundle = prepare_data(
        ck.extra.get("data"), ck.cfg, normaliser=ck.normaliser, **data_kwargs_of(ck)
    )
    return quantized(model, bundle.train), part


def predict_int8(
    model: CatsModel,
    qm: qref.QModel,
    nodes: list[qref.Node],
    x: np.ndarray,
    delivery: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """What the gateway returns: RevIN + int8 input, the integer swarm, dequantised output."""  # noqa: D401
    patches, mu, sd = model.normalise(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    y = qref.run_swarm(nodes, qref.quantize_input(patches.numpy(), qm.input_scale), delivery)
    y = y.astype(np.float64) * qm.output_scale
    if model.cfg.task == "classify":
        return y
    return y * sd.numpy() + mu.numpy()


def int8_gap(
    model: CatsModel,
    qm: qref.QModel,
    part: Partition,
    windows: Any,
    max_windows: int | None = 1000,
    batch: int = 256,
) -> dict[str, Any]:
    """Test metric of the float model and of the integer swarm on the same windows."""
    nodes = qref.build_nodes(qm, part)
    idx = eval_indices(len(windows), max_windows)
    sq = ab = correct = 0.0
    for lo in range(0, len(idx), batch):
        x, y = windows.batch(idx[lo : lo + batch])
        pred = predict_int8(model, qm, nodes, x)
        if model.cfg.task == "classify":
            correct += float((pred.argmax(-1) == y).sum())
        else:
            sq += float(((pred - y) ** 2).mean(-1).sum())
            ab += float(np.abs(pred - y).mean(-1).sum())
    ref = evaluate(model, part, windows, 0.0, max_windows=max_windows)
    n = len(idx)
    if model.cfg.task == "classify":
        return {"windows": n, "float_accuracy": ref["accuracy"], "int8_accuracy": correct / n,
                "gap": correct / n - ref["accuracy"]}  # fmt: skip
    return {"windows": n, "float_mse": ref["mse"], "int8_mse": sq / n, "float_mae": ref["mae"],
            "int8_mae": ab / n, "gap_ratio": (sq / n) / ref["mse"]}  # fmt: skip
