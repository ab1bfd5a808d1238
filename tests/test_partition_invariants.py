"""DESIGN.md invariants: the D-node partitioned model computes what the monolithic one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cats.model.config import preset
from cats.model.partition import Partition
from cats.model.swarm_float import simulate
from cats.model.transformer import CatsModel


def _model(task: str = "forecast", seed: int = 0) -> CatsModel:
    torch.manual_seed(seed)
    m = CatsModel(preset("test", task=task)).double().eval()
    # break the symmetric init so LayerNorm gains/biases matter
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _patches(m: CatsModel, batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, m.cfg.context, generator=g, dtype=torch.float64).cumsum(1)
    return m.normalise(x)[0]


@pytest.mark.parametrize("task", ["forecast", "classify"])
@pytest.mark.parametrize("nodes", [1, 2, 4, 8, 16])
def test_partitioned_equals_monolithic(task: str, nodes: int) -> None:
    m = _model(task)
    p = _patches(m)
    part = Partition.full(m.cfg, nodes)
    with torch.no_grad():
        mono = m.core(p).numpy()
        vec = m.core(p, part).numpy()
    swarm = simulate(m, part, p.numpy())
    assert np.abs(swarm - mono).max() <= 1e-5
    assert np.abs(vec - mono).max() <= 1e-5


@pytest.mark.parametrize("nodes", [3, 5])
def test_uneven_splits(nodes: int) -> None:
    m = _model()
    p = _patches(m)
    part = Partition.full(m.cfg, nodes)
    sizes = [b - a for a, b in part.plan.ranges["model"]]
    assert sum(sizes) == m.cfg.features and max(sizes) - min(sizes) <= m.cfg.head_dim
    with torch.no_grad():
        mono = m.core(p).numpy()
    assert np.abs(simulate(m, part, p.numpy()) - mono).max() <= 1e-5


def _random_partition(m: CatsModel, nodes: int, rng: np.random.Generator) -> Partition:
    part = Partition.full(m.cfg, nodes)
    for e, ex in enumerate(part.schedule):
        for d in range(nodes):
            a, b = part.plan.ranges[ex.space][d]
            keep = rng.random(b - a) < 0.6
            keep[rng.integers(b - a)] = True  # at least one column kept
            part.kept[e][a:b] = keep
    part.validate()
    return part


@pytest.mark.parametrize("task", ["forecast", "classify"])
@pytest.mark.parametrize("nodes", [2, 4, 16])
def test_lost_and_pruned_columns_match_zeroed_reference(task: str, nodes: int) -> None:
    """Any delivery mask and kept sets: node-by-node swarm == vectorised masked reference."""
    m = _model(task)
    p = _patches(m, batch=2)
    rng = np.random.default_rng(nodes)
    part = _random_partition(m, nodes, rng)
    delivery = {}
    for e in range(m.cfg.exchanges):
        dm = rng.random((nodes, nodes)) > 0.3
        np.fill_diagonal(dm, True)
        delivery[e] = dm
    torch_delivery = {e: torch.as_tensor(dm)[None] for e, dm in delivery.items()}
    with torch.no_grad():
        vec = m.core(p, part, torch_delivery).numpy()
        clean = m.core(p).numpy()
    swarm = simulate(m, part, p.numpy(), delivery)
    assert np.abs(swarm - vec).max() <= 1e-5
    assert np.abs(vec - clean).max() > 1e-3  # the losses really changed the output


def test_zeroed_columns_are_what_the_receiver_sees() -> None:
    """A lost column is exactly a zero in the receiver's view and is left out of its LN stats."""
    m = _model()
    part = Partition.full(m.cfg, 4)
    dm = np.ones((4, 4), dtype=bool)
    dm[2, 0] = False  # node 0 misses node 2's frame of exchange 0
    avail = part.availability(0, dm)
    lost = np.flatnonzero(~avail[0])
    assert list(lost) == list(part.plan.cols("model", 2))
    assert avail[1:].all()


def test_partition_rejects_bad_inputs() -> None:
    m = _model()
    with pytest.raises(ValueError, match="nodes must be in"):
        Partition.full(m.cfg, 17)
    part = Partition.full(m.cfg, 2)
    part.kept[0][: m.cfg.features // 2] = False
    with pytest.raises(ValueError, match="keeps no column"):
        part.validate()
    other = Partition.full(preset("test", blocks=1), 2)
    with pytest.raises(ValueError, match="different model configuration"):
        m.core(_patches(m), other)
