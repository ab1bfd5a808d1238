"""Integer-only reference of the CATS swarm: the numerical specification of the node runtime.

Every tensor that crosses a layer boundary is int8 with a per-tensor scale (symmetric, zero
point 0); weights are int8 per output channel. Matmuls accumulate int8 x int8 in int32; every
int8 result comes from ``requant`` (int64 product, round half up, arithmetic shift). LayerNorm,
softmax and the FFN activation are defined below in integer arithmetic; the C runtime must be
bit-exact with these functions (numpy int64 here, int32/int64 there).

Two levels:
* ``QModel`` - the quantised monolithic model (full int tensors + scales), made from a torch
  ``CatsModel`` by ``quantize``.
* ``Node`` - one node's runtime: only its own slices and the weight rows it stores, driven
  exchange by exchange (``send`` / ``receive`` / ``compute``). ``run_swarm`` wires D of them
  through a delivery mask; ``node_params`` cuts a node's tensors out of a ``QModel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from cats.model.config import ModelConfig
from cats.model.partition import Partition
from cats.model.transformer import CatsModel

QMAX = 127
LN_NORM_BITS = 16  # LayerNorm: normalised value carried as y * 2^16 before the per-column scale
LN_INV_BITS = 31  # LayerNorm: 1/r carried as floor(2^31 / r)
EXP_BITS = 15  # softmax: exp LUT in Q15
LOGIT_FRAC = 16  # softmax: logits in 1/16 nat
PROB_ONE = 128  # softmax: probability 1.0 == 128 (int8 clamps to 127)
EXP_LUT = np.array(
    [round((1 << EXP_BITS) * math.exp(-t / LOGIT_FRAC)) for t in range(256)], dtype=np.int64
)


# ------------------------------------------------------------------------------------------------
# Integer primitives (the spec)
# ------------------------------------------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ~= m / 2^sh with |m| in [2^30, 2^31) and sh in [1, 62] (m = 0 for real = 0)."""
    if real == 0.0:
        return 0, 1
    frac, exp = math.frexp(real)  # real = frac * 2^exp, 0.5 <= |frac| < 1
    m = round(frac * (1 << 31))
    if abs(m) == 1 << 31:
        m //= 2
        exp += 1
    sh = 31 - exp
    if sh > 62:  # tiny multiplier: keep the shift in range, lose low bits of m
        m = round(real * (1 << 62))
        sh = 62
    if sh < 1:
        raise ValueError(f"requantisation multiplier {real} too large")
    return int(m), int(sh)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    sh = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    return m, sh


def requant(acc: np.ndarray, m, sh) -> np.ndarray:
    """(acc * m + 2^(sh-1)) >> sh in int64 (arithmetic shift: rounds half up)."""
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    sh = np.asarray(sh, dtype=np.int64)
    return (acc * m + (np.int64(1) << (sh - 1))) >> sh


def sat8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -QMAX, QMAX).astype(np.int8)


def isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) exactly, v int64 >= 0 (< 2^52)."""
    v = np.asarray(v, dtype=np.int64)
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r -= (r * r > v).astype(np.int64)
    r += ((r + 1) * (r + 1) <= v).astype(np.int64)
    return r


def linear(x: np.ndarray, w: np.ndarray, bias: np.ndarray, m, sh) -> np.ndarray:
    """int8 (..., in) x int8 weights stored (out, in) + int32 bias -> int8 (..., out).

    Nodes store weights output-major so each output is one contiguous dot product (the
    layout CMSIS-NN's fully-connected kernels and the M4's dual 16-bit MACs want)."""
    acc = x.astype(np.int64) @ w.astype(np.int64).T + bias.astype(np.int64)
    return sat8(requant(acc, m, sh))


def layer_norm(x: np.ndarray, present: np.ndarray, m, sh, beta, eps_q8: int) -> np.ndarray:
    """Partial LayerNorm over the present columns of x (..., C) int8; absent outputs are 0.

    n = #present; S = sum x; d_i = n x_i - S; V = n sum x^2 - S^2 (= n^2 var);
    r = max(1, isqrt(V + (eps_q8 n^2 >> 8))); inv = 2^31 // r; y_i = (d_i inv) >> 15 (y * 2^16);
    out_i = sat8(requant(y_i, m_i, sh_i) + beta_i)."""
    pres = present.astype(bool)
    xi = np.where(pres, x.astype(np.int64), 0)
    n = np.int64(pres.sum())
    s = xi.sum(-1, keepdims=True)
    v = n * (xi * xi).sum(-1, keepdims=True) - s * s
    r = np.maximum(isqrt(v + ((np.int64(eps_q8) * n * n) >> 8)), 1)
    inv = (np.int64(1) << LN_INV_BITS) // r
    y = ((n * xi - s) * inv) >> (LN_INV_BITS - LN_NORM_BITS)
    out = requant(y, m, sh) + np.asarray(beta, dtype=np.int64)
    return np.where(pres, sat8(out), np.int8(0)).astype(np.int8)


def softmax(logits: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Integer softmax over the last axis: logits int64 in 1/16 nat -> probabilities in 1/128.

    diff = min(max - l, 255); e = EXP_LUT[diff] (Q15); recip = 2^31 // sum(e);
    p = min(127, (e * recip + 2^23) >> 24). Masked (invalid) entries get p = 0."""
    lg = logits.astype(np.int64)
    if valid is not None:
        lg = np.where(valid, lg, np.iinfo(np.int64).min // 2)
    mx = lg.max(-1, keepdims=True)
    e = EXP_LUT[np.minimum(mx - lg, 255)]
    if valid is not None:
        e = np.where(valid, e, 0)
    recip = (np.int64(1) << 31) // e.sum(-1, keepdims=True)
    return np.minimum((e * recip + (1 << 23)) >> 24, QMAX).astype(np.int8)


def add(x: np.ndarray, mx: int, o: np.ndarray, mo: int, sh: int) -> np.ndarray:
    """Residual add of two int8 tensors with different scales: sat8((x mx + o mo + r) >> sh)."""
    acc = x.astype(np.int64) * mx + o.astype(np.int64) * mo + (np.int64(1) << (sh - 1))
    return sat8(acc >> sh)


def attention(q, k, v, head_dim: int, causal: bool, ml: int, shl: int, ma: int, sha: int):
    """Attention of the node's own heads. q, k, v int8 (..., N, heads*head_dim)."""
    *lead, n, w = q.shape
    split = (*lead, n, w // head_dim, head_dim)
    qh, kh, vh = (np.swapaxes(t.astype(np.int64).reshape(split), -2, -3) for t in (q, k, v))
    logits = requant(qh @ np.swapaxes(kh, -1, -2), ml, shl)  # (..., heads, N, N) in 1/16 nat
    valid = np.tril(np.ones((n, n), dtype=bool)) if causal else None
    p = softmax(logits, valid)
    out = requant(p.astype(np.int64) @ vh, ma, sha)
    return sat8(np.swapaxes(out, -2, -3).reshape(*lead, n, w))


def quantize_input(patches: np.ndarray, scale: float) -> np.ndarray:
    """What the gateway broadcasts: normalised float patches -> int8 (round half up)."""
    return sat8(np.floor(np.asarray(patches, dtype=np.float64) / scale + 0.5))


# ------------------------------------------------------------------------------------------------
# The quantised model
# ------------------------------------------------------------------------------------------------


@dataclass
class QModel:
    """Integer tensors of the whole model, by name, plus the activation scales used."""

    cfg: ModelConfig
    scales: dict[str, float]
    t: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_scale(self) -> float:
        return self.scales["inp"]

    @property
    def output_scale(self) -> float:
        return self.scales["y"]


def _weights(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 (the same rule as the fake quantiser in training)."""
    w = w.detach().double().cpu().numpy()
    scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / QMAX
    return sat8(np.round(w / scale)), scale


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def calibrate(model: CatsModel, patches: torch.Tensor) -> None:
    """Set every activation observer from a forward pass over `patches` (B, N, P)."""
    model.eval()
    for aq in model.act_quants().values():
        aq.amax.zero_()
    model.set_calibrating(True)
    try:
        with torch.no_grad():
            for chunk in torch.split(patches.float(), 256):
                model.core(chunk)
    finally:
        model.set_calibrating(False)


def quantize(model: CatsModel) -> QModel:
    """Integer tensors from a (QAT-trained or calibrated) float model."""
    cfg = model.cfg
    aqs = {
        name.replace("blocks.", "b").replace(".aq.", ".").replace("aq.", ""): a
        for name, a in model.act_quants().items()
    }
    if cfg.task != "classify":
        del aqs["pool"]
    missing = [name for name, a in aqs.items() if float(a.amax) == 0.0]
    if missing:
        raise ValueError(f"uncalibrated activation scales {missing}; run qref.calibrate first")
    s = {name: a.scale for name, a in aqs.items()}
    qm = QModel(cfg, s)
    t = qm.t

    def lin(prefix: str, layer, s_in: float, s_out: float) -> None:
        w, sw = _weights(layer.weight)
        t[f"{prefix}.w"] = w
        t[f"{prefix}.bias"] = np.round(_np(layer.bias) / (s_in * sw)).astype(np.int64)
        t[f"{prefix}.m"], t[f"{prefix}.sh"] = quantize_multipliers(s_in * sw / s_out)

    def norm(prefix: str, ln, s_in: float, s_out: float) -> None:
        g, b = _np(ln.weight), _np(ln.bias)
        t[f"{prefix}.m"], t[f"{prefix}.sh"] = quantize_multipliers(g / (s_out * 2**LN_NORM_BITS))
        t[f"{prefix}.beta"] = np.round(b / s_out).astype(np.int64)
        t[f"{prefix}.eps"] = np.array([round(ln.eps / s_in**2 * 256)], dtype=np.int64)

    def residual(prefix: str, s_x: float, s_o: float, s_out: float) -> None:
        big = max(s_x, s_o) / s_out
        sh = min(62, 30 - math.floor(math.log2(big)))
        t[f"{prefix}"] = np.array(
            [round(s_x / s_out * 2**sh), round(s_o / s_out * 2**sh), sh], dtype=np.int64
        )

    def lin_pos(prefix: str, layer) -> None:
        """The layer that sees the input tokens: its bias carries the position embedding, so it
        is per token (N, F)."""
        w, sw = _weights(layer.weight)
        t[f"{prefix}.w"] = w
        bias_tok = (_np(layer.bias)[None, :] + _np(model.pos)) / (s["inp"] * sw)
        t[f"{prefix}.bias"] = np.round(bias_tok).astype(np.int64)
        t[f"{prefix}.m"], t[f"{prefix}.sh"] = quantize_multipliers(s["inp"] * sw / s["x0"])

    def act_lut(prefix: str, s_pre: float, s_out: float) -> None:
        grid = np.arange(-128, 128, dtype=np.float64) * s_pre
        act = torch.nn.functional.gelu if cfg.activation == "gelu" else torch.relu
        t[prefix] = sat8(np.round(act(torch.from_numpy(grid)).numpy() / s_out))

    if cfg.io == "paper":
        # Input block. The float model quantises the MLP's hidden units only after the
        # activation, so the pre-activation takes the hidden units' scale: exact for ReLU (the
        # table is max(0, i)), for GELU a clip of pre-activations below -127 steps. Both terms
        # of x0 are requantised to x0's scale and added (the sum's own rounding point).
        lin("in1", model.in1, s["inp"], s["in_h"])
        act_lut("in_act", s["in_h"], s["in_h"])
        lin("in2", model.in2, s["in_h"], s["x0"])
        lin_pos("inr", model.inr)
        residual("in_add", s["x0"], s["x0"], s["x0"])
    else:
        lin_pos("embed", model.embed)
    s_x = s["x0"]
    for i, blk in enumerate(model.blocks):
        p = f"b{i}"
        norm(f"{p}.ln1", blk.ln1, s_x, s[f"{p}.ln1"])
        for name in ("q", "k", "v"):
            lin(f"{p}.w{name}", getattr(blk, f"w{name}"), s[f"{p}.ln1"], s[f"{p}.{name}"])
        ml, shl = quantize_multiplier(
            s[f"{p}.q"] * s[f"{p}.k"] / math.sqrt(cfg.head_dim) * LOGIT_FRAC
        )
        ma, sha = quantize_multiplier(s[f"{p}.v"] / (PROB_ONE * s[f"{p}.att"]))
        t[f"{p}.attn"] = np.array([ml, shl, ma, sha], dtype=np.int64)
        lin(f"{p}.wo", blk.wo, s[f"{p}.att"], s[f"{p}.o"])
        residual(f"{p}.add1", s_x, s[f"{p}.o"], s[f"{p}.x1"])
        norm(f"{p}.ln2", blk.ln2, s[f"{p}.x1"], s[f"{p}.ln2"])
        lin(f"{p}.w1", blk.w1, s[f"{p}.ln2"], s[f"{p}.hpre"])
        act_lut(f"{p}.act", s[f"{p}.hpre"], s[f"{p}.h"])
        lin(f"{p}.w2", blk.w2, s[f"{p}.h"], s[f"{p}.f"])
        residual(f"{p}.add2", s[f"{p}.x1"], s[f"{p}.f"], s[f"{p}.x2"])
        s_x = s[f"{p}.x2"]
    if cfg.task == "classify":
        t["pool"] = np.array(quantize_multiplier(s_x / (cfg.tokens * s["pool"])), dtype=np.int64)
        s_x = s["pool"]
    norm("lnf", model.lnf, s_x, s["lnf"])
    if cfg.io == "paper":
        # Output block: y = head(act(head1(LN x))) + headr(x), both terms at y's scale.
        lin("head1", model.head1, s["lnf"], s["head_h"])
        act_lut("head_act", s["head_h"], s["head_h"])
        lin("head", model.head, s["head_h"], s["y"])
        lin("headr", model.headr, s_x, s["y"])
        residual("head_add", s["y"], s["y"], s["y"])
    else:
        lin("head", model.head, s["lnf"], s["y"])
    return qm


# ------------------------------------------------------------------------------------------------
# One node
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeLayout:
    """What node `node` sends and holds in one exchange (mirrors ExchangeSpec in cats.proto)."""

    index: int
    block: int
    kind: str
    space: str
    rows: int
    kept_cols: np.ndarray
    held_cols: np.ndarray


def node_spaces(cfg: ModelConfig) -> tuple[str, ...]:
    """The column spaces a node owns a range of (the paper blocks add three)."""
    paper = ("input", "in_hidden", "head_hidden") if cfg.io == "paper" else ()
    return ("model", "hidden", "output", *paper)


@dataclass(frozen=True)
class NodeSpec:
    """Everything structural a node needs (mirrors NodeManifest minus the blob)."""

    cfg: ModelConfig
    node: int
    nodes: int
    ranges: dict[str, tuple[int, int]]
    exchanges: tuple[ExchangeLayout, ...]

    @classmethod
    def from_partition(cls, part: Partition, node: int) -> NodeSpec:
        cfg = part.cfg
        exs = []
        for e, ex in enumerate(part.schedule):
            exs.append(
                ExchangeLayout(
                    e,
                    ex.block,
                    ex.kind,
                    ex.space,
                    1 if ex.kind in ("head_in", "head_hidden") else cfg.tokens,
                    part.kept_cols(e, node),
                    part.held_cols(e, node),
                )
            )
        ranges = {sp: part.plan.ranges[sp][node] for sp in node_spaces(cfg)}
        return cls(cfg, node, part.nodes, ranges, tuple(exs))

    def own(self, space: str) -> np.ndarray:
        a, b = self.ranges[space]
        return np.arange(a, b)


def node_params(qm: QModel, spec: NodeSpec) -> dict[str, np.ndarray]:
    """The tensors node `spec.node` stores: own output columns, and weight rows only for the
    columns it can hold (own + other nodes' kept columns). Weights are (own outputs, held
    inputs), output-major; QModel keeps the full matrices (in, out)."""
    t, cfg = qm.t, qm.cfg
    own_m, own_h, own_o = spec.own("model"), spec.own("hidden"), spec.own("output")
    held = [ex.held_cols for ex in spec.exchanges]
    out: dict[str, np.ndarray] = {}

    def lin(name: str, rows: np.ndarray, cols: np.ndarray) -> None:
        out[f"{name}.w"] = np.ascontiguousarray(t[f"{name}.w"][np.ix_(rows, cols)].T, np.int8)
        for k in ("bias", "m", "sh"):
            out[f"{name}.{k}"] = t[f"{name}.{k}"][cols].astype(np.int32)

    def norm(name: str, cols: np.ndarray) -> None:
        for k in ("m", "sh", "beta"):
            out[f"{name}.{k}"] = t[f"{name}.{k}"][cols].astype(np.int32)
        out[f"{name}.eps"] = t[f"{name}.eps"].astype(np.int32)

    def lin_pos(name: str, rows: np.ndarray) -> None:  # bias + position: (N, own_m)
        out[f"{name}.w"] = np.ascontiguousarray(t[f"{name}.w"][np.ix_(rows, own_m)].T, np.int8)
        out[f"{name}.bias"] = t[f"{name}.bias"][:, own_m].astype(np.int32)
        out[f"{name}.m"] = t[f"{name}.m"][own_m].astype(np.int32)
        out[f"{name}.sh"] = t[f"{name}.sh"][own_m].astype(np.int32)

    paper = cfg.io == "paper"
    if paper:  # held[0]: input columns (exchange in_x), held[1]: the MLP's hidden units
        lin("in1", held[0], spec.own("in_hidden"))
        lin("in2", held[1], own_m)
        lin_pos("inr", held[0])
        out["in_act"] = t["in_act"].astype(np.int8)
        out["in_add"] = t["in_add"].astype(np.int32)
    else:
        lin_pos("embed", np.arange(cfg.patch))
    for b in range(cfg.blocks):
        p = f"b{b}"
        e = cfg.input_exchanges + 4 * b
        norm(f"{p}.ln1", held[e])
        for name in ("wq", "wk", "wv"):
            lin(f"{p}.{name}", held[e], own_m)
        lin(f"{p}.wo", held[e + 1], own_m)
        norm(f"{p}.ln2", held[e + 2])
        lin(f"{p}.w1", held[e + 2], own_h)
        lin(f"{p}.w2", held[e + 3], own_m)
        for k in ("attn", "add1", "add2"):
            out[f"{p}.{k}"] = t[f"{p}.{k}"].astype(np.int32)
        out[f"{p}.act"] = t[f"{p}.act"].astype(np.int8)
    if cfg.task == "classify":
        out["pool"] = t["pool"].astype(np.int32)
    head_in = held[cfg.input_exchanges + 4 * cfg.blocks]
    norm("lnf", head_in)
    if paper:  # head_in: the residual stream, head_hidden (the last exchange): hidden units
        lin("head1", head_in, spec.own("head_hidden"))
        out["head_act"] = t["head_act"].astype(np.int8)
        lin("head", held[-1], own_o)
        lin("headr", head_in, own_o)
        out["head_add"] = t["head_add"].astype(np.int32)
    else:
        lin("head", head_in, own_o)
    return out


class Node:
    """One node's integer runtime, driven exchange by exchange like the C core.

    Inputs may carry leading batch dimensions (all inferences of a batch see the same losses);
    the C runtime runs one inference, (N, P), at a time."""

    def __init__(self, spec: NodeSpec, params: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.p = params
        self.cfg = spec.cfg
        self.e = 0
        self._out: np.ndarray | None = None  # own columns to send in exchange self.e
        self._buf: np.ndarray | None = None
        self._present: np.ndarray | None = None
        self.y: np.ndarray | None = None

    # -- exchange protocol ---------------------------------------------------------------------
    def begin(self, inp: np.ndarray) -> None:
        """Start an inference on the broadcast int8 input (N, input_width): the lean blocks'
        local input embedding, or with paper blocks the node's own input columns, which it
        sends in exchange 0 (in_x) like any other activation."""
        cfg = self.cfg
        want = (cfg.tokens, cfg.input_width)
        if inp.shape[-2:] != want or inp.dtype != np.int8:
            raise ValueError(f"input must be int8 {want}, got {inp.dtype}{inp.shape}")
        p = self.p
        self.e = 0
        self.y = None
        self._lead = inp.shape[:-2]  # optional batch dimensions, for fast evaluation
        if cfg.io == "paper":
            self._stage(inp[..., slice(*self.spec.ranges["input"])])
            return
        self.x = _lin(inp, p, "embed")
        self._stage(self.x)

    def send(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(exchange, column ids, int8 values (rows, k)) this node broadcasts now."""
        ex = self.spec.exchanges[self.e]
        a = self.spec.ranges[ex.space][0]
        return self.e, ex.kept_cols, self._out[..., ex.kept_cols - a]

    def receive(self, exchange: int, cols: np.ndarray, values: np.ndarray) -> None:
        """Place received columns into the receive buffer; anything malformed is refused."""
        if exchange != self.e:
            raise ValueError(f"frame for exchange {exchange}, node is at {self.e}")
        ex = self.spec.exchanges[self.e]
        slots = np.searchsorted(ex.held_cols, cols)
        if np.any(slots >= ex.held_cols.size) or np.any(
            ex.held_cols[np.minimum(slots, ex.held_cols.size - 1)] != cols
        ):
            raise ValueError(
                f"column ids {cols} not held by node {self.spec.node} in exchange {exchange}"
            )
        want = (*self._lead, ex.rows, cols.size)
        if values.shape != want or values.dtype != np.int8:
            raise ValueError(f"values must be int8 {want}, got {values.dtype}{values.shape}")
        self._buf[..., slots] = values
        self._present[slots] = True

    def compute(self) -> None:
        """Close the current exchange (missing columns stay zero) and run to the next one."""
        ex = self.spec.exchanges[self.e]
        buf, pres, p, cfg = self._buf, self._present, self.p, self.cfg
        if ex.kind == "in_x":  # hidden units to send; the residual term waits in x
            self.x = _lin(buf, p, "inr")
            self.e += 1
            self._stage(p["in_act"][_lin(buf, p, "in1").astype(np.int64) + 128])
            return
        if ex.kind == "in_hidden":
            mx, mo, sh = (int(z) for z in p["in_add"])
            self.x = add(self.x, mx, _lin(buf, p, "in2"), mo, sh)
            self.e += 1
            self._stage(self.x)
            return
        if ex.kind == "head_hidden":
            mx, mo, sh = (int(z) for z in p["head_add"])
            self.y = add(self._r, mx, _lin(buf, p, "head"), mo, sh)[..., 0, :]
            self.e += 1
            return
        if ex.kind == "head_in":
            h = layer_norm(buf, pres, p["lnf.m"], p["lnf.sh"], p["lnf.beta"], int(p["lnf.eps"][0]))
            self.e += 1
            if cfg.io == "paper":  # the residual term on the un-normalised stream waits in _r
                self._r = _lin(buf, p, "headr")
                self._stage(p["head_act"][_lin(h, p, "head1").astype(np.int64) + 128])
            else:
                self.y = _lin(h, p, "head")[..., 0, :]
            return
        pre = f"b{ex.block}"
        if ex.kind == "attn_in":
            ln = pre + ".ln1"
            h = layer_norm(
                buf, pres, p[ln + ".m"], p[ln + ".sh"], p[ln + ".beta"], int(p[ln + ".eps"][0])
            )
            q, k, v = (
                linear(
                    h,
                    p[f"{pre}.{w}.w"],
                    p[f"{pre}.{w}.bias"],
                    p[f"{pre}.{w}.m"],
                    p[f"{pre}.{w}.sh"],
                )
                for w in ("wq", "wk", "wv")
            )
            ml, shl, ma, sha = (int(z) for z in p[pre + ".attn"])
            nxt = attention(q, k, v, cfg.head_dim, cfg.task == "forecast", ml, shl, ma, sha)
        elif ex.kind == "attn_out":
            o = linear(
                buf, p[pre + ".wo.w"], p[pre + ".wo.bias"], p[pre + ".wo.m"], p[pre + ".wo.sh"]
            )
            mx, mo, sh = (int(z) for z in p[pre + ".add1"])
            self.x = nxt = add(self.x, mx, o, mo, sh)
        elif ex.kind == "ffn_in":
            ln = pre + ".ln2"
            h = layer_norm(
                buf, pres, p[ln + ".m"], p[ln + ".sh"], p[ln + ".beta"], int(p[ln + ".eps"][0])
            )
            hpre = linear(
                h, p[pre + ".w1.w"], p[pre + ".w1.bias"], p[pre + ".w1.m"], p[pre + ".w1.sh"]
            )
            nxt = p[pre + ".act"][hpre.astype(np.int64) + 128]
        else:  # ffn_hidden
            f = linear(
                buf, p[pre + ".w2.w"], p[pre + ".w2.bias"], p[pre + ".w2.m"], p[pre + ".w2.sh"]
            )
            mx, mo, sh = (int(z) for z in p[pre + ".add2"])
            self.x = nxt = add(self.x, mx, f, mo, sh)
            if ex.block == cfg.blocks - 1:  # next: the head exchange sends one row
                if cfg.task == "classify":
                    acc = self.x.astype(np.int64).sum(-2, keepdims=True)
                    nxt = sat8(requant(acc, int(p["pool"][0]), int(p["pool"][1])))
                else:
                    nxt = self.x[..., -1:, :]
        self.e += 1
        self._stage(nxt)

    def _stage(self, own_values: np.ndarray) -> None:
        """Own columns become this exchange's outgoing data and its own part of the buffer."""
        ex = self.spec.exchanges[self.e]
        a, b = self.spec.ranges[ex.space]
        self._out = own_values
        self._buf = np.zeros((*self._lead, ex.rows, ex.held_cols.size), dtype=np.int8)
        self._present = np.zeros(ex.held_cols.size, dtype=bool)
        own_slots = np.searchsorted(ex.held_cols, np.arange(a, b))
        self._buf[..., own_slots] = own_values
        self._present[own_slots] = True


def _lin(x: np.ndarray, p: dict[str, np.ndarray], name: str) -> np.ndarray:
    return linear(x, p[name + ".w"], p[name + ".bias"], p[name + ".m"], p[name + ".sh"])


def run_swarm(
    nodes: list[Node], inp: np.ndarray, delivery: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    """One inference through D nodes; delivery[e][s, r] False loses s's frame at r.
    Returns the int8 output (outputs,) assembled from the nodes' own output slices."""
    delivery = delivery or {}
    for node in nodes:
        node.begin(inp)
    cfg = nodes[0].cfg
    for e in range(cfg.exchanges):
        frames = [node.send() for node in nodes]
        dm = delivery.get(e)
        for r, node in enumerate(nodes):
            for s, (ex, cols, vals) in enumerate(frames):
                if s != r and (dm is None or dm[s, r]):
                    node.receive(ex, cols, vals)
        for node in nodes:
            node.compute()
    return np.concatenate([node.y for node in nodes], axis=-1)


def build_nodes(qm: QModel, part: Partition) -> list[Node]:
    specs = [NodeSpec.from_partition(part, d) for d in range(part.nodes)]
    return [Node(spec, node_params(qm, spec)) for spec in specs]
