"""Who owns what: the D-node split of features, heads, hidden units and outputs, the exchange
schedule, and the kept-column sets produced by SomeGather pruning.

Everything here is plain numpy so the float model, the integer reference, the exporter and
the resource model all read one definition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from cats.model.config import ModelConfig

# Exchange kinds inside a block, in order. Each names the activation that crosses the air and
# the column space it lives in ("model" = F features, "hidden" = FFN units).
BLOCK_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("attn_in", "model"),  # block input X, feeds LN1 -> Q, K, V of the node's own heads
    ("attn_out", "model"),  # concatenated head outputs, feed the output projection
    ("ffn_in", "model"),  # residual after attention, feeds LN2 -> FFN layer 1
    ("ffn_hidden", "hidden"),  # FFN hidden units, feed FFN layer 2
)
HEAD_EXCHANGE = ("head_in", "model")  # final residual stream, feeds final LN -> output head

# The reference implementation's input and output blocks (ModelConfig.io == "paper"). The input
# block's 2P inputs (patch values and padding flags) are owned by the nodes like any other
# columns ("input" space, split evenly); node d computes its own slice of the MLP's hidden units
# ("in_hidden") and of the residual stream. The output block's hidden units ("head_hidden") and
# outputs ("output") are split the same way. Exchange indices: the two input exchanges come
# first (block = -2), the blocks' four each next, the two output exchanges last (block = -1).
INPUT_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("in_x", "input"),  # (patch, flags) columns, feed the input MLP's layer 1 and its residual
    ("in_hidden", "in_hidden"),  # input MLP hidden units, feed its layer 2
)
PAPER_HEAD_EXCHANGES: tuple[tuple[str, str], ...] = (
    ("head_in", "model"),  # final residual stream, feeds LN -> head layer 1 and the residual
    ("head_hidden", "head_hidden"),  # head hidden units, feed head layer 2
)
INPUT_BLOCK = -2  # Exchange.block of the input exchanges


def split_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous split of `total` items into `parts` slices whose sizes differ by at most one
    (the larger slices first). Slices may be empty when parts > total."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append((start, start + size))
        start += size
    return out


@dataclass(frozen=True)
class Exchange:
    index: int
    block: int  # -1 for the head exchange
    kind: str
    space: str  # "model" or "hidden"

    @property
    def name(self) -> str:
        return self.kind if self.block < 0 else f"b{self.block}.{self.kind}"


def block_exchange(cfg: ModelConfig, block: int, k: int) -> int:
    """Index of exchange k (0..3, BLOCK_EXCHANGES order) of block `block`."""
    return cfg.input_exchanges + 4 * block + k


def head_exchange(cfg: ModelConfig) -> int:
    """Index of the (first) exchange feeding the output head."""
    return cfg.input_exchanges + 4 * cfg.blocks


def exchange_schedule(cfg: ModelConfig) -> list[Exchange]:
    sched = []
    if cfg.io == "paper":
        sched += [
            Exchange(k, INPUT_BLOCK, kind, sp) for k, (kind, sp) in enumerate(INPUT_EXCHANGES)
        ]
    sched += [
        Exchange(block_exchange(cfg, b, k), b, kind, space)
        for b in range(cfg.blocks)
        for k, (kind, space) in enumerate(BLOCK_EXCHANGES)
    ]
    head = PAPER_HEAD_EXCHANGES if cfg.io == "paper" else (HEAD_EXCHANGE,)
    sched += [Exchange(head_exchange(cfg) + k, -1, kind, sp) for k, (kind, sp) in enumerate(head)]
    return sched


@dataclass(frozen=True)
class Plan:
    """Ownership for D nodes. Node d owns a contiguous group of heads, hence the feature columns
    of those heads; the FFN hidden units and the output units are split the same way."""

    cfg: ModelConfig
    nodes: int
    head_ranges: tuple[tuple[int, int], ...]
    ranges: dict[str, tuple[tuple[int, int], ...]]  # space -> per-node column range

    @classmethod
    def build(cls, cfg: ModelConfig, nodes: int) -> Plan:
        if not 1 <= nodes <= cfg.heads:
            raise ValueError(f"nodes must be in 1..{cfg.heads} (heads), not {nodes}")
        heads = tuple(split_ranges(cfg.heads, nodes))
        hd = cfg.head_dim
        ranges = {
            "model": tuple((a * hd, b * hd) for a, b in heads),
            "hidden": tuple(split_ranges(cfg.ffn, nodes)),
            "output": tuple(split_ranges(cfg.outputs, nodes)),
        }
        if cfg.io == "paper":
            ranges["input"] = tuple(split_ranges(cfg.input_width, nodes))
            ranges["in_hidden"] = tuple(split_ranges(cfg.io_hidden, nodes))
            ranges["head_hidden"] = tuple(split_ranges(cfg.io_hidden, nodes))
        return cls(cfg, nodes, heads, ranges)

    def width(self, space: str) -> int:
        return self.ranges[space][-1][1]

    def owner(self, space: str) -> np.ndarray:
        """owner[c] = node owning column c of `space`."""
        out = np.empty(self.width(space), dtype=np.int64)
        for d, (a, b) in enumerate(self.ranges[space]):
            out[a:b] = d
        return out

    def own_mask(self, space: str) -> np.ndarray:
        """(D, width) bool: own_mask[d, c] is True when node d owns column c."""
        return self.owner(space)[None, :] == np.arange(self.nodes)[:, None]

    def cols(self, space: str, node: int) -> np.ndarray:
        a, b = self.ranges[space][node]
        return np.arange(a, b)


@dataclass
class Partition:
    """A plan plus the SomeGather kept-column set of every exchange.

    kept[e][c] says whether column c's owner broadcasts it in exchange e. A node always uses its
    own columns; pruning only decides what the *other* nodes receive."""

    plan: Plan
    kept: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def full(cls, cfg: ModelConfig, nodes: int) -> Partition:
        plan = Plan.build(cfg, nodes)
        kept = [np.ones(plan.width(ex.space), dtype=bool) for ex in exchange_schedule(cfg)]
        return cls(plan, kept)

    @property
    def cfg(self) -> ModelConfig:
        return self.plan.cfg

    @property
    def nodes(self) -> int:
        return self.plan.nodes

    @property
    def schedule(self) -> list[Exchange]:
        return exchange_schedule(self.cfg)

    def validate(self) -> None:
        sched = self.schedule
        if len(self.kept) != len(sched):
            raise ValueError(f"partition has {len(self.kept)} kept sets, expected {len(sched)}")
        for ex, k in zip(sched, self.kept, strict=True):
            width = self.plan.width(ex.space)
            if k.shape != (width,) or k.dtype != bool:
                raise ValueError(
                    f"kept set of {ex.name} must be bool[{width}], got {k.dtype}{k.shape}"
                )
            if self.nodes > 1:
                for d, (a, b) in enumerate(self.plan.ranges[ex.space]):
                    if b > a and not k[a:b].any():
                        raise ValueError(f"node {d} keeps no column in exchange {ex.name}")

    def pruning_ratio(self) -> float:
        """Fraction of broadcastable columns that are pruned, over all exchanges."""
        if self.nodes == 1:
            return 0.0
        total = sum(k.size for k in self.kept)
        return 1.0 - sum(int(k.sum()) for k in self.kept) / total

    def kept_cols(self, e: int, node: int) -> np.ndarray:
        """Columns node `node` broadcasts in exchange e (sorted)."""
        ex = self.schedule[e]
        a, b = self.plan.ranges[ex.space][node]
        return a + np.flatnonzero(self.kept[e][a:b])

    def held_cols(self, e: int, node: int, delivered_from: np.ndarray | None = None) -> np.ndarray:
        """Columns node `node` holds after exchange e: its own plus the kept columns of every
        sender whose frame arrived (delivered_from[s] True; default: all)."""
        ex = self.schedule[e]
        owner = self.plan.owner(ex.space)
        ok = self.kept[e] & (True if delivered_from is None else delivered_from[owner])
        return np.flatnonzero(ok | (owner == node))

    def availability(self, e: int, delivery: np.ndarray | None = None) -> np.ndarray:
        """(D, width) bool: which columns each receiver holds after exchange e, for a delivery
        matrix delivery[s, r] (True when sender s's frame reached receiver r)."""
        ex = self.schedule[e]
        owner = self.plan.owner(ex.space)
        own = self.plan.own_mask(ex.space)
        recv = np.broadcast_to(self.kept[e], own.shape)
        if delivery is not None:
            recv = recv & delivery[owner, :].T
        return own | recv

    def content_hash(self) -> str:
        """Hash of the partition structure (config, D, kept sets); weights are hashed by export."""
        h = hashlib.sha256()
        h.update(self.cfg.to_json().encode())
        h.update(self.nodes.to_bytes(4, "little"))
        for k in self.kept:
            h.update(np.packbits(k).tobytes())
        return h.hexdigest()
