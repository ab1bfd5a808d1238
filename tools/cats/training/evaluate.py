"""Test-set quality of a (partitioned) model, clean or under message loss.

Forecasting is scored in the train-normalised data space with one of two metrics (``METRICS``):
``last`` (the ETT literature: MSE/MAE of the last token's forecast, the ``horizon`` steps after
the context) or ``all`` (the paper's reference code, TimeseriesPatchedDecoder.loss: the mean
over all tokens of each token's horizon-step MSE, token t forecasting the steps after its patch).
Classification is scored by accuracy and cross-entropy. Under loss, each seed draws fresh
per-exchange, per-window delivery masks from a loss model (``cats.model.dropout.loss_delivery``:
``paper`` by default, ``link`` or ``frame``), and the results are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cats.model.dropout import loss_delivery
from cats.model.partition import Partition
from cats.model.transformer import CatsModel, token_targets

DEFAULT_LOSSES = (0.0, 0.01, 0.05, 0.1, 0.2)
METRICS = ("last", "all")


def is_pruned(part: Partition | None) -> bool:
    return part is not None and part.nodes > 1 and any(not k.all() for k in part.kept)


def needs_partition(part: Partition | None, lossy: bool) -> bool:
    """Whether the partitioned path can differ from the monolithic one (which is cheaper):
    only with D > 1 and pruned kept sets or lost messages (DESIGN.md invariant)."""
    return part is not None and part.nodes > 1 and (lossy or is_pruned(part))


def eval_indices(n: int, max_windows: int | None) -> np.ndarray:
    """All window indices, or `max_windows` evenly spaced ones (covering the whole period, and
    the same set every call so losses compare)."""
    if max_windows is None or max_windows >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_windows).round().astype(np.int64))


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


@torch.no_grad()
def evaluate(
    model: CatsModel,
    part: Partition | None,
    windows: Any,
    loss_rate: float = 0.0,
    seeds: int | Sequence[int] = 5,
    batch: int = 256,
    max_windows: int | None = None,
    loss_model: str = "paper",
    metric: str = "last",
) -> dict[str, Any]:
    """Score `model` on `windows` (ForecastWindows or ClassificationWindows) at `loss_rate`
    under `loss_model` (cats.model.dropout.LOSS_MODELS), forecasts by `metric` (METRICS).

    `seeds` (a count or explicit seeds) matters only when loss_rate > 0; the clean result is
    deterministic and computed once. Returns mean metrics plus per-seed values."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    lossy = loss_rate > 0 and part is not None and part.nodes > 1
    use_part = part if needs_partition(part, lossy) else None
    idx = eval_indices(len(windows), max_windows)
    seed_list = _seed_list(seeds) if lossy else [0]
    if not seed_list:
        raise ValueError("need at least one seed")
    classify = model.cfg.task == "classify"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_seed = []
    try:
        for seed in seed_list:
            gen = torch.Generator().manual_seed(seed)
            sums = np.zeros(2)
            for lo in range(0, len(idx), batch):
                xb, yb = windows.batch(idx[lo : lo + batch])
                x = torch.from_numpy(xb).to(device)
                y = torch.from_numpy(np.asarray(yb)).to(device)
                dl = (
                    loss_delivery(part, None, len(x), loss_rate, gen, loss_model) if lossy else None
                )
                if not classify and metric == "all":
                    out = model(x, use_part, dl).flatten(1)
                    y = token_targets(model.cfg, x, y).flatten(1)
                else:
                    out = model.predict(x, use_part, dl)
                if classify:
                    sums += [
                        F.cross_entropy(out, y, reduction="sum").item(),
                        (out.argmax(-1) == y).sum().item(),
                    ]
                else:
                    err = out - y
                    sums += [err.pow(2).mean(-1).sum().item(), err.abs().mean(-1).sum().item()]
            per_seed.append(sums / len(idx))
    finally:
        model.train(was_training)
    arr = np.array(per_seed)
    names = ("ce", "accuracy") if classify else ("mse", "mae")
    res: dict[str, Any] = {n: float(arr[:, i].mean()) for i, n in enumerate(names)}
    res[f"{names[0]}_std"] = float(arr[:, 0].std())
    res["per_seed"] = {n: arr[:, i].tolist() for i, n in enumerate(names)}
    res.update(loss_rate=float(loss_rate), seeds=seed_list, windows=len(idx))
    if lossy:
        res["loss_model"] = loss_model
    if not classify:
        res["metric"] = metric
    return res


def val_loss(res: dict[str, Any]) -> float:
    """The scalar used for model selection: MSE (forecast) or cross-entropy (classify)."""
    return res["mse"] if "mse" in res else res["ce"]


def robustness(
    model: CatsModel,
    part: Partition,
    windows: Any,
    losses: Sequence[float] = DEFAULT_LOSSES,
    seeds: int | Sequence[int] = 5,
    batch: int = 256,
    max_windows: int | None = None,
    reference: float | None = None,
    loss_model: str = "paper",
    metric: str = "last",
) -> list[dict[str, Any]]:
    """`evaluate` at each loss rate, with ``ratio`` = metric / `reference` (default: this
    model's clean metric)."""
    kw = {"loss_model": loss_model, "metric": metric}
    rows = [evaluate(model, part, windows, r, seeds, batch, max_windows, **kw) for r in losses]
    if reference is None:
        clean = [val_loss(r) for r in rows if r["loss_rate"] == 0]
        reference = (
            clean[0]
            if clean
            else val_loss(evaluate(model, part, windows, 0.0, seeds, batch, max_windows, **kw))
        )
    for r in rows:
        r["ratio"] = val_loss(r) / reference
    return rows
