"""The CATS transformer in torch: one module, two ways to run it.

* ``model(x)`` runs the ordinary monolithic network (standard LayerNorm, plain matmuls).
* ``model(x, part, delivery)`` runs the D-node partitioned semantics of DESIGN.md, vectorised:
  every exchange gives each node a *view* of the activation with the columns it does not hold
  zeroed, LayerNorm is partial over the held columns, and each node computes only its own output
  columns from its own view. Message-dropout training samples ``delivery``.

With every column held, the partitioned path equals the monolithic one; ``cats.model.swarm_float``
re-derives the same result node by node as an independent check.

Quantisation-aware training: ``model.set_quant(True)`` fake-quantises weights (per output
channel) and activations (per tensor, running abs-max observers) at exactly the points where
``cats.quant.qref`` holds int8 tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cats.model.config import ModelConfig
from cats.model.partition import Partition, block_exchange, head_exchange

QMAX = 127
LOGIT_STEP = 1.0 / 16.0  # attention logits are fixed point in 1/16 nat (see qref.softmax)
PROB_SCALE = 1.0 / 128.0  # attention probabilities are int8 0..127 in 1/128


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant(x: Tensor, scale: Tensor | float) -> Tensor:
    """Symmetric int8 fake quantisation with a straight-through gradient."""
    return torch.clamp(_ste_round(x / scale), -QMAX, QMAX) * scale


class ActQuant(nn.Module):
    """Observer + fake quantiser for one int8 activation tensor (per-tensor scale)."""

    def __init__(self, momentum: float = 0.05) -> None:
        super().__init__()
        self.momentum = momentum
        self.enabled = False
        self.calibrating = False  # observe in eval mode too (post-training calibration)
        self.register_buffer("amax", torch.zeros(()))

    def observe(self, x: Tensor) -> None:
        m = x.detach().abs().max()
        if self.amax == 0:
            self.amax.copy_(m)
        else:
            self.amax.mul_(1 - self.momentum).add_(self.momentum * m)

    @property
    def scale(self) -> float:
        return max(float(self.amax), 1e-8) / QMAX

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.calibrating:
            self.observe(x)
        if not self.enabled:
            return x
        return fake_quant(x, max(self.amax, torch.tensor(1e-8)) / QMAX)


class Lin(nn.Module):
    """y = x @ W + b with W stored (in, out): row c of W is what consumes input column c."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.quant = False

    def w(self) -> Tensor:
        if not self.quant:
            return self.weight
        scale = self.weight.detach().abs().amax(dim=0).clamp_min(1e-8) / QMAX  # per out channel
        return fake_quant(self.weight, scale)


class LayerNorm(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.eps = eps


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        f = cfg.features
        self.ln1, self.ln2 = LayerNorm(f, cfg.ln_eps), LayerNorm(f, cfg.ln_eps)
        self.wq, self.wk, self.wv, self.wo = Lin(f, f), Lin(f, f), Lin(f, f), Lin(f, f)
        self.w1, self.w2 = Lin(f, cfg.ffn), Lin(cfg.ffn, f)
        names = ("ln1", "q", "k", "v", "att", "o", "x1", "ln2", "hpre", "h", "f", "x2")
        self.aq = nn.ModuleDict({n: ActQuant() for n in names})


class Exchanges:
    """How activations cross node boundaries during one forward pass.

    ``part is None``: monolithic (one node holds everything). Otherwise views have shape
    (B, D, N, C) and ``avail`` is (B or 1, D, 1, C) float: 1 where the node holds the column."""

    def __init__(self, part: Partition | None, delivery: dict[int, Tensor] | None, device) -> None:
        self.part = part
        self.delivery = delivery or {}
        self.device = device
        self._gather: dict[str, tuple[Tensor, Tensor]] = {}
        self._spaces = [ex.space for ex in part.schedule] if part is not None else []
        self._owners: dict[str, tuple[Tensor, Tensor]] = {}  # space -> (owner, own mask)

    @property
    def mono(self) -> bool:
        return self.part is None

    def view(self, e: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Each node's copy of activation x (B, N, C) after exchange e."""
        if self.part is None:
            return x, None
        part = self.part
        space = self._spaces[e]
        if space not in self._owners:
            self._owners[space] = (
                torch.as_tensor(part.plan.owner(space), device=self.device),
                torch.as_tensor(part.plan.own_mask(space), device=self.device),  # (D, C)
            )
        owner, own = self._owners[space]
        kept = torch.as_tensor(part.kept[e], device=self.device)  # (C,)
        recv = kept[None, None, :].expand(1, part.nodes, -1)  # (1, D, C)
        dm = self.delivery.get(e)
        if dm is not None and hasattr(dm, "mask"):  # ColumnDelivery: mask[b, c, r]
            recv = recv & dm.mask.to(self.device).transpose(1, 2).bool()
        elif dm is not None:  # dm[b, s, r]: sender s reached receiver r
            recv = recv & dm.to(self.device)[:, owner, :].transpose(1, 2).bool()
        avail = (own[None] | recv).to(x.dtype).unsqueeze(2)  # (B|1, D, 1, C)
        return x.unsqueeze(1) * avail, avail

    def _index(self, space: str) -> tuple[Tensor, Tensor]:
        """Padded (D, maxw) column index of each node's slice of `space`, and flat positions of
        the valid entries (which enumerate 0..width-1 in order, slices being contiguous)."""
        if space not in self._gather:
            ranges = self.part.plan.ranges[space]
            maxw = max(b - a for a, b in ranges)
            idx = torch.zeros(len(ranges), maxw, dtype=torch.long)
            valid = torch.zeros(len(ranges), maxw, dtype=torch.bool)
            for d, (a, b) in enumerate(ranges):
                idx[d, : b - a] = torch.arange(a, b)
                valid[d, : b - a] = True
            self._gather[space] = (idx.to(self.device), valid.flatten().nonzero().squeeze(1))
        return self._gather[space]

    def linear(self, v: Tensor, lin: Lin, out_space: str) -> Tensor:
        """Node d computes only its own output columns of `out_space`, from its own view."""
        w = lin.w()
        if self.part is None:
            return v @ w + lin.bias
        idx, pos = self._index(out_space)
        wg = w[:, idx].permute(1, 0, 2)  # (D, Cin, maxw)
        y = torch.einsum("bdnc,dco->bdno", v, wg) + lin.bias[idx][None, :, None, :]
        b, d, n, o = y.shape
        return y.permute(0, 2, 1, 3).reshape(b, n, d * o)[..., pos]

    def layer_norm(self, v: Tensor, avail: Tensor | None, ln: LayerNorm) -> Tensor:
        """Partial LayerNorm: statistics over the held columns only; unheld outputs are zero."""
        if avail is None:
            return F.layer_norm(v, v.shape[-1:], ln.weight, ln.bias, ln.eps)
        n = avail.sum(-1, keepdim=True)
        mean = (v * avail).sum(-1, keepdim=True) / n
        var = ((v - mean) ** 2 * avail).sum(-1, keepdim=True) / n
        return ((v - mean) * torch.rsqrt(var + ln.eps) * ln.weight + ln.bias) * avail


class CatsModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.features
        if cfg.io == "paper":
            # input block: x0 = W_in2(act(W_in1 u)) + W_inr u on u = (patch, padding flags)
            self.in1 = Lin(cfg.input_width, cfg.io_hidden)
            self.in2 = Lin(cfg.io_hidden, f)
            self.inr = Lin(cfg.input_width, f)
        else:
            self.embed = Lin(cfg.patch, f)
        self.pos = nn.Parameter(torch.randn(cfg.tokens, f) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.lnf = LayerNorm(f, cfg.ln_eps)
        if cfg.io == "paper":
            # output block: y = W_h2(act(W_h1 LN(x))) + W_hr x
            self.head1 = Lin(f, cfg.io_hidden)
            self.head = Lin(cfg.io_hidden, cfg.outputs)
            self.headr = Lin(f, cfg.outputs)
        else:
            self.head = Lin(f, cfg.outputs)
        names = ("inp", "x0", "pool", "lnf", "y")
        if cfg.io == "paper":
            names += ("in_h", "head_h")
        self.aq = nn.ModuleDict({n: ActQuant() for n in names})
        causal = torch.ones(cfg.tokens, cfg.tokens, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)

    # -- quantisation -----------------------------------------------------------------------
    def set_quant(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, ActQuant):
                m.enabled = enabled
            elif isinstance(m, Lin):
                m.quant = enabled

    def set_calibrating(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, ActQuant):
                m.calibrating = enabled

    def act_quants(self) -> dict[str, ActQuant]:
        """Every activation quantiser by dotted name (``aq.x0``, ``blocks.0.aq.q``, ...)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, ActQuant)}

    @property
    def quant(self) -> bool:
        return self.head.quant

    # -- input / output normalisation (done by the gateway, in float) ---------------------------
    def normalise(self, x: Tensor, pad: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reversible instance normalisation: (B, context) -> patches (B, N, input_width), mean,
        std. An image (``cfg.image_width``) is standardised per image and cut into square
        patches (``ModelConfig.patch_order``). With paper blocks each token is (patch, padding
        flags): ``pad`` (B, context), 1 where a sample is padding (TimesFM-style: zeroed after
        normalisation, flagged), default none padded."""
        cfg = self.cfg
        if x.ndim != 2 or x.shape[1] != cfg.context:
            raise ValueError(f"input must be (batch, {cfg.context}), got {tuple(x.shape)}")
        mu = x.mean(dim=1, keepdim=True)
        sd = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
        z = (x - mu) / sd
        if cfg.image_width:
            if pad is not None or cfg.io == "paper":
                raise ValueError("images take the lean input block, without padding flags")
            return z[:, torch.from_numpy(cfg.patch_order())], mu, sd
        if cfg.io != "paper":
            if pad is not None:
                raise ValueError("padding flags need the paper input block (io='paper')")
            return z.reshape(x.shape[0], cfg.tokens, cfg.patch), mu, sd
        flags = torch.zeros_like(z) if pad is None else pad.to(z.dtype)
        z = z * (1 - flags)
        split = (x.shape[0], cfg.tokens, cfg.patch)
        return torch.cat([z.reshape(split), flags.reshape(split)], dim=-1), mu, sd

    # -- the network ----------------------------------------------------------------------------
    def core(
        self,
        patches: Tensor,
        part: Partition | None = None,
        delivery: dict[int, Tensor] | None = None,
    ) -> Tensor:
        """Normalised patches (B, N, input_width) -> head output, (B, N, outputs) for
        forecasting (every token predicts the horizon after its patch) or (B, outputs) for
        classification."""
        cfg = self.cfg
        if part is not None and part.cfg != cfg:
            raise ValueError("partition was made for a different model configuration")
        ex = Exchanges(part, delivery, patches.device)
        aq = self.aq
        if cfg.io == "paper":
            # input block: exchange in_x (the nodes' input columns), in_hidden (MLP hidden units)
            v, _ = ex.view(0, aq["inp"](patches))
            h = aq["in_h"](self._act(ex.linear(v, self.in1, "in_hidden")))
            vh, _ = ex.view(1, h)
            x0 = self._drop(ex.linear(vh, self.in2, "model")) + ex.linear(v, self.inr, "model")
            x = aq["x0"](x0 + self.pos)
        else:
            x = aq["x0"](ex_linear_local(aq["inp"](patches), self.embed) + self.pos)
        for b, blk in enumerate(self.blocks):
            q_ = blk.aq
            e = block_exchange(cfg, b, 0)
            # exchange 1: block input -> LN1 -> Q, K, V of the node's own heads
            v, avail = ex.view(e, x)
            h = q_["ln1"](ex.layer_norm(v, avail, blk.ln1))
            q = q_["q"](ex.linear(h, blk.wq, "model"))
            k = q_["k"](ex.linear(h, blk.wk, "model"))
            val = q_["v"](ex.linear(h, blk.wv, "model"))
            att = q_["att"](self._attention(q, k, val))
            # exchange 2: head outputs -> output projection of the node's own columns
            v, _ = ex.view(e + 1, att)
            x = q_["x1"](x + self._drop(q_["o"](ex.linear(v, blk.wo, "model"))))
            # exchange 3: residual -> LN2 -> FFN layer 1 (node's own hidden units)
            v, avail = ex.view(e + 2, x)
            h = q_["ln2"](ex.layer_norm(v, avail, blk.ln2))
            h = q_["h"](self._act(q_["hpre"](ex.linear(h, blk.w1, "hidden"))))
            # exchange 4: hidden units -> FFN layer 2 (node's own output columns)
            v, _ = ex.view(e + 3, h)
            x = q_["x2"](x + self._drop(q_["f"](ex.linear(v, blk.w2, "model"))))
        if cfg.task == "classify":
            x = aq["pool"](x.mean(dim=1, keepdim=True))  # local: each node pools its own columns
        e = head_exchange(cfg)
        v, avail = ex.view(e, x)
        hn = aq["lnf"](ex.layer_norm(v, avail, self.lnf))
        if cfg.io == "paper":
            # output block: exchange head_in (residual stream), head_hidden (MLP hidden units)
            h = aq["head_h"](self._act(ex.linear(hn, self.head1, "head_hidden")))
            vh, _ = ex.view(e + 1, h)
            y = aq["y"](ex.linear(vh, self.head, "output") + ex.linear(v, self.headr, "output"))
        else:
            y = aq["y"](ex.linear(hn, self.head, "output"))
        return y[:, 0] if cfg.task == "classify" else y

    def _drop(self, x: Tensor) -> Tensor:
        """Standard dropout (training only; identity at cfg.dropout == 0 and in eval mode)."""
        return F.dropout(x, self.cfg.dropout, self.training) if self.cfg.dropout > 0 else x

    def _act(self, x: Tensor) -> Tensor:
        return F.gelu(x) if self.cfg.activation == "gelu" else F.relu(x)

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Per-head attention; heads never straddle nodes, so this is local to each node."""
        cfg = self.cfg
        b, n, f = q.shape
        split = (b, n, cfg.heads, cfg.head_dim)
        q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)
        if self.quant:
            logits = _ste_round(logits / LOGIT_STEP) * LOGIT_STEP
        if cfg.task == "forecast":
            logits = logits.masked_fill(~self.causal[:n, :n], float("-inf"))
        p = self._drop(torch.softmax(logits, dim=-1))
        if self.quant:
            p = torch.clamp(_ste_round(p / PROB_SCALE), 0, QMAX) * PROB_SCALE
        return (p @ v).transpose(1, 2).reshape(b, n, f)

    def forward(
        self,
        x: Tensor,
        part: Partition | None = None,
        delivery: dict[int, Tensor] | None = None,
        pad: Tensor | None = None,
    ) -> Tensor:
        """Raw series (B, context) -> forecast (B, N, horizon) in data units, or logits (B, C).
        ``pad`` (B, context): padding flags (paper input block only)."""
        patches, mu, sd = self.normalise(x, pad)
        y = self.core(patches, part, delivery)
        if self.cfg.task == "classify":
            return y
        return y * sd.unsqueeze(1) + mu.unsqueeze(1)

    def predict(self, x: Tensor, part: Partition | None = None, delivery=None) -> Tensor:
        """Forecast (B, horizon) from the last token, or class logits (B, C)."""
        y = self.forward(x, part, delivery)
        return y[:, -1] if self.cfg.task == "forecast" else y


def ex_linear_local(x: Tensor, lin: Lin) -> Tensor:
    """A layer every node computes for its own columns from data it already has (the input
    embedding from the broadcast input): no exchange, so identical to the monolithic matmul."""
    return x @ lin.w() + lin.bias


def token_targets(cfg: ModelConfig, x: Tensor, y: Tensor) -> Tensor:
    """Decoder targets: token t (ending at sample (t+1)P) predicts the `horizon` samples after
    it. x (B, context), y (B, horizon) -> (B, N, horizon)."""
    series = torch.cat([x, y], dim=1)
    starts = torch.arange(1, cfg.tokens + 1, device=x.device) * cfg.patch
    idx = starts[:, None] + torch.arange(cfg.horizon, device=x.device)[None, :]
    return series[:, idx]
