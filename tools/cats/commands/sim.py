"""`cats sim`: run an exported partition on the simulated swarm (or BabbleSim) and check it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cats.sim import bsim
from cats.sim.attack import MODES
from cats.sim.run import SimOptions, native_sim_nodes, simulate
from cats.wire import phy as phys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="run an export on the simulated swarm (medium + C nodes)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("partition_dir", type=Path, help="export directory (cats export --out)")
    p.add_argument(
        "--backend",
        default="medium",
        choices=("medium", "bsim"),
        help="medium: C nodes on the radio-medium model (default); bsim: the Zephyr firmware "
        "on BabbleSim's 2.4 GHz phy (nrf52_bsim; needs ZEPHYR_BASE, BSIM_OUT_PATH, "
        "BSIM_COMPONENTS_PATH; cats.sim.bsim)",
    )
    p.add_argument(
        "--bsim-attenuation",
        type=float,
        default=None,
        metavar="DB",
        help="bsim: attenuation between all devices (multiatt channel); lossy when high",
    )
    p.add_argument(
        "--bsim-dump",
        action="store_true",
        help="bsim: the phy dumps every frame's start and end (run.dump_dir in the JSON; "
        "bench/swarm/bsim_gaps.py measures the MAC's gaps from it)",
    )
    p.add_argument(
        "--bsim-build",
        type=Path,
        default=None,
        help="bsim: where the nrf52_bsim images are built (default: <partition>/bsim-<link>)",
    )
    p.add_argument(
        "--link",
        default="ieee802154",
        choices=tuple(phys.PHYS),
        help="PHY model of the medium (cats.wire.phy)",
    )
    p.add_argument(
        "--loss",
        action="append",
        default=[],
        help="medium loss model, e.g. paper:0.1 (the paper's: 3 modes, whole messages), "
        "iid:0.1 (per frame), ge:0.05,0.3,0,0.8, cut:0-3/4-7, "
        "die:2@inference=1,exchange=3 (combine with '+'; see cats.sim.loss)",
    )
    p.add_argument("--seed", type=int, default=0, help="loss model seed")
    p.add_argument("--inferences", type=int, default=4, help="test windows to run (K)")
    p.add_argument(
        "--data",
        default=None,
        help="CSV path or 'default' (default: partition.json's data, else default)",
    )
    p.add_argument("--pcap", type=Path, default=None, help="write the air trace (pcap)")
    p.add_argument("--log", type=Path, default=None, help="keep the medium's JSON-lines log")
    p.add_argument("--workdir", type=Path, default=None, help="process logs (default: temp)")
    p.add_argument("--deadline-ms", type=int, default=10000, help="gateway deadline")
    p.add_argument(
        "--slot-timeout",
        type=float,
        default=2.0,
        help="medium slot timeout in seconds (wall clock), for hung nodes",
    )
    p.add_argument(
        "--native-sim",
        action="append",
        default=[],
        metavar="NODE=PATH",
        help="run node NODE as a Zephyr native_sim image of samples/node (zephyr.exe, built "
        "with -DCATS_NODE_ID=NODE of this export) relayed over its PTY; repeatable",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="swarm key (32 hex digits or 16 raw bytes, chmod 600; default: a fresh one)",
    )
    p.add_argument("--mic", type=int, default=8, choices=(4, 8), help="MIC bytes per frame")
    p.add_argument(
        "--mac",
        default=None,
        choices=phys.MAC_CHOICES,
        help="the link's channel access as the firmware chooses it (ieee802154: csma, the "
        "default, or direct = Kconfig CATS_802154_ACCESS_DIRECT; cats.wire.phy.FIRMWARE_MACS)",
    )
    p.add_argument(
        "--attack",
        default=None,
        choices=MODES,
        help="run an unkeyed attacker station in the medium (cats.sim.attack)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.inferences < 1:
        raise ValueError("--inferences must be >= 1")
    try:
        res = _simulate_from_args(args)
    except KeyboardInterrupt:
        print("cats sim: interrupted; the swarm is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    if not args.json and res.get("backend") == "bsim":
        _print_bsim(res)
    elif not args.json:
        print(
            f"{res['partition_dir']}: D={res['nodes']}, {res['link']}, loss {res['loss']}, "
            f"seed {res['seed']}, {res['inferences']} inferences"
            + (f" on {res['dataset']}" if res["dataset"] else "")
        )
        for d, spec in res["external_nodes"].items():
            print(f"  node {d}: {spec}")
        print(f"  bit-exact with cats.quant.qref: {'yes' if res['bit_exact'] else 'NO'}")
        print(
            f"  air bytes / inference: {res['air_bytes']:.0f} "
            f"(exchanges {res['air_bytes_exchanges']:.0f}); {res['frames_sent']} frames sent, "
            f"{res['frames_lost']} of {res['deliveries']} (frame, receiver) deliveries lost"
        )
        print(
            f"  modelled latency: {res['modelled_latency_s'] * 1e3:.1f} ms "
            f"(compute {res['compute_s'] * 1e3:.1f} ms + air {res['airtime_s'] * 1e3:.1f} ms "
            f"with {res['mac']['name']})"
        )
        if res["airtime_floor_ratio"] is not None:
            print(
                f"  airtime / payload floor: {res['airtime_floor_ratio']:.2f}x (floor "
                f"{res['airtime_floor_s'] * 1e3:.1f} ms; back to back without MAC gaps "
                f"{res['airtime_payload_only_s'] * 1e3:.1f} ms)"
            )
        if "mse" in res:
            print(
                f"  MSE {res['mse']:.4f} (qref without loss: {res['reference_mse']:.4f}), "
                f"MAE {res['mae']:.4f}"
            )
        if "accuracy" in res:
            print(f"  accuracy {res['accuracy']:.3f}")
        print(f"  wall: {res['wall_s']:.2f} s ({res['wall_s_per_inference']:.3f} s / inference)")
        if res["degraded"]:
            print(f"  degraded results: {res['degraded']}")
        if "attack" in res:
            a = res["attack"]
            print(
                f"  attack {a['mode']}: {a['attack_frames_sent']} frames sent, "
                f"{a['attack_frames_accepted']} accepted, rejected {a['rejected']}, outputs "
                f"{'CHANGED' if a['outputs_changed'] else 'unchanged'}"
            )
    return res


def _simulate_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "bsim":
        if getattr(args, "attack", None):
            raise ValueError("--attack needs the medium backend (its injector station)")
        if args.loss or args.pcap or args.native_sim:
            raise ValueError("--backend bsim: the phy's channel model makes the losses "
                             "(--bsim-attenuation); --loss, --pcap, --native-sim are the "
                             "medium's")  # fmt: skip
        return bsim.simulate_bsim(
            args.partition_dir,
            link=args.link,
            inferences=args.inferences,
            data=args.data,
            seed=args.seed,
            attenuation_db=args.bsim_attenuation,
            build_dir=args.bsim_build,
            workdir=args.workdir,
            deadline_ms=max(args.deadline_ms, 60000),
            progress=not args.json,
            key_file=getattr(args, "key_file", None),
            mic=getattr(args, "mic", 8),
            mac=getattr(args, "mac", None),
            dump=getattr(args, "bsim_dump", False),
        )
    return simulate(args.partition_dir, sim_options(args))


def sim_options(args: argparse.Namespace) -> SimOptions:
    """The medium backend's options of `cats sim` (and `west cats-sim`)."""
    return SimOptions(
        link=args.link,
        loss=tuple(args.loss or ()),
        seed=args.seed,
        inferences=args.inferences,
        data=args.data,
        pcap=args.pcap,
        log=args.log,
        workdir=args.workdir,
        deadline_ms=args.deadline_ms,
        slot_timeout=args.slot_timeout,
        progress=not args.json,
        external=native_sim_nodes(getattr(args, "native_sim", None) or []),
        key_file=getattr(args, "key_file", None),
        mic=getattr(args, "mic", 8),
        attack=getattr(args, "attack", None),
        mac=getattr(args, "mac", None),
    )


def _print_bsim(res: dict[str, Any]) -> None:
    print(
        f"{res['partition_dir']}: D={res['nodes']}, {res['link']} on BabbleSim "
        f"({res['board']}), loss {res['loss']}, {res['inferences']} inferences"
    )
    print(f"  bit-exact with cats.quant.qref: {'yes' if res['bit_exact'] else 'NO'}")
    print(
        f"  simulated latency: {res['simulated_latency_s'] * 1e3:.1f} ms / inference "
        f"(BabbleSim's clock; the simulated CPU takes no time)"
    )
    med = res.get("medium")
    if med:
        print(
            f"  medium model, same partition: airtime {med['airtime_s'] * 1e3:.1f} ms, "
            f"+ output turns {med['output_turns_s'] * 1e3:.1f} ms, latency "
            f"{med['modelled_latency_s'] * 1e3:.1f} ms (compute {med['compute_s'] * 1e3:.1f} ms); "
            "simulated / modelled radio time "
            f"{res.get('latency_ratio_vs_medium_radio', float('nan')):.2f}x"
        )
    print(
        f"  {res['frames_sent']} ColumnFrames sent, {res['columns_lost']} columns lost, "
        f"{res['degraded']} degraded results; wall {res['run']['wall_s']:.1f} s"
    )
