"""Float reference of the swarm, node by node.

Each node keeps only its own slices and, for every exchange, builds its receive buffer from the
columns other nodes broadcast. This is written independently of the vectorised partitioned path
in ``cats.model.transformer`` so the two check each other; ``cats.quant.qref`` follows the same
structure in integers. Numpy, any float dtype.
"""

from __future__ import annotations

import math

import numpy as np

from cats.model.partition import Partition, block_exchange, head_exchange
from cats.model.transformer import CatsModel


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


class Air:
    """Delivers each node's kept columns of one exchange to the nodes that hear it."""

    def __init__(self, part: Partition, delivery: dict[int, np.ndarray] | None) -> None:
        self.part = part
        self.delivery = delivery or {}

    def exchange(self, e: int, own: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """own[d]: node d's own columns (B, rows, w_d). Returns per receiver the held column ids
        and the matching values (B, rows, len(held))."""
        part = self.part
        space = part.schedule[e].space
        dm = self.delivery.get(e)
        out = []
        for r in range(part.nodes):
            cols, vals = [], []
            for s in range(part.nodes):
                a, _ = part.plan.ranges[space][s]
                if s == r:
                    sel = part.plan.cols(space, s)
                elif dm is None or dm[s, r]:
                    sel = part.kept_cols(e, s)
                else:
                    continue
                cols.append(sel)
                vals.append(own[s][..., sel - a])
            out.append((np.concatenate(cols), np.concatenate(vals, axis=-1)))
        return out


def _partial_ln(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def simulate(
    model: CatsModel,
    part: Partition,
    patches: np.ndarray,
    delivery: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Run the D-node swarm on normalised patches (B, N, input_width); same output as
    ``model.core``. delivery[e][s, r] False drops sender s's frame at receiver r in exchange e."""
    cfg = model.cfg
    plan = part.plan
    nodes = range(part.nodes)
    air = Air(part, delivery)
    act = _gelu if cfg.activation == "gelu" else (lambda t: np.maximum(t, 0.0))
    eps = cfg.ln_eps
    x_in = np.asarray(patches, dtype=np.float64)

    def cols(space: str, d: int) -> np.ndarray:
        return plan.cols(space, d)

    def lin(held: np.ndarray, v: np.ndarray, layer, out_cols: np.ndarray) -> np.ndarray:
        # only the weight rows a node stores: its held inputs x its own outputs
        return v @ _np(layer.weight)[np.ix_(held, out_cols)] + _np(layer.bias)[out_cols]

    def ln(held: np.ndarray, v: np.ndarray, norm) -> np.ndarray:
        return _partial_ln(v, _np(norm.weight)[held], _np(norm.bias)[held], eps)

    pos = _np(model.pos)
    if cfg.io == "paper":
        # input block: node d owns input columns cols("input", d) of every token
        recv_in = air.exchange(0, [x_in[..., cols("input", d)] for d in nodes])
        hid = [act(lin(*recv_in[d], model.in1, cols("in_hidden", d))) for d in nodes]
        recv = air.exchange(1, hid)
        x = [
            lin(*recv[d], model.in2, cols("model", d))
            + lin(*recv_in[d], model.inr, cols("model", d))
            + pos[:, cols("model", d)]
            for d in nodes
        ]
    else:
        emb_w, emb_b = _np(model.embed.weight), _np(model.embed.bias)
        x = [
            x_in @ emb_w[:, cols("model", d)] + emb_b[cols("model", d)] + pos[:, cols("model", d)]
            for d in nodes
        ]
    n_tok = x_in.shape[1]
    causal = np.tril(np.ones((n_tok, n_tok), dtype=bool))
    for b, blk in enumerate(model.blocks):
        e0 = block_exchange(cfg, b, 0)
        recv = air.exchange(e0, x)
        att = []
        for d in nodes:
            held, v = recv[d]
            h = ln(held, v, blk.ln1)
            own = cols("model", d)
            q, k, val = (lin(held, h, w, own) for w in (blk.wq, blk.wk, blk.wv))
            att.append(
                _local_attention(
                    q, k, val, cfg.head_dim, causal if cfg.task == "forecast" else None
                )
            )
        recv = air.exchange(e0 + 1, att)
        x = [x[d] + lin(*recv[d], blk.wo, cols("model", d)) for d in nodes]
        recv = air.exchange(e0 + 2, x)
        hid = [
            act(lin(recv[d][0], ln(*recv[d], blk.ln2), blk.w1, cols("hidden", d))) for d in nodes
        ]
        recv = air.exchange(e0 + 3, hid)
        x = [x[d] + lin(*recv[d], blk.w2, cols("model", d)) for d in nodes]
    if cfg.task == "classify":
        x = [xd.mean(axis=1, keepdims=True) for xd in x]
    recv = air.exchange(head_exchange(cfg), x)
    if cfg.io == "paper":
        # output block: LN -> MLP on the held columns, plus a linear residual on them un-normalised
        hid = [
            act(lin(recv[d][0], ln(*recv[d], model.lnf), model.head1, cols("head_hidden", d)))
            for d in nodes
        ]
        recv_h = air.exchange(head_exchange(cfg) + 1, hid)
        y = np.concatenate(
            [
                lin(*recv_h[d], model.head, cols("output", d))
                + lin(*recv[d], model.headr, cols("output", d))
                for d in nodes
            ],
            axis=-1,
        )
    else:
        y = np.concatenate(
            [
                lin(recv[d][0], ln(*recv[d], model.lnf), model.head, cols("output", d))
                for d in nodes
            ],
            axis=-1,
        )
    return y[:, 0] if cfg.task == "classify" else y


def _local_attention(q, k, v, head_dim: int, causal: np.ndarray | None) -> np.ndarray:
    b, n, w = q.shape
    split = (b, n, w // head_dim, head_dim)
    q, k, v = (t.reshape(split).transpose(0, 2, 1, 3) for t in (q, k, v))
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    if causal is not None:
        logits = np.where(causal, logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, n, w)
