"""Message-dropout: random delivery masks that mimic lost SomeGather frames.

A delivery mask for one exchange is a bool tensor ``(B, D, D)`` with ``mask[b, s, r]`` True
when sender ``s``'s frame reached receiver ``r`` (the convention of ``CatsModel.core``). A node
always has its own columns, so the diagonal is forced to True.

Training samples masks in the three modes of the paper, all independent per exchange and per
batch element, and combined (a frame arrives only if no mode drops it):

* ``p_link``: every sender -> receiver link fails on its own (a frame missed by one node);
* ``p_receiver``: a receiver hears nothing in this exchange (it was deaf, e.g. late to the round);
* ``p_sender``: a sender is heard by nobody in this exchange (its broadcast failed).

Evaluation at a message-loss rate uses ``loss_delivery``: independent per link, which is what a
lossy broadcast medium does to a frame (each receiver decodes it or not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from cats.model.partition import Partition


@dataclass(frozen=True)
class DropoutConfig:
    """Drop probabilities of the three message-dropout modes (0 disables a mode)."""

    p_link: float = 0.0
    p_receiver: float = 0.0
    p_sender: float = 0.0

    def __post_init__(self) -> None:
        for name, p in asdict(self).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {p}")

    @property
    def active(self) -> bool:
        return self.p_link > 0 or self.p_receiver > 0 or self.p_sender > 0

    def off_diagonal_drop(self) -> float:
        """Probability that a given sender -> receiver frame (s != r) is dropped."""
        return 1.0 - (1 - self.p_link) * (1 - self.p_receiver) * (1 - self.p_sender)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DropoutConfig:
        return cls(**(d or {}))


def _resolve(
    part_or_nodes: Partition | int, exchanges: int | Iterable[int] | None
) -> tuple[int, list[int]]:
    if isinstance(part_or_nodes, Partition):
        nodes = part_or_nodes.nodes
        n_ex = part_or_nodes.cfg.exchanges
    else:
        nodes, n_ex = int(part_or_nodes), None
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, not {nodes}")
    if exchanges is None:
        if n_ex is None:
            raise ValueError("give the exchanges (a count or indices) when passing a node count")
        exchanges = n_ex
    idx = list(range(exchanges)) if isinstance(exchanges, int) else [int(e) for e in exchanges]
    return nodes, idx


def _keep(shape: tuple[int, ...], p: float, generator: torch.Generator | None) -> Tensor:
    """Bernoulli(1 - p) bool tensor; all True without drawing when p == 0."""
    if p <= 0:
        return torch.ones(shape, dtype=torch.bool)
    return torch.rand(shape, generator=generator) >= p


def sample_delivery(
    part_or_nodes: Partition | int,
    exchanges: int | Iterable[int] | None,
    batch: int,
    cfg: DropoutConfig,
    generator: torch.Generator | None = None,
) -> dict[int, Tensor]:
    """Training masks: ``{exchange: bool (batch, D, D)}`` with the three modes combined.

    ``exchanges`` is a count (0..n-1), explicit indices, or None for every exchange of the
    partition. Inactive dropout (or D = 1) returns ``{}``, which the model treats as lossless.
    """
    nodes, idx = _resolve(part_or_nodes, exchanges)
    if nodes == 1 or not cfg.active:
        return {}
    n_e = len(idx)
    keep = _keep((n_e, batch, nodes, nodes), cfg.p_link, generator)
    keep &= _keep((n_e, batch, 1, nodes), cfg.p_receiver, generator)  # receiver r hears nothing
    keep &= _keep((n_e, batch, nodes, 1), cfg.p_sender, generator)  # sender s heard by nobody
    keep |= torch.eye(nodes, dtype=torch.bool)
    return {e: keep[i] for i, e in enumerate(idx)}


def loss_delivery(
    nodes: Partition | int,
    exchanges: int | Iterable[int] | None,
    batch: int,
    loss_rate: float,
    generator: torch.Generator | None = None,
) -> dict[int, Tensor]:
    """Evaluation masks at a message-loss rate: each sender -> receiver frame of each exchange
    is lost independently with probability ``loss_rate`` (its columns are then missing, i.e.
    zero, at that receiver). ``loss_rate == 0`` returns ``{}`` (lossless)."""
    if not 0.0 <= loss_rate <= 1.0:
        raise ValueError(f"loss_rate must be in [0, 1], not {loss_rate}")
    if loss_rate == 0:
        return {}
    return sample_delivery(nodes, exchanges, batch, DropoutConfig(p_link=loss_rate), generator)
