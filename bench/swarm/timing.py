"""Honest timing of the simulated swarm: airtime with the links' MAC against the payload floor,
frames per inference, the MIC's overhead, and a node's instruction breakdown on the M4.

    .venv/bin/python bench/swarm/timing.py --json bench/swarm/timing.json
    .venv/bin/python bench/swarm/timing.py --nodes 8 --links ieee802154 --no-sim   # planned only
    .venv/bin/python bench/swarm/timing.py --profile build/m4/cats_m4_node_qemu.elf  # re-profile

Per (link, D) of the untrained ``verytiny`` export at p = 0:

* the run (``cats sim``, loss-free, seed 0), once per channel access the firmware offers on the
  link (``cats.wire.phy.FIRMWARE_MACS``: 802.15.4 ``csma``, the default, and ``direct``,
  Kconfig CATS_802154_ACCESS_DIRECT; ``cats sim --mac``): frames per inference, the payload
  floor (int8 input, exchanged columns and output at the link's bit rate), the airtime back to back
  (``airtime_payload_only_s``), the airtime with the MAC the firmware uses (``airtime_s``),
  their ratio to the floor (``airtime_floor_ratio``), and the idle time of the output turns
  (``output_turns_s``: the OutputFrames spaced by CONFIG_CATS_TURN_FRAME_US);
* the exchanges' frames as the code plans them (``cats.artefacts.frames.plan``, the C engine's rule)
  for a MIC of 0, 4 and 8 bytes per frame (planned at ``column_mtu - MIC`` so that the MIC
  fits, each frame MIC bytes longer on the air), each under every MAC model of the link
  (``cats.wire.phy.MAC_VARIANTS``): frames, MIC bytes per inference, exchange airtime and its
  ratio to the exchanges' payload floor. Part A's authenticated frames plug in here through
  ``cats.artefacts.frames``; nothing is hard-coded but the MIC length.

The instruction breakdown is ``bench/swarm/m4_profile.json`` (``cats.sim.m4profile``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from cats.artefacts import export, frames
from cats.sim import m4profile
from cats.wire import phy as phys

HERE = Path(__file__).resolve().parent
PROFILE = HERE / "m4_profile.json"
MICS = (0, 4, 8)


def planned(specs: list[Any], link: phys.Phy, mic: int) -> dict[str, Any]:
    """The exchanges of one inference as planned frames with a `mic`-byte MIC per frame, under
    every MAC model of `link`."""
    n_frames = payload = 0
    by_exchange: list[dict[int, list[int]]] = []
    for e in range(len(specs[0].exchanges)):
        senders: dict[int, list[int]] = {}
        for s, spec in enumerate(specs):
            ex = spec.exchanges[e]
            if len(specs) < 2 or not len(ex.kept_cols):
                continue
            plan = frames.plan(e, [int(c) for c in ex.kept_cols], int(ex.rows),
                               link.column_mtu - mic)  # fmt: skip
            senders[s] = [phys.AIR_TYPE_BYTES + fp.encoded_len + mic for fp in plan]
            n_frames += len(plan)
            payload += sum(fp.payload_bytes for fp in plan)
        by_exchange.append(senders)
    floor_s = link.floor_us(payload) / 1e6
    macs = {}
    for mac in phys.MAC_VARIANTS[link.name]:
        variant = dataclasses.replace(link, mac=mac)
        t = sum(variant.schedule_us(sx) for sx in by_exchange) / 1e6
        macs[mac.name] = {"airtime_s": t, "floor_ratio": t / floor_s if floor_s else None}
    return {
        "mic": mic,
        "frames": n_frames,
        "payload_bytes": payload,
        "mic_bytes": mic * n_frames,
        "floor_s": floor_s,
        "mac": macs,
    }


def run_row(part: Path, link: str, nodes: int, sim: bool, mac: str | None = None) -> dict[str, Any]:
    """One (link, D, channel access) row; the planned frames under every MAC model of the
    link (the same for every `mac`)."""
    specs = [n.spec for n in export.load_partition(part)]
    phy = phys.get(link, mac)
    row: dict[str, Any] = {
        "link": link,
        "nodes": nodes,
        "mac_mode": mac or next(iter(phys.FIRMWARE_MACS[link])),
        "mac": phy.mac.name,
        "planned": [planned(specs, phy, m) for m in MICS],
    }
    if sim:
        from cats.sim.run import simulate

        res = simulate(part, link=link, inferences=1, seed=0, mac=mac)
        per = res["per_inference"][0]
        row["sim"] = {
            "bit_exact": res["bit_exact"],
            "frames": per["frames_sent"],
            "air_bytes": per["air_bytes"],
            "floor_s": res["airtime_floor_s"],
            "airtime_payload_only_s": res["airtime_payload_only_s"],
            "airtime_s": res["airtime_s"],
            "airtime_floor_ratio": res["airtime_floor_ratio"],
            "output_turns_s": res["output_turns_s"],
            "compute_s": res["compute_s"],
            "compute_s_matmul_only": res["compute"]["compute_s_matmul_only"],
            "modelled_latency_s": res["modelled_latency_s"],
        }
    return row


def airtime_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| link | D | MAC mode | frames/inf | floor s | back to back s | MAC airtime s | ratio "
        "| + output turns s | MAC |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r.get("sim")
        if s:
            out.append(
                f"| {r['link']} | {r['nodes']} | {r['mac_mode']} | {s['frames']} "
                f"| {s['floor_s']:.3f} "
                f"| {s['airtime_payload_only_s']:.3f} | {s['airtime_s']:.3f} "
                f"| {s['airtime_floor_ratio']:.2f}x | {s['output_turns_s']:.3f} | {r['mac']} |"
            )
    return "\n".join(out)


def mic_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| link | D | MIC B | frames | MIC B/inf | floor s | MAC model | airtime s | ratio |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        if r["mac_mode"] != next(iter(phys.FIRMWARE_MACS[r["link"]])):
            continue  # the planned frames do not depend on the channel access
        for p in r["planned"]:
            for name, m in p["mac"].items():
                out.append(
                    f"| {r['link']} | {r['nodes']} | {p['mic']} | {p['frames']} "
                    f"| {p['mic_bytes']:,} | {p['floor_s']:.3f} | {name} "
                    f"| {m['airtime_s']:.3f} | {m['floor_ratio']:.2f}x |"
                )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[4, 8])
    p.add_argument("--links", nargs="+", default=["ieee802154", "ble2m"])
    p.add_argument("--no-sim", action="store_true", help="planned frames only (no swarm run)")
    p.add_argument("--profile", type=Path, default=None, help="re-profile this M4 image")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.profile is not None:
        prof = m4profile.profile(args.profile)
        PROFILE.write_text(json.dumps(prof, indent=1) + "\n")
    prof = json.loads(PROFILE.read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="cats-bench-timing-") as tmp:
        for d in args.nodes:
            part = Path(tmp) / f"verytiny-d{d}"
            _, qm = export.untrained("verytiny", 0)
            from cats.model.partition import Partition

            export.export_partition(qm, Partition.full(qm.cfg, d), part)
            for link in args.links:
                for mac in phys.FIRMWARE_MACS[link]:
                    rows.append(run_row(part, link, d, not args.no_sim, mac))
                    print(f"D={d} {link} {mac}: done", file=sys.stderr, flush=True)
    if not args.no_sim:
        print("Airtime per inference (cats sim, verytiny, p = 0, loss-free, seed 0):\n")
        print(airtime_table(rows) + "\n")
    print("Exchanges as planned, by MIC length and MAC model:\n")
    print(mic_table(rows) + "\n")
    print("Node 0 of verytiny D = 8, one inference on the M4 image (cats.sim.m4profile):\n")
    print(m4profile.format_table(prof))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "profile": prof}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
