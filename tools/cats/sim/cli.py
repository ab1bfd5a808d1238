"""`cats sim`: run inferences of an exported partition on the simulated swarm and check them.

    cats sim <partition-dir> [--link ieee802154|ble2m|ble2m-aux] [--loss SPEC] [--seed S]
             [--inferences K] [--data default|CSV] [--pcap FILE] [--log FILE] [--json]
             [--native-sim NODE=PATH ...] [--key-file FILE] [--mic 4|8]
             [--attack forge|replay|tamper|impersonate-gateway]

The swarm (``cats.sim.swarm``: radio medium + one C node process per node + the C gateway)
runs K inferences on real test windows of the data set the export was made for (partition.json
``data`` when it records one, else the default data set): RevIN per window and int8 input
quantisation exactly as ``cats.int8.predict_int8``, the gateway's int8 output dequantised and
de-normalised, scored against the truth (MSE / MAE in the train-normalised space, like
``cats evaluate``; accuracy for classifiers).

Every result is checked bit for bit against the integer reference ``cats.qref`` run on the
loaded export: without loss by ``qref.run_swarm``; otherwise by ``cats.sim.replay.replay``
with exactly the columns the medium did not deliver to each receiver in each exchange (read
from the medium's log) and the output slices of the nodes that gave none set to zero.

``--native-sim 0=build/ns/zephyr/zephyr.exe`` runs node 0 as the Zephyr node image built for
native_sim (samples/node with node-0 of this export) instead of a ``cats_node_sim`` process:
its link UART's PTY is relayed to the medium (``cats.sim.pty_link``).

Every radio frame is authenticated (AES-CCM*, ``cats.auth``) with the swarm key of
``--key-file`` (32 hex digits or 16 raw bytes, mode 0600; default: a fresh key in the work
directory) and a MIC of ``--mic`` bytes. ``--attack MODE`` runs an unkeyed station next to the
swarm (``cats.sim.attack``) and reports ``attack``: frames it sent, frames any receiver accepted
(measured: the receivers' authenticated-frame counters less the honest frames the medium
delivered to them), the rejections by reason, and whether any output changed (against qref).

Modelled latency per inference = Cortex-M4 compute (``cats.sim.latency``: MACs per node and
stage x measured instructions per MAC / 64 MHz, slowest node per stage) + the airtime of the
schedule as the medium serialised it (input broadcast + every exchange slot + output frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cats.config import ModelConfig
from cats.sim import phy as phys


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
        "--bsim-build",
        type=Path,
        default=None,
        help="bsim: where the nrf52_bsim images are built (default: <partition>/bsim-<link>)",
    )
    p.add_argument(
        "--link",
        default="ieee802154",
        choices=tuple(phys.PHYS),
        help="PHY model of the medium (cats.sim.phy)",
    )
    p.add_argument(
        "--loss",
        action="append",
        default=[],
        help="medium loss model, e.g. iid:0.1, ge:0.05,0.3,0,0.8, cut:0-3/4-7, "
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
        "--attack",
        default=None,
        choices=("forge", "replay", "tamper", "impersonate-gateway"),
        help="run an unkeyed attacker station in the medium (cats.sim.attack)",
    )
    p.set_defaults(func=run)


def native_sim_nodes(items: list[str]) -> dict[int, str]:
    """['0=build/ns/zephyr/zephyr.exe', ...] -> Swarm(external=...)."""
    out: dict[int, str] = {}
    for item in items:
        node, sep, path = item.partition("=")
        if not sep or not node.strip().isdigit() or not path:
            raise ValueError(f"--native-sim wants NODE=PATH: {item!r}")
        out[int(node)] = f"native_sim:{path}"
    return out


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def test_windows(cfg: ModelConfig, data: str | None, k: int) -> tuple[str, np.ndarray, np.ndarray]:
    """(dataset name, x (k, context) float32, truth) of k evenly spaced test windows, in the
    train-normalised space (``cats.train.prepare_data`` without torch)."""
    from cats.data import ClassificationWindows, ForecastWindows, dataset_from_arg, split_series
    from cats.evaluate import eval_indices

    name, values, scheme = dataset_from_arg(data, context=cfg.context, horizon=cfg.horizon)
    split = split_series(values, scheme, cfg.context, cfg.horizon, normalise=False)
    test = split.normaliser.apply(split.test)
    if cfg.task == "forecast":
        wins: Any = ForecastWindows(test, cfg.context, cfg.horizon)
    else:
        wins = ClassificationWindows(test, cfg.context, cfg.horizon, n_classes=cfg.n_classes)
    idx = eval_indices(len(wins), k)
    x, y = wins.batch(idx)
    return name, x, y


def revin_int8(cfg: ModelConfig, x: np.ndarray, input_scale: float):
    """RevIN (CatsModel.normalise, in float32) and the gateway's int8 input quantisation."""
    from cats.qref import quantize_input

    x = np.asarray(x, dtype=np.float32)
    mu = x.mean(axis=1, keepdims=True, dtype=np.float32)
    sd = np.sqrt(x.var(axis=1, keepdims=True, dtype=np.float32) + np.float32(1e-5))
    patches = ((x - mu) / sd).reshape(len(x), cfg.tokens, cfg.patch)
    return quantize_input(patches, input_scale), mu.astype(np.float64), sd.astype(np.float64)


@dataclass
class RunInputs:
    """A partition and the int8 inputs of a run (both backends)."""

    summary: dict[str, Any]  # partition.json
    loaded: list[Any]  # cats.export.load_partition
    inputs: np.ndarray  # (K, tokens, patch) int8
    dataset: str | None = None  # with test windows: their dataset, truth, RevIN mean and std
    truth: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None


def load_run(
    partition_dir: Path, data: str | None, k: int, inputs: np.ndarray | None = None
) -> RunInputs:
    """Load and verify the partition; the given int8 `inputs`, else K test windows of `data`
    (default: partition.json's data) quantised as the gateway does."""
    from cats import export

    summary = json.loads((partition_dir / "partition.json").read_text())
    loaded = export.load_partition(partition_dir)
    cfg = loaded[0].spec.cfg
    run = RunInputs(summary, loaded, np.empty(0))
    if inputs is None:
        data = data if data is not None else summary.get("data") or "default"
        run.dataset, x, run.truth = test_windows(cfg, data, k)
        inputs, run.mu, run.sd = revin_int8(cfg, x, float(loaded[0].manifest.input_scale))
    run.inputs = np.asarray(inputs, dtype=np.int8).reshape(-1, cfg.tokens, cfg.patch)
    return run


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def simulate(
    partition_dir: Path,
    *,
    link: str = "ieee802154",
    loss: list[str] | None = None,
    seed: int = 0,
    inferences: int = 4,
    data: str | None = None,
    pcap: Path | None = None,
    log: Path | None = None,
    workdir: Path | None = None,
    deadline_ms: int = 10000,
    slot_timeout: float = 2.0,
    inputs: np.ndarray | None = None,
    progress: bool = False,
    external: dict[int, str] | None = None,
    key_file: Path | None = None,
    mic: int = 8,
    attack: str | None = None,
) -> dict[str, Any]:
    """Run the swarm on K windows (or the given int8 `inputs`, (K, tokens, patch), without
    prediction metrics) and check every result against qref; returns the JSON summary.
    `external`: nodes played by other stations (``Swarm(external=...)``)."""
    from cats import qref
    from cats.sim import latency, replay
    from cats.sim.swarm import Swarm

    partition_dir = Path(partition_dir)
    run = load_run(partition_dir, data, inferences, inputs)
    summary, loaded, inputs = run.summary, run.loaded, run.inputs
    dataset, truth, mu, sd = run.dataset, run.truth, run.mu, run.sd
    specs = [n.spec for n in loaded]
    cfg = specs[0].cfg
    out_scale = float(loaded[0].manifest.output_scale)
    k = len(inputs)
    compute = latency.compute(specs)
    loss = list(loss or [])
    # the gateway's own latency estimate (max node MACs x instructions per MAC) gets the
    # effective instructions per MAC of this compute model's slowest node
    slow = int(np.argmax(compute["compute_s_per_node"]))
    ipm = compute["compute_s_per_node"][slow] * latency.CPU_HZ / compute["macs_per_node"][slow]
    swarm = Swarm(
        partition_dir,
        link=link,
        loss=loss,
        seed=seed,
        pcap=pcap,
        log=log,
        workdir=workdir,
        slot_timeout=slot_timeout,
        deadline_ms=deadline_ms,
        instr_per_mac=ipm,
        external=external,
        key_file=key_file,
        mic=mic,
    )
    results = []
    attacker = None
    attack_report: dict[str, Any] = {}
    t_start = time.monotonic()
    try:
        swarm.start()
        if attack is not None:
            from cats.sim.attack import Attacker

            attacker = Attacker(
                attack, swarm.medium_address, swarm.nodes, swarm.tag, swarm.phy.column_mtu, mic
            )
        t_ready = time.monotonic()
        with swarm.client(timeout=deadline_ms / 1e3 + 30) as gw:
            for i in range(k):
                t0 = time.monotonic()
                res = gw.infer(
                    inputs[i],
                    request_id=i + 1,
                    partition_hash=swarm.partition_hash,
                    deadline_ms=deadline_ms,
                )
                results.append((res, time.monotonic() - t0))
                if progress:
                    print(
                        f"  inference {i + 1}/{k}: status {res.status}"
                        f"{' degraded' if res.degraded else ''}",
                        file=sys.stderr,
                    )
        t_done = time.monotonic()
    except BaseException:
        if workdir is None:
            swarm.cleanup()
        raise
    finally:
        if attacker is not None:
            time.sleep(0.2)  # what it sent last reaches the receivers
            attack_report = attacker.stop()
        swarm.stop()
    records = replay.read_log(swarm.log)
    if workdir is None:  # a temp dir of process logs (and of the medium log unless --log)
        swarm.cleanup()
    counters: dict[str, int] = {}
    for r in records:
        if r.get("event") == "counters":
            counters = {k2: v for k2, v in r.items() if k2 not in ("event", "t")}
    lossy = bool(loss) and any(s.strip() not in ("", "none") for s in loss)
    nodes = [n.runtime() for n in loaded]
    per = []
    for i, (res, wall) in enumerate(results):
        recs = replay.inference_records(records, res.inference_id)
        slots = [r for r in recs if r.get("event") == "slot"]
        inp_recs = [r for r in recs if r.get("event") == "input"]
        outs = [r for r in recs if r.get("event") == "output"]
        missing = sorted(int(m) for m in res.missing_nodes)
        clean = qref.run_swarm(nodes, inputs[i])
        if lossy or missing:
            lost = replay.lost_columns(specs, recs)
            ref = replay.replay(nodes, inputs[i], lost, missing)
        else:
            ref = clean
        got = np.frombuffer(res.output, dtype=np.int8)
        air_in = sum(r["air_bytes"] for r in inp_recs)
        air_ex = sum(r["air_bytes"] for r in slots)
        air_out = sum(r["air_bytes"] for r in outs)
        t_in = sum(r["airtime_us"] for r in inp_recs) / 1e6
        t_ex = sum(r["airtime_us"] for r in slots) / 1e6
        t_out = sum(r["airtime_us"] for r in outs) / 1e6
        row = {
            "request_id": int(res.request_id),
            "inference_id": int(res.inference_id),
            "status": int(res.status),
            "message": res.message,
            "degraded": bool(res.degraded),
            "missing_nodes": missing,
            "output": got.tolist(),
            "bit_exact": bool(
                res.status == 0 and got.shape == ref.shape and np.array_equal(got, ref)
            ),
            "slots": len(slots),
            "frames_sent": sum(r["frames_sent"] for r in slots),
            "payload_bytes": sum(len(f[4]) * f[3] for r in slots for f in r["frames"]),
            "frames_lost": sum(r["frames_lost"] for r in slots),
            "deliveries": sum(r["deliveries"] for r in slots),
            "air_bytes": air_in + air_ex + air_out,
            "air_bytes_input": air_in,
            "air_bytes_exchanges": air_ex,
            "air_bytes_output": air_out,
            "airtime_s": t_in + t_ex + t_out,
            "compute_s": compute["compute_s"],
            "modelled_latency_s": compute["compute_s"] + t_in + t_ex + t_out,
            "wall_s": wall,
            "gateway": {
                "air_bytes": int(res.air_bytes),
                "frames_lost": int(res.frames_lost),
                "modelled_latency_s": float(res.modelled_latency_s),
            },
        }
        if truth is not None and res.status == 0:
            y = got.astype(np.float64) * float(res.output_scale or out_scale)
            y_ref = clean.astype(np.float64) * out_scale
            if cfg.task == "forecast":
                pred = y * sd[i] + mu[i]
                pred_ref = y_ref * sd[i] + mu[i]
                row["mse"] = float(((pred - truth[i]) ** 2).mean())
                row["mae"] = float(np.abs(pred - truth[i]).mean())
                row["reference_mse"] = float(((pred_ref - truth[i]) ** 2).mean())
            else:
                row["correct"] = bool(int(np.argmax(y)) == int(truth[i]))
        per.append(row)
    n = max(1, len(per))
    out: dict[str, Any] = {
        "ok": len(per) == k and all(r["status"] == 0 for r in per),
        "partition_dir": str(partition_dir),
        "partition_hash": summary.get("partition_hash"),
        "nodes": len(specs),
        "pruning_ratio": summary.get("pruning_ratio"),
        "link": link,
        "external_nodes": {str(d): spec for d, spec in sorted(swarm.external.items())},
        "loss": "+".join(loss) or "none",
        "seed": seed,
        "inferences": k,
        "dataset": dataset,
        "bit_exact": len(per) == k and all(r["bit_exact"] for r in per),
        "air_bytes": sum(r["air_bytes"] for r in per) / n,
        "air_bytes_exchanges": sum(r["air_bytes_exchanges"] for r in per) / n,
        "frames_lost": sum(r["frames_lost"] for r in per),
        "frames_sent": sum(r["frames_sent"] for r in per),
        "deliveries": sum(r["deliveries"] for r in per),
        "modelled_latency_s": sum(r["modelled_latency_s"] for r in per) / n,
        "airtime_s": sum(r["airtime_s"] for r in per) / n,
        "compute_s": compute["compute_s"],
        "compute": compute,
        "wall_s": t_done - t_start,
        "wall_s_startup": t_ready - t_start,
        "wall_s_per_inference": (t_done - t_ready) / n,
        "degraded": sum(r["degraded"] for r in per),
        "medium_counters": counters,
        "log": str(swarm.log) if swarm.log.exists() else None,
        "pcap": str(pcap) if pcap else None,
        "per_inference": per,
    }
    out["auth"] = auth_summary(results[-1][0] if results else None, counters, len(specs), mic)
    if attack is not None:
        out["attack"] = dict(
            attack_report,
            attack_frames_accepted=out["auth"]["frames_accepted_beyond_honest"],
            rejected=out["auth"]["rejected"],
            outputs_changed=not out["bit_exact"] or not out["ok"],
        )
    scored = [r for r in per if "mse" in r]
    if scored:
        out["mse"] = sum(r["mse"] for r in scored) / len(scored)
        out["mae"] = sum(r["mae"] for r in scored) / len(scored)
        out["reference_mse"] = sum(r["reference_mse"] for r in scored) / len(scored)
    judged = [r for r in per if "correct" in r]
    if judged:
        out["accuracy"] = sum(r["correct"] for r in judged) / len(judged)
    return out


def auth_summary(last: Any, medium_counters: dict[str, int], nodes: int, mic: int) -> dict:
    """The receivers' authentication counters (the last result's NodeCounters, cumulative, and
    the gateway's) against the honest frames the medium delivered to each station: a receiver
    that authenticated more frames than it was honestly sent accepted someone else's."""
    out: dict[str, Any] = {"mic_bytes": mic, "rejected": {}, "per_station": {}}
    if last is None:
        out["frames_accepted_beyond_honest"] = None
        return out
    counters = {int(s.node): s.counters for s in last.nodes}
    counters[nodes] = last.gateway_counters
    beyond = 0
    rejected = {"mic": 0, "replay": 0, "sender": 0, "malformed": 0}
    for sid, c in sorted(counters.items()):
        honest = int(medium_counters.get(f"delivered_station_{sid}", 0))
        extra = int(c.frames_authenticated) - honest
        beyond += max(0, extra)
        for reason in rejected:
            rejected[reason] += int(getattr(c, f"rejected_{reason}"))
        out["per_station"]["gateway" if sid == nodes else str(sid)] = {
            "authenticated": int(c.frames_authenticated),
            "honest_delivered": honest,
            "rejected_mic": int(c.rejected_mic),
            "rejected_replay": int(c.rejected_replay),
            "rejected_sender": int(c.rejected_sender),
        }
    out["rejected"] = rejected
    out["frames_accepted_beyond_honest"] = beyond
    return out


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
        print(f"  bit-exact with cats.qref: {'yes' if res['bit_exact'] else 'NO'}")
        print(
            f"  air bytes / inference: {res['air_bytes']:.0f} "
            f"(exchanges {res['air_bytes_exchanges']:.0f}); {res['frames_sent']} frames sent, "
            f"{res['frames_lost']} of {res['deliveries']} (frame, receiver) deliveries lost"
        )
        print(
            f"  modelled latency: {res['modelled_latency_s'] * 1e3:.1f} ms "
            f"(compute {res['compute_s'] * 1e3:.1f} ms + air {res['airtime_s'] * 1e3:.1f} ms)"
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
        from cats.sim import bsim

        if args.attack:
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
            key_file=args.key_file,
            mic=args.mic,
        )
    return simulate(
        args.partition_dir,
        link=args.link,
        loss=args.loss,
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
    )


def _print_bsim(res: dict[str, Any]) -> None:
    print(
        f"{res['partition_dir']}: D={res['nodes']}, {res['link']} on BabbleSim "
        f"({res['board']}), loss {res['loss']}, {res['inferences']} inferences"
    )
    print(f"  bit-exact with cats.qref: {'yes' if res['bit_exact'] else 'NO'}")
    print(
        f"  simulated latency: {res['simulated_latency_s'] * 1e3:.1f} ms / inference "
        f"(BabbleSim's clock; the simulated CPU takes no time)"
    )
    med = res.get("medium")
    if med:
        print(
            f"  medium model, same partition: airtime {med['airtime_s'] * 1e3:.1f} ms, "
            f"latency {med['modelled_latency_s'] * 1e3:.1f} ms (compute "
            f"{med['compute_s'] * 1e3:.1f} ms); simulated / modelled airtime "
            f"{res.get('latency_ratio_vs_medium_airtime', float('nan')):.2f}x"
        )
    print(
        f"  {res['frames_sent']} ColumnFrames sent, {res['columns_lost']} columns lost, "
        f"{res['degraded']} degraded results; wall {res['run']['wall_s']:.1f} s"
    )
