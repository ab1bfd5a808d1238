"""SomeGather pruning: ranking by remote weight rows, per-node budgets, stepwise schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cats.model.config import preset
from cats.model.partition import Partition
from cats.model.prune import keep_count, prune, prune_step, rank_columns, schedule
from cats.model.transformer import CatsModel


def _model(seed: int = 0) -> CatsModel:
    torch.manual_seed(seed)
    return CatsModel(preset("test"))


def test_scores_cover_every_exchange() -> None:
    m = _model()
    part = Partition.full(m.cfg, 4)
    scores = rank_columns(m, part)
    assert [s.shape for s in scores] == [k.shape for k in part.kept]
    assert all((s > 0).all() for s in scores)


def test_score_counts_only_remote_rows() -> None:
    """Zeroing the rows a column's *own* node consumes changes nothing; zeroing the remote
    rows drives its score to 0."""
    m = _model()
    part = Partition.full(m.cfg, 4)
    a, b = part.plan.ranges["model"][0]
    before = rank_columns(m, part)[0][a]
    with torch.no_grad():
        for lin in (m.blocks[0].wq, m.blocks[0].wk, m.blocks[0].wv):
            lin.weight[a, a:b] = 0  # node 0's own heads
    assert rank_columns(m, part)[0][a] == pytest.approx(before)
    with torch.no_grad():
        for lin in (m.blocks[0].wq, m.blocks[0].wk, m.blocks[0].wv):
            lin.weight[a, b:] = 0
    assert rank_columns(m, part)[0][a] == 0


@pytest.mark.parametrize("nodes", [2, 4, 5, 16])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_prune_step_budget_and_top_ranked(nodes: int, ratio: float) -> None:
    m = _model()
    part = Partition.full(m.cfg, nodes)
    scores = rank_columns(m, part)
    prune_step(m, part, ratio)
    part.validate()
    for e, ex in enumerate(part.schedule):
        for a, b in part.plan.ranges[ex.space]:
            kept = part.kept[e][a:b]
            assert kept.sum() == keep_count(b - a, ratio) >= 1
            s = scores[e][a:b]
            if (~kept).any():  # every kept column outranks every pruned one
                assert s[kept].min() >= s[~kept].max()
    # the achieved ratio is the target up to per-node rounding (ceil, >= 1 kept)
    kept = sum(
        keep_count(b - a, ratio) for ex in part.schedule for a, b in part.plan.ranges[ex.space]
    )
    assert part.pruning_ratio() == pytest.approx(1 - kept / sum(k.size for k in part.kept))
    assert part.pruning_ratio() <= ratio + 1e-9


def test_ratio_reached_when_slices_divide() -> None:
    m = _model()
    part = Partition.full(m.cfg, 4)  # 8 model columns and 6 hidden units per node
    prune_step(m, part, 0.5)
    assert part.pruning_ratio() == pytest.approx(0.5)


def test_column_with_zero_remote_rows_is_pruned_first() -> None:
    m = _model()
    part = Partition.full(m.cfg, 4)
    e = 4 * 1 + 3  # block 1, ffn_hidden: hidden unit -> w2 rows
    a, b = part.plan.ranges["hidden"][2]
    victim = a + 3
    with torch.no_grad():
        m.blocks[1].w2.weight[victim] = 0
    prune_step(m, part, 1 / (b - a))  # drop exactly one column per node
    assert not part.kept[e][victim]
    assert part.kept[e][a:b].sum() == b - a - 1


def test_stepwise_schedule_calls_finetune_and_is_monotone() -> None:
    m = _model()
    part = Partition.full(m.cfg, 4)
    seen: list[np.ndarray] = []

    def finetune(model: CatsModel, p: Partition) -> float:
        seen.append(np.concatenate(p.kept).copy())
        with torch.no_grad():  # perturb the weights so the ranking changes between steps
            for prm in model.parameters():
                prm.add_(0.3 * torch.randn_like(prm))
        return p.pruning_ratio()

    hist = prune(m, part, 0.5, 0.1, finetune)
    assert schedule(0.5, 0.1) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [h["target"] for h in hist] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert len(seen) == 5 and hist[-1]["finetune"] == part.pruning_ratio()
    for prev, cur in zip(seen, seen[1:], strict=False):
        assert not (cur & ~prev).any()  # a pruned column never comes back
    assert part.pruning_ratio() == pytest.approx(0.5, abs=0.05)


def test_single_node_has_nothing_to_prune() -> None:
    m = _model()
    part = Partition.full(m.cfg, 1)
    assert prune(m, part, 0.5) == []
    assert all(k.all() for k in part.kept) and part.pruning_ratio() == 0.0


def test_pruned_model_still_runs_partitioned() -> None:
    m = _model().eval()
    part = Partition.full(m.cfg, 4)
    prune_step(m, part, 0.75)
    x = torch.randn(2, m.cfg.context).cumsum(1)
    with torch.no_grad():
        full = m(x)
        pruned = m(x, part)
    assert pruned.shape == full.shape and torch.isfinite(pruned).all()
    assert not torch.allclose(full, pruned)
