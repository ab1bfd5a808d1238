"""Message-dropout: random delivery masks that mimic lost SomeGather frames.

A delivery mask for one exchange is a bool tensor ``(B, D, D)`` with ``mask[b, s, r]`` True
when sender ``s``'s frame reached receiver ``r`` (the convention of ``CatsModel.core``). A node
always has its own columns, so the diagonal is forced to True.

Training samples masks in the three modes of the paper, all independent per exchange and per
batch element, and combined (a frame arrives only if no mode drops it):

* ``p_link``: every sender -> receiver link fails on its own (a frame missed by one node);
* ``p_receiver``: a receiver hears nothing in this exchange (it was deaf, e.g. late to the round);
* ``p_sender``: a sender is heard by nobody in this exchange (its broadcast failed).

Evaluation at a message-loss rate x uses ``loss_delivery`` with one of three loss models
(``LOSS_MODELS``):

* ``paper`` (the default): the training sampler with all three modes at x, as the paper's
  reference code scores "x % message loss" (Data-Science-in-Mechanical-Engineering/CATS,
  trainer.py: ``change_dropout_probability(x, x, x)`` before the test loop). The unit is one
  sender's whole message of one exchange (all its kept columns, all tokens); an off-diagonal
  message survives with probability (1 - x)^3 (27.1 % lost at x = 0.1), and whole receivers and
  whole senders black out together;
* ``link``: each sender -> receiver message lost independently with probability x;
* ``frame``: each SomeGather frame (a group of ``cols_per_frame`` consecutive kept columns of one
  sender, all tokens) lost independently per receiver with probability x: what the simulated
  medium's ``iid:x`` does to the C swarm (approximately: the C swarm's fragmentation also splits
  rows when a column does not fit a frame).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from cats.model.partition import Partition
from cats.wire.phy import IEEE802154

LOSS_MODELS = ("paper", "link", "frame")
FRAME_HEADER_BYTES = 20  # budget for a ColumnFrame's header and column ids (cats.artefacts.frames)


@dataclass(frozen=True)
class ColumnDelivery:
    """Column-granular delivery of one exchange: ``mask[b, c, r]`` True when column c (sent by
    its owner) reached receiver r. ``CatsModel.core`` accepts it wherever a (B, D, D) message
    matrix is accepted; the per-frame loss model produces it."""

    mask: Tensor  # (B, C, D) bool


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


def paper_dropout(p: float) -> DropoutConfig:
    """The reference implementation's message-dropout: all three modes at the same p."""
    return DropoutConfig(p_link=p, p_receiver=p, p_sender=p)


def default_cols_per_frame(tokens: int, mtu: int = IEEE802154.column_mtu) -> int:
    """Columns of all `tokens` rows that fit one ColumnFrame payload (int8 per entry)."""
    return max(1, (mtu - FRAME_HEADER_BYTES) // max(1, tokens))


def frame_delivery(
    part: Partition,
    exchanges: int | Iterable[int] | None,
    batch: int,
    loss_rate: float,
    cols_per_frame: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[int, ColumnDelivery]:
    """Per-frame loss: every sender's kept columns of an exchange are cut into frames of
    ``cols_per_frame`` consecutive columns, each lost independently at each receiver."""
    nodes, idx = _resolve(part, exchanges)
    cpf = cols_per_frame or default_cols_per_frame(part.cfg.tokens)
    out: dict[int, ColumnDelivery] = {}
    for e in idx:
        space = part.schedule[e].space
        width = part.plan.width(space)
        frame_of = torch.zeros(width, dtype=torch.long)  # global frame id of each column
        n_frames = 0
        for d in range(nodes):
            kept = part.kept_cols(e, d)
            frame_of[torch.as_tensor(kept, dtype=torch.long)] = (
                n_frames + torch.arange(len(kept)) // cpf
            )
            n_frames += -(-len(kept) // cpf)
        keep = _keep((batch, max(1, n_frames), nodes), loss_rate, generator)
        out[e] = ColumnDelivery(keep[:, frame_of, :])  # own columns are forced by the model
    return out


def loss_delivery(
    nodes: Partition | int,
    exchanges: int | Iterable[int] | None,
    batch: int,
    loss_rate: float,
    generator: torch.Generator | None = None,
    model: str = "paper",
    cols_per_frame: int | None = None,
) -> dict[int, Tensor] | dict[int, ColumnDelivery]:
    """Evaluation masks at message-loss rate ``loss_rate`` under loss model ``model`` (one of
    LOSS_MODELS, see the module docstring); a lost message or frame leaves its columns missing,
    i.e. zero, at that receiver. ``loss_rate == 0`` returns ``{}`` (lossless)."""
    if not 0.0 <= loss_rate <= 1.0:
        raise ValueError(f"loss_rate must be in [0, 1], not {loss_rate}")
    if model not in LOSS_MODELS:
        raise ValueError(f"unknown loss model {model!r}; choose from {LOSS_MODELS}")
    if loss_rate == 0:
        return {}
    if model == "frame":
        if not isinstance(nodes, Partition):
            raise ValueError("the frame loss model needs the partition (its kept columns)")
        return frame_delivery(nodes, exchanges, batch, loss_rate, cols_per_frame, generator)
    drop = paper_dropout(loss_rate) if model == "paper" else DropoutConfig(p_link=loss_rate)
    return sample_delivery(nodes, exchanges, batch, drop, generator)
