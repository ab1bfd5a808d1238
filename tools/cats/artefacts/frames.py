"""SomeGather ColumnFrames: the fragmentation rule, encoding and checked decoding.

This is the Python mirror of ``cats_zephyr_module/src/core/somegather.c``; both implement the
same rule, byte for byte, and ``tests/test_frames.py`` holds them to it (golden vectors in
``tests/golden/frames``).

Fragmentation (one sender, one exchange; its kept columns in ascending id order):

* Frames carry whole columns, greedily as many as fit the MTU, in kept order. A frame's columns
  share ``row_start`` = 0 and ``row_count`` = the exchange's rows.
* Only a column that does not fit an empty frame on its own is split into row chunks, each the
  largest that fits, one chunk per frame (``column_ids`` = that one id); the next column starts
  a new frame.
* Sizes are the exact protobuf encoding (``frame_len``) with the worst-case header budget:
  inference id 0xFFFF (ids go on the air modulo 2^16) and a non-zero partition tag. A real frame
  is never longer than planned, so every planned frame fits, whatever the id and tag are.
* ``fragments`` is part of every header, so its own varint length matters: the plan is the fixed
  point of packing with a guessed count (start 1, repack with the count just obtained; the count
  never shrinks, so this ends after a few rounds).

Receiving checks, in this order (the reason names are the C counters ``rejected_<reason>``):

``malformed``  does not decode (also: a known field with the wrong wire type, as nanopb),
               oversized, no columns, too many columns, column id > 0xFFFF, payload over its
               bound, row_count 0, payload length != columns x row_count, fragment >=
               fragments, exchange index not in the partition, rows beyond the exchange's rows;
``partition``  another partition's tag;
``sender``     sender id >= nodes;
``self``       our own id as sender;
``stale``      another inference id, or an exchange before the current one (or the node idle);
``future``     an exchange after the current one;
``column``     a column not owned by the sender or not in its kept set for this exchange.
A frame passing all checks is accepted; columns already complete are ``duplicates`` (counted,
not stored again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import unknown_fields

from cats.model.partition import Plan
from cats.wire import phy
from cats.wire.proto import pb

# Link MTUs for one encoded ColumnFrame: the radio frame less its AirType dispatch byte
# (derivations in cats.wire.phy): 115 on 802.15.4, 240 on BLE 2M.
MTU_IEEE802154 = phy.IEEE802154.column_mtu
MTU_BLE2M = phy.BLE2M.column_mtu

# Fixed limits of the node's decoder (the nanopb options of ColumnFrame in proto/cats.options).
FRAME_MAX = 255  # longest frame a node accepts (also the largest MTU it encodes for)
MAX_COLUMNS = 128  # column ids per frame
PAYLOAD_MAX = 240  # payload bytes per frame
COLUMN_ID_MAX = 0xFFFF  # column ids are uint16 on the node
INFERENCE_ID_MASK = 0xFFFF  # inference ids go on the air modulo 2^16
PARTITION_TAG_MAX = 0xFFFFFFFF  # the header budget assumes a non-zero (5-byte) tag
PLAN_ROUNDS = 16  # fixed-point rounds of the fragment count (never more than ~4 are needed)

REASONS = ("malformed", "partition", "sender", "self", "stale", "future", "column")


class FrameError(ValueError):
    """A received frame refused for `reason` (one of REASONS)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ----------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------


def varint_len(v: int) -> int:
    return max(1, (int(v).bit_length() + 6) // 7)


def _scalar(v: int) -> int:
    """Bytes of a proto3 scalar field with a 1-byte tag (absent when zero)."""
    return 0 if v == 0 else 1 + varint_len(v)


def _delimited(n: int) -> int:
    """Bytes of a length-delimited field of n bytes (absent when empty)."""
    return 0 if n == 0 else 1 + varint_len(n) + n


@lru_cache(maxsize=65536)
def header_len(
    exchange: int, sender: int, fragment: int, fragments: int, row_start: int, row_count: int
) -> int:
    """Budgeted bytes of a ColumnFrame's scalar fields: inference id 0xFFFF (3-byte varint) and
    a non-zero fixed32 partition tag, whatever the real ones are."""
    return (
        1 + varint_len(INFERENCE_ID_MASK)
        + _scalar(exchange) + _scalar(sender) + _scalar(fragment) + _scalar(fragments)
        + 5
        + _scalar(row_start) + _scalar(row_count)
    )  # fmt: skip


def frame_len(
    exchange: int,
    sender: int,
    fragment: int,
    fragments: int,
    ids_bytes: int,
    columns: int,
    row_start: int,
    row_count: int,
) -> int:
    """Budgeted encoded length of a ColumnFrame; ids_bytes = the packed column-id varints."""
    return (
        header_len(exchange, sender, fragment, fragments, row_start, row_count)
        + _delimited(ids_bytes)
        + _delimited(columns * row_count)
    )


# ----------------------------------------------------------------------------------------------
# The fragmentation plan
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePlan:
    """One ColumnFrame: rows [row_start, row_stop) of each column in column_ids (column after
    column in the payload) and its budgeted encoded length (an upper bound of the real one)."""

    fragment: int
    column_ids: tuple[int, ...]
    row_start: int
    row_stop: int
    payload_bytes: int
    encoded_len: int

    @property
    def row_count(self) -> int:
        return self.row_stop - self.row_start


def plan(
    exchange: int, sender: int, column_ids: Iterable[int], rows: int, mtu: int
) -> list[FramePlan]:
    """Cut one sender's kept columns (in the given order) of one exchange into frames of at most
    `mtu` bytes (the rule in the module docstring). Empty for no columns or no rows."""
    ids = [int(c) for c in column_ids]
    if rows < 1 or not ids:
        return []
    n = 1
    for _ in range(PLAN_ROUNDS):
        frames = _pack(exchange, sender, ids, rows, n, mtu)
        if len(frames) == n:
            return frames
        n = len(frames)
    raise RuntimeError("fragment count did not converge")  # pragma: no cover


def _pack(exchange: int, sender: int, ids: list[int], rows: int, n: int, mtu: int):
    """Greedy plan for a guessed fragment count n (the `fragments` field's own length)."""
    frames: list[FramePlan] = []
    cur: list[int] = []
    cur_ids = 0  # packed varint bytes of cur

    def length(ids_bytes: int, cols: int, start: int, count: int) -> int:
        return frame_len(exchange, sender, len(frames), n, ids_bytes, cols, start, count)

    def close() -> None:
        if cur:
            size = length(cur_ids, len(cur), 0, rows)
            frames.append(FramePlan(len(frames), tuple(cur), 0, rows, rows * len(cur), size))
            cur.clear()

    for c in ids:
        vc = varint_len(c)
        if length(cur_ids + vc, len(cur) + 1, 0, rows) <= mtu:
            cur.append(c)
            cur_ids += vc
            continue
        close()
        if length(vc, 1, 0, rows) <= mtu:
            cur.append(c)
            cur_ids = vc
            continue
        start = 0  # the column alone does not fit: row chunks, each the largest that fits
        while start < rows:
            # upper bound: the row_count and payload fields take at least 2 bytes + chunk
            base = header_len(exchange, sender, len(frames), n, start, 0) + _delimited(vc)
            chunk = max(0, min(rows - start, mtu - base - 4))
            while chunk > 0 and length(vc, 1, start, chunk) > mtu:
                chunk -= 1
            if chunk == 0:
                raise ValueError(f"MTU {mtu} cannot carry one row")
            size = length(vc, 1, start, chunk)
            frames.append(FramePlan(len(frames), (c,), start, start + chunk, chunk, size))
            start += chunk
    close()
    return frames


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------


def partition_tag(partition_hash: bytes) -> int:
    """The 32-bit tag every frame carries: the partition hash's first 4 bytes, little endian."""
    if len(partition_hash) < 4:
        raise ValueError("partition hash must have at least 4 bytes")
    return int.from_bytes(partition_hash[:4], "little")


def encode_plan(
    frames: Sequence[FramePlan],
    exchange: int,
    sender: int,
    values: dict[int, np.ndarray],
    inference_id: int,
    partition_tag: int,
) -> list[bytes]:
    """ColumnFrame encodings of a plan; values[c] is column c's int8 rows."""
    out = []
    for fp in frames:
        payload = b"".join(
            np.asarray(values[c], dtype=np.int8)[fp.row_start : fp.row_stop].tobytes()
            for c in fp.column_ids
        )
        msg = pb().ColumnFrame(
            inference_id=inference_id & INFERENCE_ID_MASK,
            exchange=exchange,
            sender=sender,
            fragment=fp.fragment,
            fragments=len(frames),
            partition_tag=partition_tag,
            column_ids=list(fp.column_ids),
            payload=payload,
            row_start=fp.row_start,
            row_count=fp.row_count,
        )
        data = msg.SerializeToString()
        if len(data) > fp.encoded_len:  # pragma: no cover - the budget is an upper bound
            raise AssertionError(f"frame {fp.fragment}: {len(data)} > {fp.encoded_len} bytes")
        out.append(data)
    return out


def encode_exchange(
    exchange: int,
    sender: int,
    column_ids: Sequence[int],
    values: np.ndarray,
    *,
    mtu: int = MTU_IEEE802154,
    inference_id: int = 0,
    partition_tag: int = 0,
) -> list[bytes]:
    """All frames of one sender's exchange. values: int8 (rows, len(column_ids)), the layout
    ``qref.Node.send`` returns."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(column_ids):
        raise ValueError(f"values must be (rows, {len(column_ids)}), got {values.shape}")
    if not 1 <= mtu <= FRAME_MAX:
        raise ValueError(f"MTU must be in 1..{FRAME_MAX}, not {mtu}")
    cols = {int(c): values[:, j] for j, c in enumerate(column_ids)}
    frames = plan(exchange, sender, column_ids, values.shape[0], mtu)
    return encode_plan(frames, exchange, sender, cols, inference_id, partition_tag)


def encode_node(node, inference_id: int, tag: int, mtu: int = MTU_IEEE802154) -> list[bytes]:
    """Frames a ``qref.Node`` broadcasts in its current exchange (none when it is alone)."""
    if node.spec.nodes == 1:
        return []
    e, cols, vals = node.send()
    return encode_exchange(
        e, node.spec.node, cols, vals, mtu=mtu, inference_id=inference_id, partition_tag=tag
    )


# ----------------------------------------------------------------------------------------------
# Decoding and checks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RxContext:
    """What a receiver checks a frame against (the C engine reads it from its cats_node)."""

    node: int
    nodes: int
    partition_tag: int
    inference_id: int
    exchange: int  # the receiver's current exchange; -1 when idle
    rows: tuple[int, ...]  # per exchange of the partition
    spaces: tuple[str, ...]  # per exchange
    held: tuple[np.ndarray, ...]  # per exchange: the receiver's held column ids (sorted)
    owner: dict[str, np.ndarray]  # space -> owner node of each column

    @classmethod
    def for_node(cls, node, partition_tag: int, inference_id: int) -> RxContext:
        """Context of a ``qref.Node`` at its current exchange (-1 once it has finished)."""
        spec = node.spec
        exs = spec.exchanges
        return cls(
            spec.node,
            spec.nodes,
            partition_tag,
            inference_id,
            node.e if node.e < len(exs) else -1,
            tuple(ex.rows for ex in exs),
            tuple(ex.space for ex in exs),
            tuple(ex.held_cols for ex in exs),
            _owners(spec.cfg, spec.nodes),
        )


@lru_cache(maxsize=64)
def _owners(cfg, nodes: int) -> dict[str, np.ndarray]:
    plan = Plan.build(cfg, nodes)
    return {sp: plan.owner(sp) for sp in ("model", "hidden", "output")}


def decode(data: bytes, rx: RxContext | None = None):
    """Parse one frame into a ``ColumnFrame``; FrameError names the reason it is refused. The
    structural checks always run, the ones needing a receiver only with `rx`."""
    if len(data) > FRAME_MAX:
        raise FrameError("malformed", f"{len(data)} bytes > {FRAME_MAX}")
    msg = pb().ColumnFrame()
    try:
        msg.ParseFromString(bytes(data))
    except Exception as exc:  # protobuf raises DecodeError (a plain Exception subclass)
        raise FrameError("malformed", f"does not decode ({exc})") from None
    # protobuf keeps a known field with the wrong wire type as an unknown field; nanopb refuses
    known = {f.number for f in msg.DESCRIPTOR.fields}
    if any(f.field_number in known for f in unknown_fields.UnknownFieldSet(msg)):
        raise FrameError("malformed", "a field with the wrong wire type")
    ncols = len(msg.column_ids)
    if ncols == 0 or ncols > MAX_COLUMNS:
        raise FrameError("malformed", f"{ncols} columns")
    if max(msg.column_ids) > COLUMN_ID_MAX:
        raise FrameError("malformed", "column id beyond 16 bits")
    if len(msg.payload) > PAYLOAD_MAX:
        raise FrameError("malformed", f"payload {len(msg.payload)} > {PAYLOAD_MAX} bytes")
    if msg.row_count == 0:
        raise FrameError("malformed", "row_count 0")
    if len(msg.payload) != ncols * msg.row_count:
        raise FrameError("malformed", f"payload {len(msg.payload)} != {ncols} x {msg.row_count}")
    if msg.fragment >= msg.fragments:
        raise FrameError("malformed", f"fragment {msg.fragment} of {msg.fragments}")
    if rx is not None:
        check(msg, rx)
    return msg


def check(msg, rx: RxContext) -> None:
    """The receiver-side checks of a structurally valid frame, in the C engine's order."""
    if msg.exchange >= len(rx.rows):
        raise FrameError("malformed", f"exchange {msg.exchange} not in the partition")
    if msg.row_start + msg.row_count > rx.rows[msg.exchange]:
        raise FrameError("malformed", "rows beyond the exchange's rows")
    if msg.partition_tag != rx.partition_tag:
        raise FrameError("partition", f"tag {msg.partition_tag:#010x}")
    if msg.sender >= rx.nodes:
        raise FrameError("sender", f"sender {msg.sender} of {rx.nodes} nodes")
    if msg.sender == rx.node:
        raise FrameError("self")
    if msg.inference_id != rx.inference_id & INFERENCE_ID_MASK:
        raise FrameError("stale", f"inference {msg.inference_id}")
    if rx.exchange < 0 or msg.exchange < rx.exchange:
        raise FrameError("stale", f"exchange {msg.exchange}, node at {rx.exchange}")
    if msg.exchange > rx.exchange:
        raise FrameError("future", f"exchange {msg.exchange}, node at {rx.exchange}")
    owner = rx.owner[rx.spaces[msg.exchange]]
    held = rx.held[msg.exchange]
    for c in msg.column_ids:
        if c >= owner.size or owner[c] != msg.sender:
            raise FrameError("column", f"column {c} not owned by node {msg.sender}")
        slot = int(np.searchsorted(held, c))
        if slot >= held.size or held[slot] != c:
            raise FrameError("column", f"column {c} not kept by node {msg.sender}")


# ----------------------------------------------------------------------------------------------
# A receiver: reassembly into a qref.Node, with the C engine's counters
# ----------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Mirror of ``struct cats_sg_stats``."""

    frames_sent: int = 0
    frames_received: int = 0
    columns_received: int = 0
    columns_lost: int = 0
    rejected_malformed: int = 0
    rejected_partition: int = 0
    rejected_sender: int = 0
    rejected_self: int = 0
    rejected_stale: int = 0
    rejected_future: int = 0
    rejected_column: int = 0
    duplicates: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Receiver:
    """One node's SomeGather side around a ``qref.Node``: checks frames, reassembles row chunks,
    hands complete columns to the node, counts like the C engine."""

    def __init__(self, node, partition_tag: int) -> None:
        self.node = node
        self.tag = partition_tag
        self.inference_id = 0
        self.stats = Stats()
        self._partial: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._complete: set[int] = set()

    def begin(self, inference_id: int, inp: np.ndarray) -> None:
        self.inference_id = inference_id
        self.node.begin(inp)
        self._partial.clear()
        self._complete.clear()

    def context(self) -> RxContext:
        return RxContext.for_node(self.node, self.tag, self.inference_id)

    def outgoing(self, mtu: int = MTU_IEEE802154) -> list[bytes]:
        frames = encode_node(self.node, self.inference_id, self.tag, mtu)
        self.stats.frames_sent += len(frames)
        return frames

    def receive(self, data: bytes) -> bool:
        """True when accepted (also when it only repeats complete columns)."""
        try:
            msg = decode(data, self.context())
        except FrameError as err:
            field = f"rejected_{err.reason}"
            setattr(self.stats, field, getattr(self.stats, field) + 1)
            return False
        self.stats.frames_received += 1
        rows = self.node.spec.exchanges[self.node.e].rows
        a, n = msg.row_start, msg.row_count
        for j, c in enumerate(msg.column_ids):
            if c in self._complete:
                self.stats.duplicates += 1
                continue
            buf, got = self._partial.setdefault(
                c, (np.zeros(rows, dtype=np.int8), np.zeros(rows, dtype=bool))
            )
            buf[a : a + n] = np.frombuffer(msg.payload, dtype=np.int8)[j * n : (j + 1) * n]
            got[a : a + n] = True
            if got.all():
                self.node.receive(msg.exchange, np.array([c]), buf[:, None].copy())
                self._complete.add(c)
                del self._partial[c]
                self.stats.columns_received += 1
        return True

    def compute(self) -> int:
        """Close the exchange; returns (and counts) the held columns that did not arrive."""
        ex = self.node.spec.exchanges[self.node.e]
        a, b = self.node.spec.ranges[ex.space]
        lost = int(np.sum((ex.held_cols < a) | (ex.held_cols >= b))) - len(self._complete)
        self.stats.columns_lost += lost
        self._partial.clear()
        self._complete.clear()
        self.node.compute()
        return lost


DropFn = Callable[[int, int, int, int], bool]  # (exchange, sender, fragment, receiver) -> lost


def run_swarm(
    receivers: list[Receiver],
    inp: np.ndarray,
    inference_id: int = 1,
    drop: DropFn | None = None,
    mtu: int = MTU_IEEE802154,
) -> tuple[np.ndarray, dict[int, dict[int, set[int]]]]:
    """One inference over frames: every node encodes its frames, each receiver decodes those not
    dropped. Returns the output and, per exchange and receiver, the columns it lost."""
    for r in receivers:
        r.begin(inference_id, inp)
    lost: dict[int, dict[int, set[int]]] = {}
    for e in range(receivers[0].node.cfg.exchanges):
        sent = [r.outgoing(mtu) for r in receivers]
        lost[e] = {d: set() for d in range(len(receivers))}
        for s, frames in enumerate(sent):
            for i, data in enumerate(frames):
                cols = list(pb().ColumnFrame.FromString(data).column_ids)
                for d, r in enumerate(receivers):
                    if d == s:
                        continue
                    if drop is not None and drop(e, s, i, d):
                        lost[e][d].update(cols)
                    else:
                        r.receive(data)
        for r in receivers:
            r.compute()
    return np.concatenate([r.node.y for r in receivers], axis=-1), lost


# ----------------------------------------------------------------------------------------------
# Golden vectors (tests/golden/frames)
# ----------------------------------------------------------------------------------------------

GOLDEN_NODES = 4
GOLDEN_SEED = 1
GOLDEN_INFERENCE = 0x1234
GOLDEN_RECEIVER = 0


def golden_partition(cfg):
    """The pruned 4-node partition of the golden export (seeded; every node keeps its first
    column and about half of the rest in every exchange)."""
    from cats.model.partition import Partition

    part = Partition.full(cfg, GOLDEN_NODES)
    rng = np.random.default_rng(GOLDEN_SEED)
    for e, ex in enumerate(part.schedule):
        for a, b in part.plan.ranges[ex.space]:
            keep = rng.random(b - a) < 0.5
            keep[0] = True
            part.kept[e][a:b] = keep
    return part


def write_golden_export(out: Path) -> None:
    """The small export the golden frames belong to: cats.artefacts.export.untrained("test", 1),
    pruned, 4 nodes, plus a deterministic int8 input."""
    from cats.artefacts import export

    model, qm = export.untrained("test", GOLDEN_SEED)
    export.export_partition(qm, golden_partition(model.cfg), out / "export")
    series = export.synthetic_calibration(model.cfg, seed=GOLDEN_SEED + 100, batch=1)
    inp = qref_input(model, qm, series)
    (out / "input.bin").write_bytes(inp.tobytes())


def qref_input(model, qm, series) -> np.ndarray:
    from cats.quant import qref

    return qref.quantize_input(model.normalise(series)[0].numpy(), qm.input_scale)[0]


def _mutate(data: bytes, **fields: Any) -> bytes:
    msg = pb().ColumnFrame.FromString(data)
    for k, v in fields.items():
        if k == "column_ids":
            del msg.column_ids[:]
            msg.column_ids.extend(v)
        else:
            setattr(msg, k, v)
    return msg.SerializeToString()


def golden_frames(directory: Path) -> list[dict[str, Any]]:
    """Build the golden frame set from the checked-in export in `directory` (no torch: the
    loaded nodes are integer numpy). Returns one description per frame; `expect` is "ok" or
    a rejection reason for the receiver (node GOLDEN_RECEIVER at exchange `at`)."""
    from cats.artefacts import export

    loaded = export.load_partition(directory / "export")
    tag = partition_tag(loaded[0].manifest.partition_hash)
    cfg = loaded[0].spec.cfg
    inp = np.frombuffer((directory / "input.bin").read_bytes(), dtype=np.int8)
    inp = inp.reshape(cfg.tokens, cfg.patch)
    nodes = [n.runtime() for n in loaded]
    for node in nodes:
        node.begin(inp)
    out: list[dict[str, Any]] = []

    def add(name, data, sender, at, expect, mtu, link, columns=None):
        out.append(
            {"name": name, "data": data, "sender": sender, "at": at, "expect": expect,
             "mtu": mtu, "link": link, "columns": columns}
        )  # fmt: skip

    links = (("ieee802154", MTU_IEEE802154), ("ble2m", MTU_BLE2M), ("tiny", 26))
    last = cfg.exchanges - 1
    for e in range(cfg.exchanges):
        if e in (0, 3, last):  # block input, hidden units (another space), the head
            for s in range(1, GOLDEN_NODES):
                for link, mtu in links:
                    if link != "ieee802154" and (e, s) != (0, 1):
                        continue
                    for i, data in enumerate(encode_node(nodes[s], GOLDEN_INFERENCE, tag, mtu)):
                        cols = list(pb().ColumnFrame.FromString(data).column_ids)
                        add(f"e{e}_s{s}_{link}_f{i}", data, s, e, "ok", mtu, link, cols)
            if e == 0:
                base = out[0]["data"]
                own = nodes[0].send()[1]
                pruned = np.setdiff1d(np.arange(*loaded[1].spec.ranges["model"]),
                                      nodes[1].send()[1])  # fmt: skip
                bad = [
                    ("bad_tag", _mutate(base, partition_tag=tag ^ 1), "partition"),
                    ("bad_self", encode_node(nodes[0], GOLDEN_INFERENCE, tag)[0], "self"),
                    ("bad_sender", _mutate(base, sender=GOLDEN_NODES), "sender"),
                    ("bad_stale_inference", _mutate(base, inference_id=GOLDEN_INFERENCE - 1),
                     "stale"),
                    ("bad_future_exchange", _mutate(base, exchange=1), "future"),
                    ("bad_exchange_range", _mutate(base, exchange=cfg.exchanges), "malformed"),
                    ("bad_column_foreign", _mutate(base, column_ids=[int(own[0])] + list(
                        pb().ColumnFrame.FromString(base).column_ids[1:])), "column"),
                    ("bad_column_pruned", _mutate(base, column_ids=[int(pruned[0])] + list(
                        pb().ColumnFrame.FromString(base).column_ids[1:])), "column"),
                    ("bad_column_range", _mutate(base, column_ids=[60000] + list(
                        pb().ColumnFrame.FromString(base).column_ids[1:])), "column"),
                    ("bad_rows", _mutate(base, row_start=1), "malformed"),
                    ("bad_row_count", _mutate(base, row_count=0, payload=b""), "malformed"),
                    ("bad_payload", _mutate(base, payload=pb().ColumnFrame.FromString(base)
                                            .payload[:-1]), "malformed"),
                    ("bad_truncated", base[:-3], "malformed"),
                    ("bad_garbage", bytes(range(7, 7 + 40)), "malformed"),
                    ("bad_oversized", base + bytes(FRAME_MAX + 1 - len(base)), "malformed"),
                ]  # fmt: skip
                for name, data, reason in bad:
                    add(name, data, None, 0, reason, None, None)
        for node in nodes:  # nothing received: every node advances with only its own columns
            node.compute()
    return out


def write_golden(directory: Path, with_export: bool = False) -> None:
    """(Re)write tests/golden/frames: export (optional), NNN_<name>.bin frames, frames.json and
    the line format index.txt the C test reads."""
    directory = Path(directory)
    if with_export:
        write_golden_export(directory)
    frames = golden_frames(directory)
    for old in directory.glob("*.bin"):
        if old.name != "input.bin":
            old.unlink()
    from cats.artefacts import export

    loaded = export.load_partition(directory / "export")
    desc = {
        "about": "SomeGather ColumnFrames encoded by cats.artefacts.frames "
        "(python -m cats.artefacts.frames golden); "
        "receiver node 0 of export/ at exchange `at` must accept (`ok`) or reject them",
        "receiver": GOLDEN_RECEIVER,
        "nodes": GOLDEN_NODES,
        "inference_id": GOLDEN_INFERENCE,
        "partition_tag": partition_tag(loaded[0].manifest.partition_hash),
        "frames": [],
    }
    index = []
    for k, f in enumerate(frames):
        fname = f"{k:03d}_{f['name']}.bin"
        (directory / fname).write_bytes(f["data"])
        entry = {key: f[key] for key in ("sender", "at", "expect", "mtu", "link", "columns")}
        entry.update(file=fname, bytes=len(f["data"]))
        if f["expect"] == "ok":
            msg = pb().ColumnFrame.FromString(f["data"])
            entry.update(fragment=msg.fragment, fragments=msg.fragments,
                         row_start=msg.row_start, row_count=msg.row_count)  # fmt: skip
        desc["frames"].append(entry)
        ok = f["expect"] == "ok"
        fields = [
            fname, f["at"], f["expect"], f["link"] or "-", f["mtu"] or 0,
            -1 if f["sender"] is None else f["sender"],
            entry.get("fragment", -1), entry.get("row_start", -1), entry.get("row_count", -1),
            *(f["columns"] if ok else []),
        ]  # fmt: skip
        index.append(" ".join(str(x) for x in fields))
    (directory / "frames.json").write_text(json.dumps(desc, indent=1) + "\n")
    head = (
        "# cats.artefacts.frames golden index: "
        f"inference {GOLDEN_INFERENCE} receiver {GOLDEN_RECEIVER} nodes {GOLDEN_NODES}\n"
        "# file at expect link mtu sender fragment row_start row_count columns...\n"
    )
    (directory / "index.txt").write_text(head + "\n".join(index) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cats.artefacts.frames", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write the golden frame vectors")
    g.add_argument("directory", type=Path)
    g.add_argument("--export", action="store_true", help="also rewrite the export it uses")
    args = p.parse_args(argv)
    write_golden(args.directory, with_export=args.export)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
