"""SomeGather pruning: decide which of its own columns each node broadcasts in each exchange.

Two importance measures (``IMPORTANCES``):

* ``remote`` (the default): a column only needs to cross the air if some *other* node consumes
  it, so its importance is the L1 norm of the weight rows that consume it on other nodes (the
  rows of the layers fed by the exchange, restricted to the output columns the other nodes own);
* ``row``: the L1 norm of the whole consuming row, every output column included (the paper's
  reference code, model/pruning.py InterDevicePruningMask: sum of abs(W) over the row).

Each node drops its lowest-ranked columns in steps, fine-tuning in between so the network
adapts (or, ``prune_at_init`` in training, all steps on the initialised model, which is then
trained with the mask: the reference's default regime); a node always keeps at least one
column per exchange, and still uses its pruned columns itself.

``cats prune`` applies this to a trained checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cats.model.partition import Partition
from cats.model.transformer import CatsModel, Lin

IMPORTANCES = ("remote", "row")


def _consumers(model: CatsModel, part: Partition, e: int) -> list[tuple[Lin, str]]:
    """The layers fed by exchange e, each with the column space of its outputs."""
    ex = part.schedule[e]
    paper = model.cfg.io == "paper"
    if ex.block < 0:
        return {
            "head_in": (
                [(model.head1, "head_hidden"), (model.headr, "output")]
                if paper
                else [(model.head, "output")]
            ),
            "head_hidden": [(model.head, "output")],
            "in_x": [(model.in1, "in_hidden"), (model.inr, "model")] if paper else [],
            "in_hidden": [(model.in2, "model")] if paper else [],
        }[ex.kind]
    blk = model.blocks[ex.block]
    return {
        "attn_in": [(blk.wq, "model"), (blk.wk, "model"), (blk.wv, "model")],
        "attn_out": [(blk.wo, "model")],
        "ffn_in": [(blk.w1, "hidden")],
        "ffn_hidden": [(blk.w2, "model")],
    }[ex.kind]


def rank_columns(model: CatsModel, part: Partition, importance: str = "remote") -> list[np.ndarray]:
    """Per exchange, a score for every column: the L1 norm of the weight rows that consume it on
    nodes other than its owner (``remote``), or of the whole consuming rows (``row``). Higher =
    more worth broadcasting."""
    if part.cfg != model.cfg:
        raise ValueError("partition was made for a different model configuration")
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose from {IMPORTANCES}")
    scores = []
    for e, ex in enumerate(part.schedule):
        in_owner = part.plan.owner(ex.space)  # (C_in,)
        s = torch.zeros(len(in_owner), dtype=torch.float64)
        with torch.no_grad():
            for lin, out_space in _consumers(model, part, e):
                out_owner = part.plan.owner(out_space)
                w = lin.weight.detach().abs().double()
                if importance == "remote":
                    w = w * torch.as_tensor(in_owner[:, None] != out_owner[None, :])
                s += w.sum(dim=1).cpu()
        scores.append(s.numpy())
    return scores


def keep_count(own: int, ratio: float) -> int:
    """Columns a node with `own` columns keeps at pruning ratio `ratio` (>= 1 when own > 0)."""
    if own == 0:
        return 0
    # the small epsilon keeps e.g. (1 - 0.7) * 10 = 3.0000000000000004 from rounding up to 4
    return max(1, min(own, math.ceil((1.0 - ratio) * own - 1e-9)))


def prune_step(
    model: CatsModel,
    part: Partition,
    ratio: float,
    monotone: bool = True,
    importance: str = "remote",
) -> Partition:
    """Set the kept sets (in place) so each node keeps its top ceil((1 - ratio) * own) columns
    per exchange. With ``monotone`` a column pruned earlier stays pruned: the remote rows of a
    pruned column get no gradient while fine-tuning, so re-ranking it would be meaningless."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), not {ratio}")
    if part.nodes == 1:
        return part
    scores = rank_columns(model, part, importance)
    for e, ex in enumerate(part.schedule):
        new = np.zeros_like(part.kept[e])
        for a, b in part.plan.ranges[ex.space]:
            k = keep_count(b - a, ratio)
            if k == 0:
                continue
            s = scores[e][a:b].copy()
            if monotone:
                s[~part.kept[e][a:b]] = -np.inf
            # stable sort on -score: ties keep the lower column index
            top = np.argsort(-s, kind="stable")[:k]
            new[a + top] = True
        if monotone:
            # never resurrect a pruned column, but always keep >= 1 per non-empty node slice
            merged = new & part.kept[e]
            for a, b in part.plan.ranges[ex.space]:
                if b > a and not merged[a:b].any():
                    merged[a:b] = new[a:b]
            new = merged
        part.kept[e] = new
    part.validate()
    return part


def schedule(target: float, step: float) -> list[float]:
    """Cumulative pruning ratios step, 2*step, ... ending exactly at target."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"pruning target must be in [0, 1), not {target}")
    if step <= 0:
        raise ValueError(f"pruning step must be > 0, not {step}")
    n = math.ceil(target / step - 1e-9)
    return [min(target, step * (i + 1)) for i in range(n)]


def prune(
    model: CatsModel,
    part: Partition,
    target: float,
    step: float = 0.1,
    finetune: Callable[[CatsModel, Partition], Any] | None = None,
    importance: str = "remote",
) -> list[dict[str, Any]]:
    """Prune `part` in place to `target` in steps of `step`, calling ``finetune(model, part)``
    after each step. Returns one record per step: the scheduled ratio, the achieved
    ``part.pruning_ratio()`` and whatever the fine-tune callable returned."""
    history: list[dict[str, Any]] = []
    if part.nodes == 1:
        return history  # one node: nothing crosses the air, nothing to prune
    for r in schedule(target, step):
        prune_step(model, part, r, importance=importance)
        rec: dict[str, Any] = {"target": r, "ratio": part.pruning_ratio()}
        if finetune is not None:
            rec["finetune"] = finetune(model, part)
        history.append(rec)
    return history
