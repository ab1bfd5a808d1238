"""The MAC's timing as the firmware really runs it: frame and gap statistics from a BabbleSim
phy dump, the measurements behind the constants of ``cats.wire.phy``.

    cats sim build/parts/verytiny-d4 --backend bsim --link ble2m --bsim-dump --json > run.json
    .venv/bin/python bench/swarm/bsim_gaps.py "$(jq -r .run.dump_dir run.json)"

``bs_2G4_phy_v1 -dump`` writes every device's transmissions (``d_2G4_<dev>.Tx.csv``: start and
end in simulated microseconds, modulation, PDU bytes). 802.15.4 frames (O-QPSK) are one
transmission each; a BLE frame is one advertising event: the ADV_EXT_INDs on the primary
channels (LE 1M), the AUX_ADV_IND and any AUX_CHAIN_IND (LE 2M), closer than 1 ms to each other.
Printed per run: the gap between consecutive frames of one sender and at a change of sender
(the ordered turns hand over), and for BLE the event's inner timing (primaries, AuxPtr offset,
T_MAFS before a chain PDU) and the PDU sizes. Gaps over 5 ms are the OutputFrames' turns
(CONFIG_CATS_TURN_FRAME_US) and the gateway's input, listed apart.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MOD_BLE_1M, MOD_BLE_2M, MOD_154 = 16, 32, 256  # the 2G4 phy's modulation codes
EVENT_SPLIT_US = 1000  # transmissions of one BLE advertising event are closer than this
TURN_GAP_US = 5000  # longer gaps: output turns, the gateway's input, the end of an inference


@dataclass
class Frame:
    dev: int
    pdus: list[tuple[int, int, int, int]] = field(default_factory=list)  # start, end, mod, bytes

    @property
    def start(self) -> int:
        return self.pdus[0][0]

    @property
    def end(self) -> int:
        return self.pdus[-1][1]


def read_frames(dump: Path) -> list[Frame]:
    """Every device's transmissions grouped into radio frames, in time order."""
    frames: list[Frame] = []
    for path in sorted(dump.glob("d_2G4_*.Tx.csv")):
        dev = int(path.name.split("_")[2].split(".")[0])
        cur: Frame | None = None
        with path.open() as fh:
            for r in csv.DictReader(fh):
                pdu = (int(r["start_time"]), int(r["end_time"]), int(r["modulation"]),
                       int(r["packet_size"]))  # fmt: skip
                ble = pdu[2] in (MOD_BLE_1M, MOD_BLE_2M)
                if cur is None or not ble or pdu[0] - cur.end > EVENT_SPLIT_US:
                    cur = Frame(dev)
                    frames.append(cur)
                cur.pdus.append(pdu)
    if not frames:
        raise SystemExit(f"{dump}: no d_2G4_*.Tx.csv (run cats sim --backend bsim --bsim-dump)")
    return sorted(frames, key=lambda f: f.start)


def stats(v: list[int]) -> str:
    if not v:
        return "-"
    s = sorted(v)
    return (f"{len(s)} | {statistics.mean(s):.0f} | {s[len(s) // 2]} | {s[len(s) // 10]} "
            f"| {s[9 * len(s) // 10]} | {s[0]} | {s[-1]}")  # fmt: skip


def report(frames: list[Frame]) -> str:
    same: list[int] = []
    handover: list[int] = []
    turns: list[int] = []
    for a, b in zip(frames, frames[1:], strict=False):
        gap = b.start - a.end
        if gap > TURN_GAP_US:
            turns.append(gap)
        else:
            (same if a.dev == b.dev else handover).append(gap)
    out = [
        f"{len(frames)} frames, {frames[-1].end - frames[0].start} us from the first to the last",
        "",
        "| gap (us) | n | mean | median | p10 | p90 | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| frame to frame, same sender | {stats(same)} |",
        f"| frame to frame, next sender | {stats(handover)} |",
        f"| over {TURN_GAP_US} us (turns, input) | {stats(turns)} |",
    ]
    ble = [f for f in frames if f.pdus[0][2] == MOD_BLE_1M]
    if ble:
        prim_gap, aux_off, chain_gap = [], [], []
        for f in ble:
            prim = [p for p in f.pdus if p[2] == MOD_BLE_1M]
            sec = [p for p in f.pdus if p[2] == MOD_BLE_2M]
            prim_gap += [b[0] - a[1] for a, b in zip(prim, prim[1:], strict=False)]
            if sec:
                aux_off.append(sec[0][0] - prim[-1][1])
                chain_gap += [b[0] - a[1] for a, b in zip(sec, sec[1:], strict=False)]
        sizes = Counter(tuple(p[3] for p in f.pdus if p[2] == MOD_BLE_2M) for f in ble)
        out += [
            f"| between ADV_EXT_INDs | {stats(prim_gap)} |",
            f"| last ADV_EXT_IND end to AUX_ADV_IND | {stats(aux_off)} |",
            f"| AUX_ADV_IND end to AUX_CHAIN_IND | {stats(chain_gap)} |",
            "",
            "LE 2M PDUs per event (bytes incl. header and CRC: count): "
            + ", ".join(f"{list(k)}: {n}" for k, n in sizes.most_common(8)),
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump_dir", type=Path, help="$BSIM_OUT_PATH/results/<sim_id> of the run")
    args = ap.parse_args(argv)
    print(report(read_frames(args.dump_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
