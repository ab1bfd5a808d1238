"""Modelled latency and air bytes per inference of the simulated swarm (`cats sim`), for the
paper's `verytiny` model (untrained export, ``cats.artefacts.export.untrained``) at D = 2, 4, 8, 16
nodes on IEEE 802.15.4 and BLE 2M, SomeGather at pruning ratio p = 0.5 and 0.9 against AllGather
(p = 0: every column crosses the air), next to the physical floor (activation payload bits /
PHY bit rate) and the wall-clock time of the simulation itself.

    .venv/bin/python bench/swarm/run.py --json bench/swarm/results.json
    .venv/bin/python bench/swarm/run.py --nodes 16 --links ieee802154 --ps 0   # one row

Every configuration runs K inferences on default-data test windows through the medium, the C
nodes and the C gateway, and every result is checked bit for bit against ``cats.quant.qref``.
See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cats.artefacts import export
from cats.model.partition import Partition
from cats.model.prune import prune_step
from cats.sim.run import simulate
from cats.sim.swarm import build_executables
from cats.wire import phy as phys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="verytiny")
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--links", nargs="+", default=["ieee802154", "ble2m"])
    p.add_argument("--ps", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    p.add_argument("--inferences", type=int, default=3, help="per configuration")
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="exports (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


def make_export(preset: str, seed: int, nodes: int, p: float, out: Path) -> Path:
    """The untrained preset partitioned for D nodes; p > 0 prunes every node's columns in every
    exchange to its top ceil((1 - p) * own) by the SomeGather ranking (``cats.model.prune``)."""
    if (out / "partition.json").is_file():
        return out
    model, qm = _untrained(preset, seed)
    part = Partition.full(qm.cfg, nodes)
    if p > 0 and nodes > 1:
        prune_step(model, part, p, monotone=False)
    export.export_partition(qm, part, out)
    return out


_MODELS: dict[tuple[str, int], Any] = {}


def _untrained(preset: str, seed: int):
    if (preset, seed) not in _MODELS:
        _MODELS[(preset, seed)] = export.untrained(preset, seed)
    return _MODELS[(preset, seed)]


def row_of(res: dict[str, Any], link: str, p: float) -> dict[str, Any]:
    phy = phys.get(link)
    per = res["per_inference"]
    n = len(per)
    payload = sum(r["payload_bytes"] for r in per) / n
    return {
        "nodes": res["nodes"],
        "link": link,
        "p": p,
        "method": "AllGather" if p == 0 else "SomeGather",
        "pruning_ratio": res["pruning_ratio"],
        "frames": sum(r["frames_sent"] for r in per) / n,
        "payload_bytes": payload,
        "air_bytes": res["air_bytes"],
        "air_bytes_exchanges": res["air_bytes_exchanges"],
        "airtime_ms": res["airtime_s"] * 1e3,
        "compute_ms": res["compute_s"] * 1e3,
        "modelled_latency_ms": res["modelled_latency_s"] * 1e3,
        "floor_ms": payload * 8 / phy.bitrate_bps * 1e3,
        "wall_s_per_inference": res["wall_s_per_inference"],
        "wall_s_startup": res["wall_s_startup"],
        "bit_exact": res["bit_exact"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| D | link | method | p | frames | payload B | air B (all) | air B (exch.) | floor ms "
        "| airtime ms | compute ms | modelled ms | wall s/inf | bit-exact |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r['nodes']} | {r['link']} | {r['method']} | {r['p']:g} | {r['frames']:.0f} "
        f"| {r['payload_bytes']:,.0f} | {r['air_bytes']:,.0f} | {r['air_bytes_exchanges']:,.0f} "
        f"| {r['floor_ms']:.1f} | {r['airtime_ms']:.1f} | {r['compute_ms']:.1f} "
        f"| {r['modelled_latency_ms']:.1f} | {r['wall_s_per_inference']:.3f} "
        f"| {'yes' if r['bit_exact'] else 'NO'} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build_executables()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cats-bench-swarm-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
    rows = []
    t0 = time.monotonic()
    try:
        for d in args.nodes:
            for p in args.ps:
                if d == 1 and p > 0:
                    continue
                exp = make_export(
                    args.preset, args.init_seed, d, p, workdir / f"{args.preset}-d{d}-p{p:g}"
                )
                for link in args.links:
                    res = simulate(
                        exp,
                        link=link,
                        inferences=args.inferences,
                        workdir=workdir / f"run-d{d}-p{p:g}-{link}",
                    )
                    row = row_of(res, link, p)
                    rows.append(row)
                    print(
                        f"D={d:2d} {link:10s} p={p:g}: {row['modelled_latency_ms']:8.1f} ms "
                        f"modelled, {row['air_bytes']:9,.0f} air B, "
                        f"{row['wall_s_per_inference']:.3f} s wall/inference, bit-exact "
                        f"{row['bit_exact']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(table(rows))
    if args.json:
        out = {
            "meta": {
                "preset": args.preset,
                "init_seed": args.init_seed,
                "inferences": args.inferences,
                "host": platform.machine(),
                "python": platform.python_version(),
                "links": {name: phys.get(name).to_dict() for name in args.links},
                "command": "bench/swarm/run.py " + " ".join(argv or sys.argv[1:]),
                "total_wall_s": time.monotonic() - t0,
            },
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
