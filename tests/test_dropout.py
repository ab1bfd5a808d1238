"""Message-dropout masks: the three modes of the paper, and evaluation-time message loss."""

from __future__ import annotations

import pytest
import torch

from cats.model.config import preset
from cats.model.dropout import (
    LOSS_MODELS,
    ColumnDelivery,
    DropoutConfig,
    default_cols_per_frame,
    loss_delivery,
    paper_dropout,
    sample_delivery,
)
from cats.model.partition import Partition
from cats.model.transformer import CatsModel

D = 6


def _stack(masks: dict[int, torch.Tensor]) -> torch.Tensor:
    return torch.stack([masks[e] for e in sorted(masks)])  # (E, B, D, D)


def _offdiag(m: torch.Tensor) -> torch.Tensor:
    return m[..., ~torch.eye(D, dtype=torch.bool)]


def test_shapes_keys_and_diagonal() -> None:
    part = Partition.full(preset("test"), 4)
    masks = sample_delivery(part, None, 5, DropoutConfig(0.5, 0.5, 0.5), torch.Generator())
    assert sorted(masks) == list(range(part.cfg.exchanges))
    for m in masks.values():
        assert m.shape == (5, 4, 4) and m.dtype == torch.bool
        assert m.diagonal(dim1=1, dim2=2).all()
    assert sorted(sample_delivery(4, [2, 7], 1, DropoutConfig(0.3), None)) == [2, 7]


def test_inactive_or_single_node_is_lossless() -> None:
    assert sample_delivery(D, 3, 4, DropoutConfig(), None) == {}
    assert sample_delivery(1, 3, 4, DropoutConfig(0.9), None) == {}
    assert loss_delivery(D, 3, 4, 0.0) == {}
    with pytest.raises(ValueError):
        DropoutConfig(p_link=1.5)
    with pytest.raises(ValueError):
        sample_delivery(D, None, 4, DropoutConfig(0.1), None)  # a count needs exchanges


@pytest.mark.parametrize(
    "cfg", [DropoutConfig(0.2), DropoutConfig(0.1, 0.05, 0.08), DropoutConfig(0, 0.3, 0)]
)
def test_empirical_drop_rate(cfg: DropoutConfig) -> None:
    g = torch.Generator().manual_seed(0)
    m = _stack(sample_delivery(D, 20, 500, cfg, g))
    rate = 1 - _offdiag(m).float().mean().item()
    assert rate == pytest.approx(cfg.off_diagonal_drop(), abs=0.01)


def test_receiver_mode_drops_whole_rows_of_receivers() -> None:
    """p_receiver: a receiver hears nobody -> its whole column r (all senders s != r) is off."""
    g = torch.Generator().manual_seed(1)
    m = _stack(sample_delivery(D, 10, 400, DropoutConfig(p_receiver=0.25), g))  # [E, B, s, r]
    per_recv = torch.stack(
        [torch.cat([m[..., :r, r], m[..., r + 1 :, r]], dim=-1) for r in range(D)], dim=-1
    )  # [E, B, D-1 senders, D receivers]
    all_or_none = per_recv.all(dim=2) | (~per_recv).all(dim=2)
    assert all_or_none.all()
    assert (~per_recv.any(dim=2)).float().mean().item() == pytest.approx(0.25, abs=0.02)


def test_sender_mode_drops_whole_rows_of_senders() -> None:
    """p_sender: a sender is heard by nobody -> its row s (all receivers r != s) is off."""
    g = torch.Generator().manual_seed(2)
    m = _stack(sample_delivery(D, 10, 400, DropoutConfig(p_sender=0.15), g))
    per_send = torch.stack(
        [torch.cat([m[..., s, :s], m[..., s, s + 1 :]], dim=-1) for s in range(D)], dim=-2
    )  # [E, B, D senders, D-1 receivers]
    assert (per_send.all(dim=-1) | (~per_send).all(dim=-1)).all()
    assert (~per_send.any(dim=-1)).float().mean().item() == pytest.approx(0.15, abs=0.02)


def test_independent_per_exchange_and_batch() -> None:
    g = torch.Generator().manual_seed(3)
    m = _stack(sample_delivery(D, 4, 64, DropoutConfig(0.5), g))
    assert not torch.equal(m[0], m[1])
    assert not torch.equal(m[:, 0], m[:, 1])


def test_loss_delivery_rate_and_reproducibility() -> None:
    gen = torch.Generator
    a = _stack(loss_delivery(D, 25, 300, 0.1, gen().manual_seed(7), "link"))
    b = _stack(loss_delivery(D, 25, 300, 0.1, gen().manual_seed(7), "link"))
    assert torch.equal(a, b)
    assert a.diagonal(dim1=-2, dim2=-1).all()
    assert 1 - _offdiag(a).float().mean().item() == pytest.approx(0.1, abs=0.01)
    full = _stack(loss_delivery(D, 2, 3, 1.0))
    assert torch.equal(full, torch.eye(D, dtype=torch.bool).expand_as(full))


def test_paper_loss_model_is_the_three_mode_sampler_at_x() -> None:
    """The default loss model: every message survives (1-x)^3 (27.1 % lost at x = 0.1), the
    diagonal is forced, and whole receivers / whole senders black out together."""
    x = 0.1
    m = _stack(loss_delivery(D, 40, 500, x, torch.Generator().manual_seed(11)))  # paper
    assert m.diagonal(dim1=-2, dim2=-1).all()
    lost = 1 - _offdiag(m).float().mean().item()
    assert lost == pytest.approx(1 - (1 - x) ** 3, abs=0.01)
    assert lost > 0.25  # not the per-link 10 %
    # a receiver that hears nobody (all D-1 remote messages lost) happens at least as often as
    # the receiver mode (x); per-link alone would make it x^(D-1), about 1e-5
    deaf = (~m & ~torch.eye(D, dtype=torch.bool)).sum(-2) == D - 1  # (E, B, r)
    assert deaf.float().mean().item() == pytest.approx(x, abs=0.02)
    mute = (~m & ~torch.eye(D, dtype=torch.bool)).sum(-1) == D - 1  # (E, B, s)
    assert mute.float().mean().item() == pytest.approx(x, abs=0.02)
    assert paper_dropout(x) == DropoutConfig(x, x, x)
    assert paper_dropout(x).off_diagonal_drop() == pytest.approx(1 - 0.9**3)


def test_message_unit_is_a_whole_sender_exchange() -> None:
    """A lost message removes every kept column of that sender, for every token, at that
    receiver, and nothing else; per-frame loss removes groups of columns instead."""
    cfg = preset("test")
    part = Partition.full(cfg, 4)
    model = CatsModel(cfg).eval()
    dm = torch.ones(1, 4, 4, dtype=torch.bool)
    dm[0, 2, 0] = False  # sender 2 -> receiver 0 lost
    x = torch.randn(1, cfg.tokens, cfg.features)
    from cats.model.transformer import Exchanges

    view, avail = Exchanges(part, {0: dm}, x.device).view(0, x)
    a, b = part.plan.ranges["model"][2]
    missing = avail[0, 0, 0] == 0
    assert missing.nonzero().flatten().tolist() == list(range(a, b))
    assert (view[0, 0][:, a:b] == 0).all() and (avail[0, 1:] == 1).all()
    # per-frame: columns lost in frames of cols_per_frame, receiver by receiver
    fr = loss_delivery(part, [0], 200, 0.5, torch.Generator().manual_seed(1), "frame", 2)
    assert isinstance(fr[0], ColumnDelivery) and fr[0].mask.shape == (200, cfg.features, 4)
    mk = fr[0].mask
    assert torch.equal(mk[:, 0::2], mk[:, 1::2])  # pairs of columns share one frame
    assert not torch.equal(mk[:, 0], mk[:, 2])
    assert mk.float().mean().item() == pytest.approx(0.5, abs=0.03)
    with torch.no_grad():
        patches = torch.randn(200, cfg.tokens, cfg.patch)
        assert model.core(patches, part, fr).shape == (200, cfg.tokens, cfg.horizon)
    assert default_cols_per_frame(32) >= 1 and set(LOSS_MODELS) == {"paper", "link", "frame"}
