"""Resource model of one inference on the swarm: RAM, flash and air bytes per node.

This is the static memory plan the C runtime follows (int8 activations and weights, one
inference at a time, the node-by-node structure of ``cats.model.swarm_float``), written as
closed-form formulas over per-node column counts so the same code serves three purposes:

* the per-node numbers of ``cats report`` for CATS (SomeGather with pruning ratio p), for plain
  AllGather tensor parallelism and for one device;
* ``fits`` / ``largest_fitting``: the largest (F, L) model a swarm of D nodes can hold, and the
  scale ratio against one node (the paper's "14x at 16 nodes");
* air bytes: a node's kept columns cut into ColumnFrames that fit the link MTU by the
  SomeGather engine's own fragmentation rule (``cats.artefacts.frames``, mirrored by the C core),
  each sent behind its AirType byte in one radio frame of ``cats.wire.phy`` (the link facts).

Counts come from a ``Layout``: either the exact kept sets of a ``Partition`` (a pruned model) or
a synthetic one in which every node keeps ``kept_count(w, p)`` of its w columns in every
exchange. A Layout may hold a grid of feature widths at once (leading axis G), which is how the
(F, L) search stays closed-form and vectorised.

Numbers marked *estimate* (runtime code size, RTOS/stack RAM) are placeholders until the
measured ELF size and the linker map of the node image replace them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cats.artefacts import frames
from cats.artefacts.frames import FramePlan
from cats.base.paths import REPO_ROOT
from cats.model.config import PRESETS, ModelConfig
from cats.model.partition import Partition, Plan, exchange_schedule
from cats.wire.phy import AIR_TYPE_BYTES, BLE2M, BLE2M_AUX, IEEE802154, PHYS, Phy

KIB = 1024

# --- fixed costs: measured on the real Zephyr node images (bench/image_size) ------------------
CODE_BYTES_ESTIMATE = 48 * KIB  # runtime code in flash when no image has been measured
RUNTIME_RAM_ESTIMATE = 24 * KIB  # Zephyr kernel, stacks, radio driver, net buffers (ditto)
IMAGE_SIZES = REPO_ROOT / "bench" / "image_size" / "results.json"


def measured_fixed_costs(path: Path = IMAGE_SIZES) -> tuple[int, int, str]:
    """(code bytes, runtime RAM bytes, source) every node pays whatever its slice: the largest
    over the measured nrf52840dk node images (both links) of flash without the weight blob
    and manifest, and of RAM without the arena; the estimates when nothing is measured."""
    try:
        images = json.loads(path.read_text())["images"]
    except (OSError, ValueError, KeyError):
        return CODE_BYTES_ESTIMATE, RUNTIME_RAM_ESTIMATE, "estimate"
    if not images:
        return CODE_BYTES_ESTIMATE, RUNTIME_RAM_ESTIMATE, "estimate"
    code = max(int(r["code_bytes"]) for r in images)
    ram = max(int(r["runtime_ram_bytes"]) for r in images)
    return code, ram, f"measured ({path.relative_to(REPO_ROOT)})"


CODE_BYTES, RUNTIME_RAM_BYTES, FIXED_COSTS_SOURCE = measured_fixed_costs()

# --- per-column / per-layer constants of the int8 runtime -------------------------------------
BIAS_REQUANT_BYTES = 12  # per output column: int32 bias + int32 multiplier + int32 shift
REQUANT_BYTES = 8  # per output column when the bias is folded elsewhere (embedding)
LN_BYTES = 12  # per held column of a LayerNorm: int32 multiplier + int32 shift + int32 beta
ACT_LUT_BYTES = 256  # per block: int8 -> int8 GELU/ReLU table of FFN layer 1
ATTN_CONST_BYTES = 16  # per own head: logit scale and context requant (multiplier + shift each)
RESIDUAL_CONST_BYTES = 32  # per block: two residual adds x two operand rescales (mult + shift)
POS_BYTES = 4  # int32 per (token, own column): positional embedding + embedding bias, folded
COLMAP_BYTES = 2  # uint16 per held and per kept column id of every exchange (D > 1 only)
SCORE_BYTES = 4  # int32 per key of the one attention score row being computed
MATMUL_OUT_BLOCK = 16  # CATS_MATMUL_OUT_BLOCK: outputs whose weight rows the matmul widens at once

INFERENCE_ID_MAX = frames.INFERENCE_ID_MASK  # ids go on the air modulo 2^16


# The radio links (MTU, bytes and time on the air, RAM frame buffer) are cats.wire.phy's: the
# one definition the simulator's medium and cats.artefacts.frames use too. A ColumnFrame of n bytes
# goes on the air as a radio frame of AIR_TYPE_BYTES + n bytes (the AirType dispatch byte first).
Link = Phy
LINKS: dict[str, Link] = PHYS


@dataclass(frozen=True)
class Limits:
    """What one node offers (nRF52840: 256 KiB RAM, 1 MiB flash) and the fixed costs (estimates)
    that every node pays regardless of its slice."""

    ram_bytes: int = 256 * KIB
    flash_bytes: int = 1024 * KIB
    code_bytes: int = CODE_BYTES
    runtime_ram_bytes: int = RUNTIME_RAM_BYTES

    def to_dict(self) -> dict:
        return {
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "code_bytes": self.code_bytes,
            "runtime_ram_bytes": self.runtime_ram_bytes,
            "fixed_costs_source": FIXED_COSTS_SOURCE,
        }


METHODS = ("cats", "allgather", "single")


# ----------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------


def param_count(cfg: ModelConfig, features=None, ffn=None, blocks=None):
    """Parameters of the monolithic model (exactly ``cats.model.transformer.CatsModel``'s).
    features, ffn, blocks override cfg and may be numpy arrays (the (F, L) search grid)."""
    f = cfg.features if features is None else features
    u = cfg.ffn if ffn is None else ffn
    nb = cfg.blocks if blocks is None else blocks
    block = 4 * (f * f + f) + (f * u + u) + (u * f + f) + 4 * f  # 4 proj, FFN, 2 LayerNorms
    embed, head = cfg.patch * f + f, f * cfg.outputs + cfg.outputs
    return embed + cfg.tokens * f + nb * block + 2 * f + head  # + pos table, final LayerNorm


def matrix_count(cfg: ModelConfig, features=None, ffn=None, blocks=None):
    """Weight-matrix entries of the monolithic model (what is stored as int8)."""
    f = cfg.features if features is None else features
    u = cfg.ffn if ffn is None else ffn
    nb = cfg.blocks if blocks is None else blocks
    return cfg.patch * f + nb * (4 * f * f + 2 * f * u) + f * cfg.outputs


# ----------------------------------------------------------------------------------------------
# Layout: per-node column counts
# ----------------------------------------------------------------------------------------------


def kept_count(width, p: float):
    """Columns a node keeps of its `width` own columns at pruning ratio p: it prunes
    floor(p * width) of them but always keeps at least one (none if it owns none)."""
    w = np.asarray(width, dtype=np.int64)
    k = w - np.floor(p * w + 1e-9).astype(np.int64)
    return np.where(w > 0, np.maximum(k, 1), 0)


def _split_sizes(total: np.ndarray, parts: int) -> np.ndarray:
    """(G, parts) sizes of ``partition.split_ranges`` for every total in the grid."""
    base, extra = np.divmod(np.asarray(total, dtype=np.int64), parts)
    return base[:, None] + (np.arange(parts)[None, :] < extra[:, None])


@dataclass(frozen=True)
class Layout:
    """Per-node counts the formulas need, for one config (G = 1) or a grid of feature widths.

    own_*: (G, D) own columns per space; kept: (G, E, D) columns node d broadcasts in exchange
    e; rows: (E,) tokens sent per column (N, except 1 for the head exchange: the last token for
    forecasting, the pooled row for classification)."""

    cfg: ModelConfig  # tokens, patch, heads, blocks, outputs; F and FFN are features/ffn
    nodes: int
    method: str
    p: float
    features: np.ndarray  # (G,)
    ffn: np.ndarray  # (G,)
    own_heads: np.ndarray  # (D,)
    own_model: np.ndarray  # (G, D)
    own_hidden: np.ndarray  # (G, D)
    own_out: np.ndarray  # (G, D)
    kept: np.ndarray  # (G, E, D)
    partition: Partition | None = None  # exact kept sets, when built from one

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def grid(
        cls,
        cfg: ModelConfig,
        nodes: int,
        p: float = 0.0,
        features: Sequence[int] | None = None,
        method: str = "cats",
    ) -> Layout:
        """Synthetic layout: every node keeps kept_count(w, p) columns in every exchange.
        features: a grid of F values (heads fixed, FFN width = F); default cfg's own F/FFN."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if method == "single" and nodes != 1:
            raise ValueError("method 'single' is one device (nodes = 1)")
        if not 1 <= nodes <= cfg.heads:
            raise ValueError(f"nodes must be in 1..{cfg.heads} (heads), not {nodes}")
        if method != "cats":
            p = 0.0
        if not 0.0 <= p < 1.0:
            raise ValueError(f"pruning ratio p must be in [0, 1), not {p}")
        if features is None:
            f = np.array([cfg.features], dtype=np.int64)
            u = np.array([cfg.ffn], dtype=np.int64)
        else:
            f = np.asarray(features, dtype=np.int64)
            if np.any(f % cfg.heads) or np.any(f < cfg.heads):
                raise ValueError(f"every F must be a positive multiple of heads ({cfg.heads})")
            u = f.copy()
        heads = np.array([b - a for a, b in Plan.build(cfg, nodes).head_ranges])
        own_model = (f // cfg.heads)[:, None] * heads[None, :]
        own_hidden = _split_sizes(u, nodes)
        own_out = np.broadcast_to(_split_sizes(np.array([cfg.outputs]), nodes), own_model.shape)
        own_e = _own_per_exchange(cfg, own_model, own_hidden)
        return cls(
            cfg,
            nodes,
            method,
            p,
            f,
            u,
            heads,
            own_model,
            own_hidden,
            own_out,
            kept_count(own_e, p),
        )

    @classmethod
    def from_partition(cls, part: Partition) -> Layout:
        """Exact counts of a (pruned) partition."""
        part.validate()
        plan, cfg = part.plan, part.cfg
        width = {s: np.array([[b - a for a, b in plan.ranges[s]]]) for s in plan.ranges}
        kept = np.array(
            [
                [int(part.kept[e][a:b].sum()) for a, b in plan.ranges[ex.space]]
                for e, ex in enumerate(part.schedule)
            ]
        )[None]
        heads = np.array([b - a for a, b in plan.head_ranges])
        return cls(
            cfg,
            part.nodes,
            "cats",
            part.pruning_ratio(),
            np.array([cfg.features]),
            np.array([cfg.ffn]),
            heads,
            width["model"],
            width["hidden"],
            width["output"],
            kept,
            part,
        )

    # -- derived counts -----------------------------------------------------------------------
    @property
    def blocks(self) -> int:
        return self.cfg.blocks

    @property
    def rows(self) -> np.ndarray:
        r = np.full(4 * self.blocks + 1, self.cfg.tokens, dtype=np.int64)
        r[-1] = 1  # forecasting sends the last token, classification the pooled row
        return r

    @property
    def own_e(self) -> np.ndarray:
        """(G, E, D) own columns in each exchange's space."""
        return _own_per_exchange(self.cfg, self.own_model, self.own_hidden)

    @property
    def held(self) -> np.ndarray:
        """(G, E, D) columns node d holds after exchange e: own + every other node's kept."""
        return self.own_e + self.kept.sum(-1, keepdims=True) - self.kept

    def pruning_ratio(self) -> np.ndarray:
        """(G,) achieved fraction of pruned columns over all exchanges (0 for one node)."""
        if self.nodes == 1:
            return np.zeros(len(self.features))
        return 1.0 - self.kept.sum((1, 2)) / self.own_e.sum((1, 2))

    def kept_ids(self, e: int, node: int) -> np.ndarray:
        """Column ids node `node` broadcasts in exchange e (the lowest ones when synthetic)."""
        if self.partition is not None:
            return self.partition.kept_cols(e, node)
        if len(self.features) != 1:
            raise ValueError("kept_ids needs a single-config layout")
        space = exchange_schedule(self.cfg)[e].space
        own = {"model": self.own_model, "hidden": self.own_hidden}[space][0]
        start = int(own[:node].sum())
        return start + np.arange(int(self.kept[0, e, node]))


def _own_per_exchange(cfg: ModelConfig, own_model: np.ndarray, own_hidden: np.ndarray):
    spaces = [ex.space for ex in exchange_schedule(cfg)]
    return np.stack([own_hidden if s == "hidden" else own_model for s in spaces], axis=1)


def layout(cfg: ModelConfig, nodes: int, p: float = 0.0, method: str = "cats") -> Layout:
    """Layout of one config: 'cats' at ratio p, 'allgather' (p = 0) or 'single' (D = 1)."""
    return Layout.grid(cfg, nodes, p, method=method)


# Per exchange kind: (output columns per own column of the consuming layers, has LayerNorm).
# attn_in feeds Wq, Wk, Wv (3 x own model), attn_out feeds Wo, ffn_in feeds W1 (own hidden),
# ffn_hidden feeds W2, head_in feeds the head (own outputs).
_CONSUMER = {
    "attn_in": ("model", 3, True),
    "attn_out": ("model", 1, False),
    "ffn_in": ("hidden", 1, True),
    "ffn_hidden": ("model", 1, False),
    "head_in": ("output", 1, True),
}


def _consumer_out(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(G, E, D) output columns of the layers consuming exchange e, and (E,) LayerNorm flag."""
    own = {"model": lay.own_model, "hidden": lay.own_hidden, "output": lay.own_out}
    outs, ln = [], []
    for ex in exchange_schedule(lay.cfg):
        space, mult, has_ln = _CONSUMER[ex.kind]
        outs.append(mult * own[space])
        ln.append(has_ln)
    return np.stack(outs, axis=1), np.array(ln)


# ----------------------------------------------------------------------------------------------
# Flash
# ----------------------------------------------------------------------------------------------


def flash_breakdown(lay: Layout, limits: Limits = Limits()) -> dict[str, np.ndarray]:
    """Flash bytes per node, by term; each value is (G, D).

    weights      int8, for each layer consuming exchange e: held(e) rows x own output cols
                 (Wq/Wk/Wv, Wo, W1, W2 per block, the head), plus the embedding (patch x own
                 model cols, computed locally from the broadcast input). Pruned columns of
                 other nodes are exactly the rows a node does not store.
    bias_requant int32 bias + int32 multiplier/shift per output column of every layer
                 (the embedding's bias lives in the positional table: 8 bytes per column).
    layernorm    12 bytes per held column of LN1, LN2 and the final LN (partial LayerNorm
                 normalises over the held columns, so it needs their parameters).
    pos_table    int32 tokens x own model cols: positional embedding + embedding bias in the
                 embedding accumulator's scale, added before requantisation.
    luts_consts  256-byte activation LUT per block, 16 bytes per own head per block for the
                 attention requantisation, 32 bytes per block for the residual adds.
    column_maps  uint16 held and kept column ids of every exchange (the receive-buffer and
                 send plans; D > 1 only).
    code         runtime code (Limits.code_bytes: measured on the Zephyr images, bench/image_size).
    """
    out_e, ln = _consumer_out(lay)
    held = lay.held
    m, nb = lay.own_model, lay.blocks
    weights = (held * out_e).sum(1) + lay.cfg.patch * m
    bias = BIAS_REQUANT_BYTES * out_e.sum(1) + REQUANT_BYTES * m
    layernorm = LN_BYTES * (held * ln[None, :, None]).sum(1)
    pos = POS_BYTES * lay.cfg.tokens * m
    consts = nb * (ACT_LUT_BYTES + RESIDUAL_CONST_BYTES + ATTN_CONST_BYTES * lay.own_heads)
    consts = np.broadcast_to(consts, m.shape)
    # one device has no exchanges, hence no column maps
    colmaps = COLMAP_BYTES * (held + lay.kept).sum(1) if lay.nodes > 1 else np.zeros_like(m)
    code = np.full_like(m, limits.code_bytes)
    terms = {
        "weights": weights,
        "bias_requant": bias,
        "layernorm": layernorm,
        "pos_table": pos,
        "luts_consts": consts,
        "column_maps": colmaps,
        "code": code,
    }
    terms["total"] = sum(terms.values())
    return terms


def stored_params(lay: Layout) -> np.ndarray:
    """(G,) parameters the swarm actually stores: every node's weight-matrix entries (pruned
    rows are gone, nothing is duplicated) plus the vector parameters of the monolithic model.
    Equals ``param_count`` at p = 0; the honest "model size" of a pruned model."""
    out_e, _ = _consumer_out(lay)
    stored = (lay.held * out_e).sum((1, 2)) + lay.cfg.patch * lay.own_model.sum(1)
    f, u = lay.features, lay.ffn
    vectors = param_count(lay.cfg, f, u) - matrix_count(lay.cfg, f, u)
    return stored + vectors


# ----------------------------------------------------------------------------------------------
# RAM
# ----------------------------------------------------------------------------------------------


def matmul_scratch_bytes(n_in, n_out):
    """CATS_MATMUL_SCRATCH_BYTES(in, out) of cats_kernels.h (elementwise; 0 where n_out = 0:
    no matmul runs): the Cortex-M4 matmul's scratch. Inputs padded to K = 4 ceil(in / 4),
    one token pair widened to int16 (4 K bytes), the widened weight rows of one block of
    ob = min(out rounded up to even, 16) outputs (2 K bytes each) and 24 bytes per block
    output (requantisation constants, dot products)."""
    n_in, n_out = np.asarray(n_in, dtype=np.int64), np.asarray(n_out, dtype=np.int64)
    k = (n_in + 3) // 4 * 4
    ob = np.minimum((n_out + 1) // 2 * 2, MATMUL_OUT_BLOCK)
    return np.where(n_out > 0, 4 * k + ob * (2 * k + 24), 0)


def ram_phases(lay: Layout) -> dict[str, dict[str, np.ndarray]]:
    """Live int8 activation buffers in every phase of the schedule, per node ((G, D) each).

    The runtime keeps the own residual slice X (N x m) for the whole inference; each phase
    below adds what is live next to it. With the buffers of each phase laid out contiguously
    after X, the arena is exactly the peak over phases.

    embed      input broadcast (N x patch) -> X
    b.qkv      receive buffer of attn_in (N x held: own X copied in, others' kept columns
               arrive; LN1 runs in place) and Q, K, V of the own heads (3 x N x m)
    b.attn     Q, K, V and one int32 score row (N keys), heads processed one at a time; the
               head outputs overwrite Q row by row (q_i is dead once its row is done)
    b.wo       head outputs (N x m, read in place) + receive buffer for the other nodes' kept
               columns (N x (held - m)); Wo's output is added into X element by element
    b.w1       receive buffer of ffn_in (N x held, LN2 in place) + own hidden units (N x h)
    b.w2       own hidden + receive buffer for others' kept hidden columns (N x (held - h));
               W2's output is added into X in place
    head       receive buffer of head_in (rows x held; rows = 1) + own outputs (rows x o)

    Every phase that runs a matmul also holds the matmul's scratch (``matmul_scratch_bytes``
    of that layer's inputs and outputs: int16-widened rows for the M4's SMLAD).
    """
    n = lay.cfg.tokens
    m, h, o = lay.own_model, lay.own_hidden, lay.own_out
    held, rows = lay.held, lay.rows
    x = n * m
    zero = np.zeros_like(m)
    mm = matmul_scratch_bytes
    phases: dict[str, dict[str, np.ndarray]] = {
        "embed": {
            "residual": x,
            "input": np.full_like(m, n * lay.cfg.patch),
            "matmul": mm(lay.cfg.patch, m),
        }
    }
    for b in range(lay.blocks):
        e = 4 * b
        phases[f"b{b}.qkv"] = {
            "residual": x,
            "receive": n * held[:, e],
            "qkv": 3 * x,
            "matmul": mm(held[:, e], m),
        }
        phases[f"b{b}.attn"] = {"residual": x, "qkv": 3 * x, "scores": zero + SCORE_BYTES * n}
        phases[f"b{b}.wo"] = {
            "residual": x,
            "head_out": x,
            "receive": n * (held[:, e + 1] - m),
            "matmul": mm(held[:, e + 1], m),
        }
        phases[f"b{b}.w1"] = {
            "residual": x,
            "receive": n * held[:, e + 2],
            "hidden": n * h,
            "matmul": mm(held[:, e + 2], h),
        }
        phases[f"b{b}.w2"] = {
            "residual": x, "hidden": n * h, "receive": n * (held[:, e + 3] - h),
            "matmul": mm(held[:, e + 3], m),
        }  # fmt: skip
    r = rows[-1]
    phases["head"] = {
        "residual": x,
        "receive": r * held[:, -1],
        "output": r * o,
        "matmul": mm(held[:, -1], o),
    }
    return phases


def ram_breakdown(lay: Layout, link: Link = IEEE802154, limits: Limits = Limits()) -> dict:
    """Peak RAM per node ((G, D) arrays): the activation arena (the peak over ``ram_phases``),
    two radio frame buffers (one receiving, one being built/sent) and the fixed runtime share
    (kernel, stacks, drivers: an estimate). ``peak_phase`` names each node's peak phase and
    ``peak_terms`` the buffers live in it."""
    phases = ram_phases(lay)
    names = list(phases)
    totals = np.stack([sum(phases[k].values()) for k in names])  # (P, G, D)
    idx = totals.argmax(0)
    arena = totals.max(0)
    shape = arena.shape
    frames = np.full(shape, 2 * link.frame_buffer_bytes)
    runtime = np.full(shape, limits.runtime_ram_bytes)
    terms: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        sel = idx == i
        for term, val in phases[name].items():
            terms.setdefault(term, np.zeros(shape, dtype=np.int64))
            terms[term] = np.where(sel, np.broadcast_to(val, shape), terms[term])
    return {
        "arena": arena,
        "frame_buffers": frames,
        "runtime": runtime,
        "total": arena + frames + runtime,
        "peak_phase": np.array(names, dtype=object)[idx],
        "peak_terms": terms,
    }


# ----------------------------------------------------------------------------------------------
# Air: fragmentation into ColumnFrames
# ----------------------------------------------------------------------------------------------


def fragment(
    exchange: int, column_ids: Iterable[int], rows: int, link: Link = IEEE802154, mic: int = 0
) -> list[FramePlan]:
    """Cut one sender's kept columns of one exchange into ColumnFrames that fit
    ``link.column_mtu - mic`` (the radio frame less its AirType byte and the MIC): the one frame
    plan of the SomeGather engine, ``cats.artefacts.frames.plan`` (whole columns per frame; a
    column too tall for one frame split into row chunks). Lengths are the exact protobuf
    encoding (``frames.frame_len``) with the worst-case inference id; the header budget is
    ``frames.header_budget``."""
    return frames.plan(exchange, column_ids, rows, link.column_mtu - mic)


def encode_frames(
    plan: Sequence[FramePlan],
    exchange: int,
    values: dict[int, np.ndarray],
    inference_id: int = INFERENCE_ID_MAX,
) -> list[bytes]:
    """Real ColumnFrame encodings of a fragment plan; values[c] is column c's int8 rows."""
    return frames.encode_plan(plan, exchange, values, inference_id)


def air(lay: Layout, link: Link = IEEE802154) -> dict[str, np.ndarray]:
    """What each node sends per inference over all SomeGather exchanges ((D,) arrays):
    payload bytes (rows x kept columns, int8), frames, bytes on air (AirType byte + encoded
    ColumnFrame + link overhead, ``Phy.on_air_bytes``), transmit time (``Phy.airtime_us``,
    back to back) and channel time with the link's MAC (``Phy.schedule_us``: CSMA-CA backoff,
    CCA and turnaround per 802.15.4 frame, the advertising events of BLE; one turn per
    exchange).
    ``result_payload_bytes`` is the node's output slice for the gateway (rows x own outputs),
    kept apart: it is not part of the exchanges and its frame format belongs to the gateway
    protocol. One node sends no exchange frames at all."""
    if len(lay.features) != 1:
        raise ValueError("air() needs a single-config layout")
    d = lay.nodes
    payload = np.zeros(d, dtype=np.int64)
    frames = np.zeros(d, dtype=np.int64)
    on_air = np.zeros(d, dtype=np.int64)
    tx_us = np.zeros(d)
    mac_us = np.zeros(d)
    rows = lay.rows
    if d > 1:
        for e in range(lay.kept.shape[1]):
            for s in range(d):
                plan = fragment(e, lay.kept_ids(e, s), int(rows[e]), link)
                payload[s] += sum(fp.payload_bytes for fp in plan)
                frames[s] += len(plan)
                air_lens = [AIR_TYPE_BYTES + fp.encoded_len for fp in plan]
                on_air[s] += sum(link.on_air_bytes(n) for n in air_lens)
                tx_us[s] += sum(link.airtime_us(n) for n in air_lens)
                mac_us[s] += link.schedule_us({s: air_lens})
    return {
        "payload_bytes": payload,
        "frames": frames,
        "bytes_on_air": on_air,
        "tx_time_ms": tx_us / 1000.0,
        "tx_time_mac_ms": mac_us / 1000.0,
        "result_payload_bytes": rows[-1] * lay.own_out[0],
    }


# ----------------------------------------------------------------------------------------------
# Per-node summary, fitting, scaling
# ----------------------------------------------------------------------------------------------


def node_resources(
    cfg: ModelConfig,
    nodes: int,
    p: float = 0.0,
    method: str = "cats",
    link: Link = IEEE802154,
    limits: Limits = Limits(),
    partition: Partition | None = None,
) -> dict:
    """Everything ``cats report`` shows for one (method, D, p), JSON-ready. With `partition`,
    its exact kept sets replace the synthetic ratio p."""
    lay = (
        Layout.from_partition(partition) if partition is not None else layout(cfg, nodes, p, method)
    )
    ram = ram_breakdown(lay, link, limits)
    flash = flash_breakdown(lay, limits)
    a = air(lay, link)
    ram_b, flash_b = ram["total"][0], flash["total"][0]
    fit = (ram_b <= limits.ram_bytes) & (flash_b <= limits.flash_bytes)
    per_node = {
        "ram_bytes": ram_b.tolist(),
        "flash_bytes": flash_b.tolist(),
        "air_payload_bytes": a["payload_bytes"].tolist(),
        "air_frames": a["frames"].tolist(),
        "air_bytes_on_air": a["bytes_on_air"].tolist(),
        "air_tx_time_ms": [round(t, 3) for t in a["tx_time_ms"].tolist()],
        "air_tx_time_mac_ms": [round(t, 3) for t in a["tx_time_mac_ms"].tolist()],
        "result_payload_bytes": a["result_payload_bytes"].tolist(),
        "fits": fit.tolist(),
    }
    worst = int(np.argmax(ram_b))
    worst_f = int(np.argmax(flash_b))
    return {
        "method": lay.method,
        "nodes": lay.nodes,
        "p": lay.p if partition is None else round(float(lay.p), 4),
        "p_effective": round(float(lay.pruning_ratio()[0]), 4),
        "fits": bool(fit.all()),
        "per_node": per_node,
        "max": {k: (max(v) if k != "fits" else bool(all(v))) for k, v in per_node.items()},
        "total": {
            k: (round(sum(per_node[k]), 3) if k == "air_tx_time_ms" else int(sum(per_node[k])))
            for k in ("air_payload_bytes", "air_frames", "air_bytes_on_air", "air_tx_time_ms")
        },
        "ram_breakdown": {
            "node": worst,
            "peak_phase": str(ram["peak_phase"][0, worst]),
            "arena_terms": {
                k: int(np.broadcast_to(v, ram["arena"].shape)[0, worst])
                for k, v in ram_phases(lay)[str(ram["peak_phase"][0, worst])].items()
            },
            **{k: int(ram[k][0, worst]) for k in ("arena", "frame_buffers", "runtime", "total")},
        },
        "flash_breakdown": {
            "node": worst_f,
            **{k: int(v[0, worst_f]) for k, v in flash.items()},
        },
    }


def fits(
    cfg: ModelConfig,
    nodes: int,
    p: float = 0.0,
    method: str = "cats",
    limits: Limits = Limits(),
    link: Link = IEEE802154,
) -> bool:
    """Whether every node's RAM and flash are within limits."""
    lay = layout(cfg, nodes, p, method)
    ram = ram_breakdown(lay, link, limits)["total"]
    flash = flash_breakdown(lay, limits)["total"]
    return bool((ram <= limits.ram_bytes).all() and (flash <= limits.flash_bytes).all())


@dataclass(frozen=True)
class Scaled:
    """The largest model found for D nodes at ratio p: its shape and sizes."""

    nodes: int
    p: float
    features: int
    blocks: int
    params: int  # stored parameters (= monolithic count at p = 0)
    nominal_params: int  # the monolithic model of that shape
    ram_bytes: int  # max over nodes
    flash_bytes: int  # max over nodes

    def to_dict(self) -> dict:
        return dict(self.__dict__)


FEATURE_GRID = tuple(range(16, 2049, 16))
MAX_BLOCKS = 64


def largest_fitting(
    nodes: int,
    p: float = 0.0,
    base: ModelConfig = PRESETS["verytiny"],
    limits: Limits = Limits(),
    link: Link = IEEE802154,
    features: Sequence[int] = FEATURE_GRID,
    max_blocks: int = MAX_BLOCKS,
    fixed_blocks: int | None = None,
) -> Scaled | None:
    """Largest model (by stored parameters) that D nodes hold, over F in `features` (heads
    fixed at base.heads, FFN width = F, head_dim = F / heads) and L in 1..max_blocks; tokens,
    patch and head as in `base`. Closed form: RAM does not depend on L (blocks are alike), flash
    and parameters are linear in L, so one vectorised evaluation at L = 1 and L = 2 gives, per F,
    the largest L that fits. With `fixed_blocks` the depth is that, not searched (the paper
    scales the width at its fixed depth)."""
    one = base.replace(blocks=1)
    two = base.replace(blocks=2)
    lay1 = Layout.grid(one, nodes, p, features)
    lay2 = Layout.grid(two, nodes, p, features)
    ram = ram_breakdown(lay1, link, limits)["total"].max(1)  # (G,)
    fl1, fl2 = flash_breakdown(lay1, limits)["total"], flash_breakdown(lay2, limits)["total"]
    per_block = fl2 - fl1  # (G, D)
    fixed = fl1 - per_block
    room = (limits.flash_bytes - fixed) // np.maximum(per_block, 1)
    lmax = np.minimum(room.min(1), max_blocks)
    lmax = np.where(ram <= limits.ram_bytes, lmax, 0)
    if fixed_blocks is not None:
        lmax = np.where(lmax >= fixed_blocks, fixed_blocks, 0)
    pr1, pr2 = stored_params(lay1), stored_params(lay2)
    params = pr1 + (lmax - 1) * (pr2 - pr1)
    params = np.where(lmax >= 1, params, -1)
    g = int(np.argmax(params))
    if params[g] < 0:
        return None
    f, nb = int(lay1.features[g]), int(lmax[g])
    return Scaled(
        nodes=nodes,
        p=float(p),
        features=f,
        blocks=nb,
        params=int(params[g]),
        nominal_params=int(param_count(base, f, f, nb)),
        ram_bytes=int(ram[g]),
        flash_bytes=int((fixed[g] + nb * per_block[g]).max()),
    )


def scale_ratios(
    nodes: Iterable[int],
    ps: Iterable[float] = (0.0,),
    base: ModelConfig = PRESETS["verytiny"],
    limits: Limits = Limits(),
    link: Link = IEEE802154,
    fixed_blocks: int | None = None,
) -> tuple[dict[str, float], dict[str, dict], dict[str, dict[str, float]]]:
    """Scale ratio per D: stored parameters of the largest model that D nodes hold (best over
    the ratios `ps`, and over D' <= D nodes, since D nodes can always run a D'-node split)
    divided by the largest model one node holds.

    Parameters are counted as stored (pruned rows do not count), so pruning cannot inflate the
    ratio with weights nobody keeps. Returns (ratio, detail, ratio_by_p), keyed by str(D)."""
    want = sorted(set(int(d) for d in nodes))
    ps = sorted(set(float(p) for p in ps)) or [0.0]
    kw = {"fixed_blocks": fixed_blocks}
    single = largest_fitting(1, 0.0, base, limits, link, **kw)
    if single is None:
        raise ValueError("not even the smallest model fits one node under these limits")
    by_p: dict[str, dict[str, float]] = {}
    best: dict[int, Scaled] = {}
    for d in range(1, max(want) + 1):
        for p in ps if d > 1 else [0.0]:
            s = largest_fitting(d, p, base, limits, link, **kw)
            if s is None:
                continue
            by_p.setdefault(f"{p:g}", {})[str(d)] = s.params / single.params
            if d not in best or s.params > best[d].params:
                best[d] = s
    ratio: dict[str, float] = {}
    detail: dict[str, dict] = {}
    champion: Scaled | None = None
    for d in range(1, max(want) + 1):
        if d in best and (champion is None or best[d].params > champion.params):
            champion = best[d]
        if d in want and champion is not None:
            ratio[str(d)] = round(champion.params / single.params, 4)
            detail[str(d)] = {**champion.to_dict(), "nodes_used": champion.nodes}
            detail[str(d)].pop("nodes")
    by_p = {
        p: {d: round(v, 4) for d, v in vals.items() if int(d) in want} for p, vals in by_p.items()
    }
    for vals in by_p.values():
        if "1" in ratio:
            vals.setdefault("1", 1.0)
    return ratio, detail, by_p


def single_node_capacity(
    base: ModelConfig = PRESETS["verytiny"], limits: Limits = Limits(), link: Link = IEEE802154
) -> Scaled:
    """The largest model one node holds (the scale ratio's denominator)."""
    s = largest_fitting(1, 0.0, base, limits, link)
    if s is None:
        raise ValueError("nothing fits one node under these limits")
    return s


# --- the paper's baselines: the reference code's closed forms (attention block only) -----------
# Written after calculate_resources.py of the paper's public reference implementation
# (Data-Science-in-Mechanical-Engineering/CATS). Scope: ONE multi-head attention block (X, Q, K,
# V, head outputs H, output O and the Wq/Wk/Wv/Wo weights), N tokens, F features, H heads, D
# devices, counted in elements (= bytes at int8). RAM is the peak of what a device holds, flash
# the attention weights it stores (no biases), com the elements sent over the air per block.

BASELINES = ("voltage", "astra", "bochem", "allgather", "cats")
BASELINE_NAMES = {
    "voltage": "Voltage (Hu 2024)",
    "astra": "Astra (Liu 2025)",
    "bochem": "Bochem 2025",
    "allgather": "AllGather (CATS, p = 0)",
    "cats": "CATS",
}


def baseline_resources(
    method: str, nodes: int, tokens: int, features: int, heads: int, p: float = 0.0
) -> dict[str, float]:
    """RAM, flash and com (elements) of one attention block per device by the reference's
    formulas; ``allgather`` is CATS at p = 0 (the same split without pruning)."""
    d, n, f, h = nodes, tokens, features, heads
    heads_local = math.ceil(h / d)
    f_local = f * heads_local / h  # features of the heads a device owns
    h_local = n * f / h * heads_local  # its head outputs
    if method == "voltage":  # every device holds all of X and all weights; sends its N/D rows
        ram = n * f + n / d * f / h + 2 * n * f / h + 2 * n / d * f
        flash = 4 * f * f
        com = n * f
    elif method == "astra":  # like Voltage, remote rows compressed to 5/8
        nx = n / d * f + (d - 1) / d * n * f * 5 / 8
        ram = nx + n / d * f / h + 2 * nx / h + 2 * n / d * f
        flash = 4 * f * f
        com = n * f * 5 / 8
    elif method == "bochem":  # heads split, every device receives every O
        ram_att = n * f + 3 * n * f / h + h_local
        ram_head = h_local + n * f + n * f * (d - 1)
        ram = max(ram_att, ram_head)
        flash = 4 * f_local * f
        com = 2 * n * f * d
    elif method in ("cats", "allgather"):
        q = 0.0 if method == "allgather" else p
        ram_att = n * f / d + n * f / d * (d - 1) * (1 - q) + 3 * n * f / h + h_local
        ram_head = h_local + (n * f - h_local) * (1 - q) + n * f / d
        ram = max(ram_att, ram_head)
        flash = 4 * f_local * (f_local + (f - f_local) * (1 - q))
        com = 4 * n * f * (1 - q)
    else:
        raise ValueError(f"unknown baseline {method!r}; choose from {BASELINES}")
    return {"ram": float(ram), "flash": float(flash), "com": float(com)}


__all__ = [
    "BASELINES",
    "BASELINE_NAMES",
    "baseline_resources",
    "BLE2M",
    "BLE2M_AUX",
    "IEEE802154",
    "LINKS",
    "FramePlan",
    "Layout",
    "Limits",
    "Link",
    "Scaled",
    "air",
    "encode_frames",
    "fits",
    "flash_breakdown",
    "fragment",
    "kept_count",
    "largest_fitting",
    "layout",
    "matrix_count",
    "matmul_scratch_bytes",
    "node_resources",
    "param_count",
    "ram_breakdown",
    "ram_phases",
    "scale_ratios",
    "single_node_capacity",
    "stored_params",
]
