"""Re-run an inference of the simulated swarm in the integer reference with exactly the columns
the medium did not deliver, and read the medium's log for it.

``replay(nodes, inp, lost)`` drives ``qref.Node``s exchange by exchange like
``qref.run_swarm``, but every receiver gets only the columns it actually received: in
exchange e, receiver r gets each other node's kept columns minus ``lost[e][r]``
(``qref.Node.receive`` with a per-receiver subset). ``lost_columns`` rebuilds ``lost`` for one
inference from the medium's JSON-lines log: a column reached receiver r when the frames of
its sender that the medium put on the air in that exchange's slot (``slot`` records) cover all
its rows and none of them was dropped for r (``drop`` records). Columns of a sender that sent
nothing (dead, hung, never reached that exchange) are lost for everyone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cats.quant import qref

Lost = dict[int, dict[int, set[int]]]  # exchange -> receiver -> column ids it did not get


def replay(
    nodes: list[qref.Node],
    inp: np.ndarray,
    lost: Lost | None = None,
    missing: Iterable[int] = (),
) -> np.ndarray:
    """The int8 output (outputs,) the reference computes when receiver r misses the columns
    lost[e][r] of exchange e; the output slices of the `missing` nodes (no result) are zero."""
    lost = lost or {}
    for node in nodes:
        node.begin(inp)
    for e in range(nodes[0].cfg.exchanges):
        sent = [node.send() for node in nodes]
        for r, node in enumerate(nodes):
            gone = lost.get(e, {}).get(r, set())
            for s, (ex, cols, vals) in enumerate(sent):
                if s == r:
                    continue
                if gone:
                    keep = np.array([c not in gone for c in cols.tolist()], dtype=bool)
                    if not keep.any():
                        continue
                    node.receive(ex, cols[keep], np.ascontiguousarray(vals[..., keep]))
                else:
                    node.receive(ex, cols, vals)
        for node in nodes:
            node.compute()
    parts = []
    skip = set(missing)
    for d, node in enumerate(nodes):
        y = node.y
        assert y is not None
        parts.append(np.zeros_like(y) if d in skip else y)
    return np.concatenate(parts, axis=-1)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The medium's log records (a torn last line, from a killed medium, is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def inference_records(records: list[dict[str, Any]], inference_id: int) -> list[dict[str, Any]]:
    """The records of the last inference with this air id (ids may repeat after a gateway
    restart: the one with the highest ordinal wins)."""
    iid = inference_id & 0xFFFF
    ords = [
        r["ordinal"] for r in records if r.get("event") == "inference" and r["inference"] == iid
    ]
    if not ords:
        return []
    last = max(ords)
    return [r for r in records if r.get("inference") == iid and r.get("ordinal") == last]


def lost_columns(specs: list[qref.NodeSpec], records: list[dict[str, Any]]) -> Lost:
    """``lost`` of one inference (its records, see ``inference_records``)."""
    slots = {r["exchange"]: r for r in records if r.get("event") == "slot"}
    drops: dict[tuple[int, int, int], set[int]] = defaultdict(set)  # (e, s, r) -> fragments
    for r in records:
        if r.get("event") == "drop":
            drops[(r["exchange"], r["sender"], r["receiver"])].add(r["fragment"])
    lost: Lost = {}
    n_nodes = len(specs)
    for e in range(len(specs[0].exchanges)):
        slot = slots.get(e)
        frames = slot["frames"] if slot else []
        by_sender: dict[int, list[list[Any]]] = defaultdict(list)
        for f in frames:
            by_sender[f[0]].append(f)
        lost[e] = {}
        for r in range(n_nodes):
            gone: set[int] = set()
            for s in range(n_nodes):
                if s == r:
                    continue
                ex = specs[s].exchanges[e]
                rows = ex.rows
                dropped = drops.get((e, s, r), set())
                got: dict[int, np.ndarray] = {}
                for _, frag, row_start, row_count, cols in by_sender.get(s, []):
                    if frag in dropped:
                        continue
                    for c in cols:
                        cover = got.setdefault(c, np.zeros(rows, dtype=bool))
                        cover[row_start : row_start + row_count] = True
                for c in ex.kept_cols.tolist():
                    if c not in got or not got[c].all():
                        gone.add(int(c))
            if gone:
                lost[e][r] = gone
    return lost
