"""SomeGather ColumnFrames (format v2, the lean header): the frame plan, encoding and checked
decoding.

This is the Python mirror of ``cats_zephyr_module/src/core/somegather.c``; both implement the
same rule, byte for byte, and ``tests/test_frames.py`` holds them to it (golden vectors in
``tests/golden/frames``).

A v2 frame carries inference id (low 16 bits), exchange, fragment and the payload, nothing else
(proto/cats.proto ``ColumnFrame``): the sender is the link-layer source (the MIC's nonce binds
it), the partition tag is in the MIC's AAD, and the frame's columns and rows follow from the
frame plan, which the receiver computes like the sender (``plan``):

* the sender's kept columns of the exchange, ascending (a receiver: its held columns owned by
  the sender; held = own + every other node's kept columns);
* a fixed header budget (``header_budget``): inference id 4 (tag + the varint of 0xFFFF), the
  exchange field, fragment 3 (tag + 2-byte varint: at most ``MAX_FRAGMENTS`` frames);
  ``payload_room`` P = the largest payload whose field fits the rest of the MTU;
* k = P // rows whole columns per frame (frame f: columns [f k, (f+1) k) of the list), or, when
  a column is taller than a frame (k = 0), ceil(rows / P) frames of P rows per column.

On 802.15.4 with an 8-byte MIC (mtu 107 = 116 - AirType 1 - MIC 8) the header takes 9 bytes
and P = 96: three columns of 32 rows per frame.

Receiving checks, in this order (the reason names are the C counters ``rejected_<reason>``):

``malformed``  does not parse (``parse``: a known field with the wrong wire type, a header
               varint beyond 32 bits, a truncated field), oversized, no payload, exchange index
               not in the partition;
``sender``     link source >= nodes;
``self``       our own id as link source;
``stale``      another inference id, or an exchange before the current one (or the node idle);
``future``     an exchange after the current one;
``malformed``  (again) the fragment is not in the sender's plan, or the payload is not its size.
A frame passing all checks is accepted; columns already complete are ``duplicates`` (counted,
not stored again). ``partition`` and ``column`` are not used since v2 (kept in the counters).
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

from cats.model.partition import Plan
from cats.wire import auth, phy
from cats.wire.proto import pb

# Link MTUs for one encoded ColumnFrame: the radio frame less its AirType dispatch byte
# (derivations in cats.wire.phy): 115 on 802.15.4, 240 on BLE 2M. The runtime plans for this
# less the MIC (cats_runner: 107 on 802.15.4 with the default 8-byte MIC).
MTU_IEEE802154 = phy.IEEE802154.column_mtu
MTU_BLE2M = phy.BLE2M.column_mtu
MIC_DEFAULT = auth.MIC_DEFAULT  # CATS_AUTH_MIC_DEFAULT

# Field numbers of ColumnFrame v2 (proto/cats.proto; 1-10 are v1's, reserved).
F_INFERENCE, F_EXCHANGE, F_FRAGMENT, F_PAYLOAD = 11, 12, 13, 14

FRAME_MAX = 255  # longest frame a node accepts (also the largest MTU it encodes for)
INFERENCE_ID_MASK = 0xFFFF  # inference ids go on the air modulo 2^16
INFERENCE_BUDGET = 4  # tag + the 3-byte varint of 0xFFFF
FRAGMENT_BUDGET = 3  # tag + a 2-byte varint
MAX_FRAGMENTS = 0x4000  # fragments 0 .. 16383 fit FRAGMENT_BUDGET

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
    """Bytes of a length-delimited field of n bytes (tag, length, data)."""
    return 1 + varint_len(n) + n


def header_budget(exchange: int) -> int:
    """Bytes a frame of `exchange` may spend besides the payload field, at most."""
    return INFERENCE_BUDGET + _scalar(exchange) + FRAGMENT_BUDGET


def payload_room(exchange: int, mtu: int) -> int:
    """P: payload bytes per frame of `exchange` within `mtu`; ValueError when not one fits."""
    room = mtu - header_budget(exchange)
    if room < 3:
        raise ValueError(f"MTU {mtu} cannot carry one row")
    p = room - 2
    while p > 0 and _delimited(p) > room:
        p -= 1
    return p


def frame_len(inference_id: int, exchange: int, fragment: int, payload: int) -> int:
    """Exact encoded length of a ColumnFrame."""
    return (
        _scalar(inference_id & INFERENCE_ID_MASK)
        + _scalar(exchange)
        + _scalar(fragment)
        + _delimited(payload)
    )


# ----------------------------------------------------------------------------------------------
# The frame plan
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePlan:
    """One ColumnFrame: rows [row_start, row_stop) of each column in column_ids (column after
    column in the payload) and its budgeted encoded length (an upper bound of the real one:
    inference id 0xFFFF)."""

    fragment: int
    column_ids: tuple[int, ...]
    row_start: int
    row_stop: int
    payload_bytes: int
    encoded_len: int

    @property
    def row_count(self) -> int:
        return self.row_stop - self.row_start


@lru_cache(maxsize=4096)
def _plan(exchange: int, ids: tuple[int, ...], rows: int, mtu: int) -> tuple[FramePlan, ...]:
    n = len(ids)
    if rows < 1 or n == 0:
        return ()
    p = payload_room(exchange, mtu)
    per = p // rows
    out: list[FramePlan] = []
    if per > 0:
        for f in range((n + per - 1) // per):
            cols = ids[f * per : (f + 1) * per]
            size = len(cols) * rows
            out.append(
                FramePlan(f, cols, 0, rows, size, frame_len(INFERENCE_ID_MASK, exchange, f, size))
            )
    else:
        q = (rows + p - 1) // p
        for f in range(n * q):
            r0 = (f % q) * p
            r1 = min(rows, r0 + p)
            size = r1 - r0
            out.append(
                FramePlan(
                    f, (ids[f // q],), r0, r1, size,
                    frame_len(INFERENCE_ID_MASK, exchange, f, size),
                )
            )  # fmt: skip
    if len(out) > MAX_FRAGMENTS:
        raise ValueError(f"{len(out)} frames > {MAX_FRAGMENTS}")
    return tuple(out)


def plan(exchange: int, column_ids: Iterable[int], rows: int, mtu: int) -> list[FramePlan]:
    """Cut one sender's kept columns (ascending) of one exchange into frames of at most `mtu`
    bytes (the rule in the module docstring). Empty for no columns or no rows; ValueError when
    the MTU cannot carry one row or the plan needs more than MAX_FRAGMENTS frames."""
    return list(_plan(int(exchange), tuple(int(c) for c in column_ids), int(rows), int(mtu)))


SwarmPlan = dict[tuple[int, int], list[FramePlan]]  # (exchange, sender) -> its frames


def swarm_plan(manifests: Sequence[Any], mtu: int) -> SwarmPlan:
    """Every node's frames of every exchange from the nodes' NodeManifests (kept_cols, rows):
    what a sniffer or the medium needs to read a v2 frame's columns and rows."""
    out: SwarmPlan = {}
    alone = len(manifests) < 2
    for m in manifests:
        for ex in m.exchanges:
            kept = [] if alone else [int(c) for c in ex.kept_cols]
            out[int(ex.index), int(m.node_id)] = plan(int(ex.index), kept, int(ex.rows), mtu)
    return out


def load_swarm_plan(export_dir: Path, mtu: int) -> SwarmPlan:
    """swarm_plan of an export directory (node-<d>/manifest.pb)."""
    manifests = []
    for d in sorted(Path(export_dir).glob("node-*/manifest.pb")):
        manifests.append(pb().NodeManifest.FromString(d.read_bytes()))
    if not manifests:
        raise ValueError(f"no node-*/manifest.pb in {export_dir}")
    return swarm_plan(manifests, mtu)


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------


def partition_tag(partition_hash: bytes) -> int:
    """The 32-bit partition tag (the MIC's AAD): the partition hash's first 4 bytes, LE."""
    if len(partition_hash) < 4:
        raise ValueError("partition hash must have at least 4 bytes")
    return int.from_bytes(partition_hash[:4], "little")


def encode_plan(
    frames: Sequence[FramePlan],
    exchange: int,
    values: dict[int, np.ndarray],
    inference_id: int,
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
            fragment=fp.fragment,
            payload=payload,
        )
        data = msg.SerializeToString()
        if len(data) > fp.encoded_len:  # pragma: no cover - the budget is an upper bound
            raise AssertionError(f"frame {fp.fragment}: {len(data)} > {fp.encoded_len} bytes")
        out.append(data)
    return out


def encode_exchange(
    exchange: int,
    column_ids: Sequence[int],
    values: np.ndarray,
    *,
    mtu: int = MTU_IEEE802154,
    inference_id: int = 0,
) -> list[bytes]:
    """All frames of one sender's exchange. values: int8 (rows, len(column_ids)), the layout
    ``qref.Node.send`` returns."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(column_ids):
        raise ValueError(f"values must be (rows, {len(column_ids)}), got {values.shape}")
    if not 1 <= mtu <= FRAME_MAX:
        raise ValueError(f"MTU must be in 1..{FRAME_MAX}, not {mtu}")
    cols = {int(c): values[:, j] for j, c in enumerate(column_ids)}
    frames = plan(exchange, column_ids, values.shape[0], mtu)
    return encode_plan(frames, exchange, cols, inference_id)


def encode_node(node, inference_id: int, mtu: int = MTU_IEEE802154) -> list[bytes]:
    """Frames a ``qref.Node`` broadcasts in its current exchange (none when it is alone)."""
    if node.spec.nodes == 1:
        return []
    e, cols, vals = node.send()
    return encode_exchange(e, cols, vals, mtu=mtu, inference_id=inference_id)


# ----------------------------------------------------------------------------------------------
# Decoding and checks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A parsed ColumnFrame; column_ids / row_start / row_count are filled from the sender's plan
    once checked against a receiver (``decode`` with `rx`)."""

    inference_id: int
    exchange: int
    fragment: int
    payload: bytes
    sender: int = -1
    column_ids: tuple[int, ...] = ()
    row_start: int = 0
    row_count: int = 0


def parse(data: bytes) -> Frame:
    """Parse a ColumnFrame as the node does, with the air-frame header scanner
    (``cats.wire.auth.header``, somegather.c: ``cats_auth_header``): the four fields (proto3:
    absent = 0, the last occurrence wins), other fields skipped by wire type.
    FrameError("malformed") otherwise."""
    try:
        h = auth.header(auth.AIR_COLUMN, bytes(data))
    except auth.AuthError as exc:
        raise FrameError("malformed", str(exc)) from None
    return Frame(h.inference, h.exchange, h.fragment, h.payload or b"")


@dataclass(frozen=True)
class RxContext:
    """What a receiver checks a frame against (the C engine reads it from its cats_node)."""

    node: int
    nodes: int
    inference_id: int
    exchange: int  # the receiver's current exchange; -1 when idle
    rows: tuple[int, ...]  # per exchange of the partition
    spaces: tuple[str, ...]  # per exchange
    held: tuple[np.ndarray, ...]  # per exchange: the receiver's held column ids (sorted)
    owner: dict[str, np.ndarray]  # space -> owner node of each column
    mtu: int = MTU_IEEE802154  # the swarm's ColumnFrame MTU (the senders' plans)

    @classmethod
    def for_node(cls, node, inference_id: int, mtu: int = MTU_IEEE802154) -> RxContext:
        """Context of a ``qref.Node`` at its current exchange (-1 once it has finished)."""
        spec = node.spec
        exs = spec.exchanges
        return cls(
            spec.node,
            spec.nodes,
            inference_id,
            node.e if node.e < len(exs) else -1,
            tuple(ex.rows for ex in exs),
            tuple(ex.space for ex in exs),
            tuple(ex.held_cols for ex in exs),
            _owners(spec.cfg, spec.nodes),
            mtu,
        )

    def sender_kept(self, exchange: int, sender: int) -> tuple[int, ...]:
        """The sender's kept columns of `exchange`: the held ones it owns (ascending)."""
        held = self.held[exchange]
        owner = self.owner[self.spaces[exchange]]
        return tuple(int(c) for c in held[owner[held] == sender])


@lru_cache(maxsize=64)
def _owners(cfg, nodes: int) -> dict[str, np.ndarray]:
    plan = Plan.build(cfg, nodes)
    return {sp: plan.owner(sp) for sp in ("model", "hidden", "output")}


def decode(data: bytes, sender: int = -1, rx: RxContext | None = None) -> Frame:
    """Parse one frame from link source `sender`; FrameError names the reason it is refused.
    The structural checks always run, the ones needing a receiver (and the plan's columns and
    rows) only with `rx`."""
    if not 0 < len(data) <= FRAME_MAX:
        raise FrameError("malformed", f"{len(data)} bytes")
    msg = parse(data)
    if not msg.payload:
        raise FrameError("malformed", "no payload")
    msg = dataclasses.replace(msg, sender=sender)
    return check(msg, rx) if rx is not None else msg


def check(msg: Frame, rx: RxContext) -> Frame:
    """The receiver-side checks of a parsed frame, in the C engine's order; returns the frame
    with its columns and rows from the sender's plan."""
    if msg.exchange >= len(rx.rows):
        raise FrameError("malformed", f"exchange {msg.exchange} not in the partition")
    if not 0 <= msg.sender < rx.nodes:
        raise FrameError("sender", f"source {msg.sender} of {rx.nodes} nodes")
    if msg.sender == rx.node:
        raise FrameError("self")
    if msg.inference_id != rx.inference_id & INFERENCE_ID_MASK:
        raise FrameError("stale", f"inference {msg.inference_id}")
    if rx.exchange < 0 or msg.exchange < rx.exchange:
        raise FrameError("stale", f"exchange {msg.exchange}, node at {rx.exchange}")
    if msg.exchange > rx.exchange:
        raise FrameError("future", f"exchange {msg.exchange}, node at {rx.exchange}")
    kept = rx.sender_kept(msg.exchange, msg.sender)
    try:
        frames = plan(msg.exchange, kept, rx.rows[msg.exchange], rx.mtu)
    except ValueError as exc:
        raise FrameError("malformed", str(exc)) from None
    if msg.fragment >= len(frames):
        raise FrameError("malformed", f"fragment {msg.fragment} of {len(frames)}")
    fp = frames[msg.fragment]
    if len(msg.payload) != fp.payload_bytes:
        raise FrameError("malformed", f"payload {len(msg.payload)} != {fp.payload_bytes}")
    return dataclasses.replace(
        msg, column_ids=fp.column_ids, row_start=fp.row_start, row_count=fp.row_count
    )


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

    def __init__(self, node, mtu: int = MTU_IEEE802154) -> None:
        self.node = node
        self.mtu = mtu
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
        return RxContext.for_node(self.node, self.inference_id, self.mtu)

    def outgoing(self) -> list[bytes]:
        frames = encode_node(self.node, self.inference_id, self.mtu)
        self.stats.frames_sent += len(frames)
        return frames

    def receive(self, data: bytes, sender: int) -> bool:
        """True when accepted (also when it only repeats complete columns)."""
        try:
            msg = decode(data, sender, self.context())
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
) -> tuple[np.ndarray, dict[int, dict[int, set[int]]]]:
    """One inference over frames: every node encodes its frames, each receiver decodes those not
    dropped. Returns the output and, per exchange and receiver, the columns it lost."""
    for r in receivers:
        r.begin(inference_id, inp)
    lost: dict[int, dict[int, set[int]]] = {}
    for e in range(receivers[0].node.cfg.exchanges):
        sent = [r.outgoing() for r in receivers]
        lost[e] = {d: set() for d in range(len(receivers))}
        for s, frames in enumerate(sent):
            for i, data in enumerate(frames):
                for d, r in enumerate(receivers):
                    if d == s:
                        continue
                    if drop is not None and drop(e, s, i, d):
                        lost[e][d].update(decode(data, s, r.context()).column_ids)
                    else:
                        r.receive(data, s)
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
        setattr(msg, k, v)
    return msg.SerializeToString()


# The golden links: (name, ColumnFrame MTU). The runtime's: the radio frame less the AirType byte
# and the default 8-byte MIC (802.15.4: 107, BLE 2M: 232), and a tiny one that splits columns.
GOLDEN_LINKS = (
    ("ieee802154", MTU_IEEE802154 - MIC_DEFAULT),
    ("ble2m", MTU_BLE2M - MIC_DEFAULT),
    ("tiny", 26),
)


def golden_frames(directory: Path) -> list[dict[str, Any]]:
    """Build the golden frame set from the checked-in export in `directory` (no torch: the
    loaded nodes are integer numpy). Returns one description per frame; `expect` is "ok" or
    a rejection reason for the receiver (node GOLDEN_RECEIVER at exchange `at`) when the frame
    comes from link source `sender` on a link of `mtu`."""
    from cats.artefacts import export

    loaded = export.load_partition(directory / "export")
    cfg = loaded[0].spec.cfg
    inp = np.frombuffer((directory / "input.bin").read_bytes(), dtype=np.int8)
    inp = inp.reshape(cfg.tokens, cfg.input_width)
    nodes = [n.runtime() for n in loaded]
    for node in nodes:
        node.begin(inp)
    out: list[dict[str, Any]] = []

    def add(name, data, sender, at, expect, mtu, link, columns=None, rows=None):
        out.append(
            {"name": name, "data": data, "sender": sender, "at": at, "expect": expect,
             "mtu": mtu, "link": link, "columns": columns, "rows": rows}
        )  # fmt: skip

    mtu154 = GOLDEN_LINKS[0][1]
    last = cfg.exchanges - 1
    for e in range(cfg.exchanges):
        if e in (0, 3, last):  # block input, hidden units (another space), the head
            for s in range(1, GOLDEN_NODES):
                for link, mtu in GOLDEN_LINKS:
                    if link != "ieee802154" and (e, s) != (0, 1):
                        continue
                    _, cols, vals = nodes[s].send()
                    fps = plan(e, cols, vals.shape[0], mtu)
                    data = encode_node(nodes[s], GOLDEN_INFERENCE, mtu)
                    for i, (fp, d) in enumerate(zip(fps, data, strict=True)):
                        add(f"e{e}_s{s}_{link}_f{i}", d, s, e, "ok", mtu, link,
                            list(fp.column_ids), (fp.row_start, fp.row_count))  # fmt: skip
            if e == 0:
                base = out[0]["data"]
                count = sum(1 for f in out if f["sender"] == 1 and f["link"] == "ieee802154")
                # a v1 frame (inference, exchange, sender, fragment(s), tag, ids, payload, rows)
                v1 = bytes.fromhex("08b424100118012002280335010203043a0102420201015002")
                bad = [
                    ("bad_self", encode_node(nodes[0], GOLDEN_INFERENCE, mtu154)[0], 0, "self"),
                    ("bad_sender", base, GOLDEN_NODES, "sender"),
                    ("bad_stale_inference", _mutate(base, inference_id=GOLDEN_INFERENCE - 1), 1,
                     "stale"),
                    ("bad_future_exchange", _mutate(base, exchange=1), 1, "future"),
                    ("bad_exchange_range", _mutate(base, exchange=cfg.exchanges), 1,
                     "malformed"),
                    ("bad_fragment", _mutate(base, fragment=count), 1, "malformed"),
                    ("bad_other_sender_plan", base, 3, "malformed"),
                    ("bad_payload", _mutate(base, payload=pb().ColumnFrame.FromString(base)
                                            .payload[:-1]), 1, "malformed"),
                    ("bad_no_payload", _mutate(base, payload=b""), 1, "malformed"),
                    ("bad_v1", v1, 1, "malformed"),
                    ("bad_wire_type", bytes([F_INFERENCE << 3 | 2, 1, 0]) + base, 1,
                     "malformed"),
                    ("bad_truncated", base[:-3], 1, "malformed"),
                    ("bad_garbage", bytes(range(7, 7 + 40)), 1, "malformed"),
                    ("bad_oversized", base + bytes(FRAME_MAX + 1 - len(base)), 1, "malformed"),
                ]  # fmt: skip
                for name, data, sender, reason in bad:
                    add(name, data, sender, 0, reason, mtu154, "ieee802154")
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
    desc = {
        "about": "SomeGather ColumnFrames (format v2) encoded by cats.artefacts.frames "
        "(python -m cats.artefacts.frames golden); "
        "receiver node 0 of export/ at exchange `at` must accept (`ok`) or reject them "
        "when they come from link source `sender` on a link of ColumnFrame MTU `mtu`",
        "receiver": GOLDEN_RECEIVER,
        "nodes": GOLDEN_NODES,
        "inference_id": GOLDEN_INFERENCE,
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
            entry.update(fragment=msg.fragment, row_start=f["rows"][0], row_count=f["rows"][1])
        desc["frames"].append(entry)
        ok = f["expect"] == "ok"
        fields = [
            fname, f["at"], f["expect"], f["link"], f["mtu"], f["sender"],
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
