"""The run behind `cats sim`: inferences of an exported partition on the simulated swarm, checked.

    cats sim <partition-dir> [--link ieee802154|ble2m|ble2m-aux] [--loss SPEC] [--seed S]
             [--inferences K] [--data default|CSV] [--pcap FILE] [--log FILE] [--json]
             [--native-sim NODE=PATH ...] [--key-file FILE] [--mic 4|8]
             [--attack forge|replay|tamper|impersonate-gateway]

The swarm (``cats.sim.swarm``: radio medium + one C node process per node + the C gateway)
runs K inferences on real test windows of the data set the export was made for (partition.json
``data`` when it records one, else the default data set): RevIN per window and int8 input
quantisation exactly as ``cats.quant.int8.predict_int8``, the gateway's int8 output dequantised and
de-normalised, scored against the truth (MSE / MAE in the train-normalised space, like
``cats evaluate``; accuracy for classifiers).

Every result is checked bit for bit against the integer reference ``cats.quant.qref`` run on the
loaded export: without loss by ``qref.run_swarm``; otherwise by ``cats.sim.replay.replay``
with exactly the columns the medium did not deliver to each receiver in each exchange (read
from the medium's log) and the output slices of the nodes that gave none set to zero.

``--native-sim 0=build/ns/zephyr/zephyr.exe`` runs node 0 as the Zephyr node image built for
native_sim (samples/node with node-0 of this export) instead of a ``cats_node_sim`` process:
its link UART's PTY is relayed to the medium (``cats.sim.pty_link``).

Every radio frame is authenticated (AES-CCM*, ``cats.wire.auth``) with the swarm key of
``--key-file`` (32 hex digits or 16 raw bytes, mode 0600; default: a fresh key in the work
directory) and a MIC of ``--mic`` bytes. ``--attack MODE`` runs an unkeyed station next to the
swarm (``cats.sim.attack``) and reports ``attack``: frames it sent, frames any receiver accepted
(measured: the receivers' authenticated-frame counters less the honest frames the medium
delivered to them), the rejections by reason, and whether any output changed (against qref).

Modelled latency per inference = Cortex-M4 compute (``cats.sim.latency``: the matmuls' MACs
per node and stage x measured instructions per MAC, at the whole node's measured cycles, plus
its per-element work (LayerNorm, softmax, ...), slowest node per stage) + the airtime of the
schedule as the medium serialised it (input broadcast + every exchange slot + output frames)
with the link's MAC timing (``cats.wire.phy``: CSMA-CA on 802.15.4, advertising events on
BLE) + ``output_turns_s``, the idle channel time of the output turns (node d sends its
OutputFrames 2 d x CONFIG_CATS_TURN_FRAME_US after the last exchange: ``Phy.output_turns_us``).
``airtime_payload_only_s`` is the same frames back to back without MAC gaps;
``airtime_floor_s`` the int8 payload (input, exchanged columns, output) at the link's bit
rate; ``airtime_floor_ratio`` = ``airtime_s`` / ``airtime_floor_s``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cats.model.config import ModelConfig
from cats.wire import phy as phys


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
    train-normalised space (``cats.training.train.prepare_data`` without torch)."""
    from cats.training.data import (
        ClassificationWindows,
        ForecastWindows,
        dataset_from_arg,
        split_series,
    )
    from cats.training.evaluate import eval_indices

    if cfg.image_shape is not None:
        from cats.training.data import image_dataset

        images = image_dataset(data, cfg.image_shape)[2]
        x, y = images.batch(eval_indices(len(images), k))
        return data if data not in (None, "default") else "digits", x, y
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
    from cats.quant.qref import quantize_input

    x = np.asarray(x, dtype=np.float32)
    mu = x.mean(axis=1, keepdims=True, dtype=np.float32)
    sd = np.sqrt(x.var(axis=1, keepdims=True, dtype=np.float32) + np.float32(1e-5))
    patches = ((x - mu) / sd)[:, cfg.patch_order()]  # (K, N, P); an image cut into patches
    if cfg.io == "paper":  # each token's padding flags follow its patch: nothing is padded
        patches = np.concatenate([patches, np.zeros_like(patches)], axis=-1)
    return quantize_input(patches, input_scale), mu.astype(np.float64), sd.astype(np.float64)


@dataclass
class RunInputs:
    """A partition and the int8 inputs of a run (both backends)."""

    summary: dict[str, Any]  # partition.json
    loaded: list[Any]  # cats.artefacts.export.load_partition
    inputs: np.ndarray  # (K, tokens, input_width) int8
    dataset: str | None = None  # with test windows: their dataset, truth, RevIN mean and std
    truth: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None


def load_run(
    partition_dir: Path, data: str | None, k: int, inputs: np.ndarray | None = None
) -> RunInputs:
    """Load and verify the partition; the given int8 `inputs`, else K test windows of `data`
    (default: partition.json's data) quantised as the gateway does."""
    from cats.artefacts import export

    summary = json.loads((partition_dir / "partition.json").read_text())
    loaded = export.load_partition(partition_dir)
    cfg = loaded[0].spec.cfg
    run = RunInputs(summary, loaded, np.empty(0))
    if inputs is None:
        data = data if data is not None else summary.get("data") or "default"
        run.dataset, x, run.truth = test_windows(cfg, data, k)
        inputs, run.mu, run.sd = revin_int8(cfg, x, float(loaded[0].manifest.input_scale))
    run.inputs = np.asarray(inputs, dtype=np.int8).reshape(-1, cfg.tokens, cfg.input_width)
    return run


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimOptions:
    """How `simulate` runs the swarm (the options of `cats sim` for the medium backend)."""

    link: str = "ieee802154"
    loss: tuple[str, ...] = ()  # loss specs, combined with "+" (cats.sim.loss)
    seed: int = 0
    inferences: int = 4  # K test windows (ignored when `inputs` is given)
    data: str | None = None  # default: partition.json's data set
    pcap: Path | None = None
    log: Path | None = None  # keep the medium's JSON-lines log here
    workdir: Path | None = None  # process logs (default: a temporary directory)
    deadline_ms: int = 10000
    slot_timeout: float = 2.0
    inputs: np.ndarray | None = None  # (K, tokens, patch) int8: no prediction metrics
    progress: bool = False
    external: dict[int, str] | None = None  # nodes played by other stations (Swarm(external=))
    key_file: Path | None = None  # the swarm key (default: a fresh one in the work directory)
    mic: int = 8  # MIC bytes per air frame (cats.wire.auth)
    attack: str | None = None  # an unkeyed attacker station (cats.sim.attack.MODES)
    mac: str | None = None  # the link's channel access (cats.wire.phy.FIRMWARE_MACS; None: default)

    @property
    def lossy(self) -> bool:
        return any(s.strip() not in ("", "none") for s in self.loss)


@dataclass
class _Answer:
    """One gateway answer and the wall time it took."""

    res: Any  # InferResult
    wall_s: float


@dataclass
class _Timing:
    start: float
    ready: float = 0.0
    done: float = 0.0
    attack: dict[str, Any] | None = None  # the attacker's report (cats.sim.attack)


def simulate(
    partition_dir: Path, options: SimOptions | None = None, /, **overrides: Any
) -> dict[str, Any]:
    """Run the swarm on K windows (or the given int8 `inputs`, (K, tokens, patch), without
    prediction metrics) and check every result against qref; returns the JSON summary.
    Options: a SimOptions and/or its fields as keywords (``simulate(d, link="ble2m")``)."""
    from cats.sim import latency, replay

    if "loss" in overrides:
        overrides["loss"] = tuple(overrides["loss"] or ())
    opts = replace(options or SimOptions(), **overrides)
    partition_dir = Path(partition_dir)
    run = load_run(partition_dir, opts.data, opts.inferences, opts.inputs)
    specs = [n.spec for n in run.loaded]
    compute = latency.compute(specs, mtu=phys.get(opts.link).column_mtu)
    swarm = _make_swarm(partition_dir, opts, compute)
    answers, timing = _infer_all(swarm, run.inputs, opts)
    records = replay.read_log(swarm.log)
    if opts.workdir is None:  # a temp dir of process logs (and of the medium log unless --log)
        swarm.cleanup()
    nodes = [n.runtime() for n in run.loaded]
    per = [
        _check_inference(
            run, i, answer, records, nodes, compute, opts.lossy, phys.get(opts.link, opts.mac)
        )
        for i, answer in enumerate(answers)
    ]
    last = answers[-1].res if answers else None
    return _summary(partition_dir, opts, run, swarm, compute, records, per, timing, last)


def _make_swarm(partition_dir: Path, opts: SimOptions, compute: dict[str, Any]):
    """The swarm of the run, not yet started. The gateway's own latency estimate (max node MACs
    x instructions per MAC) gets the effective instructions per MAC of this compute model's
    slowest node."""
    from cats.sim import latency
    from cats.sim.swarm import Swarm

    slow = int(np.argmax(compute["compute_s_per_node"]))
    ipm = compute["compute_s_per_node"][slow] * latency.CPU_HZ / compute["macs_per_node"][slow]
    return Swarm(
        partition_dir,
        link=opts.link,
        loss=list(opts.loss),
        seed=opts.seed,
        pcap=opts.pcap,
        log=opts.log,
        workdir=opts.workdir,
        slot_timeout=opts.slot_timeout,
        deadline_ms=opts.deadline_ms,
        instr_per_mac=ipm,
        external=opts.external,
        key_file=opts.key_file,
        mic=opts.mic,
        mac=opts.mac,
    )


def _infer_all(swarm: Any, inputs: np.ndarray, opts: SimOptions) -> tuple[list[_Answer], _Timing]:
    """Start the swarm (and the attacker, with opts.attack), send every input to its gateway in
    turn, stop the swarm (and remove its temporary files if the run fails)."""
    answers: list[_Answer] = []
    timing = _Timing(time.monotonic())
    k = len(inputs)
    attacker = None
    try:
        swarm.start()
        if opts.attack is not None:
            from cats.sim.attack import Attacker

            attacker = Attacker(
                opts.attack, swarm.medium_address, swarm.nodes, swarm.tag,
                swarm.phy.column_mtu, opts.mic, token=swarm.token,
            )  # fmt: skip
        timing.ready = time.monotonic()
        with swarm.client(timeout=opts.deadline_ms / 1e3 + 30) as gw:
            for i in range(k):
                t0 = time.monotonic()
                res = gw.infer(
                    inputs[i],
                    request_id=i + 1,
                    partition_hash=swarm.partition_hash,
                    deadline_ms=opts.deadline_ms,
                )
                answers.append(_Answer(res, time.monotonic() - t0))
                if opts.progress:
                    print(
                        f"  inference {i + 1}/{k}: status {res.status}"
                        f"{' degraded' if res.degraded else ''}",
                        file=sys.stderr,
                    )
        timing.done = time.monotonic()
    except BaseException:
        if opts.workdir is None:
            swarm.cleanup()
        raise
    finally:
        if attacker is not None:
            time.sleep(0.2)  # what it sent last reaches the receivers
            timing.attack = attacker.stop()
        swarm.stop()
    return answers, timing


def _check_inference(
    run: RunInputs,
    i: int,
    answer: _Answer,
    records: list[dict[str, Any]],
    nodes: list[Any],
    compute: dict[str, Any],
    lossy: bool,
    phy: phys.Phy = phys.IEEE802154,
) -> dict[str, Any]:
    """The per-inference row: the answer against qref (with the columns the medium lost, when
    it lost any), its air bytes and time from the medium's log, and its prediction metrics."""
    from cats.quant import qref
    from cats.sim import replay

    res = answer.res
    specs = [n.spec for n in run.loaded]
    recs = replay.inference_records(records, res.inference_id)
    slots = [r for r in recs if r.get("event") == "slot"]
    inp_recs = [r for r in recs if r.get("event") == "input"]
    outs = [r for r in recs if r.get("event") == "output"]
    missing = sorted(int(m) for m in res.missing_nodes)
    clean = qref.run_swarm(nodes, run.inputs[i])
    if lossy or missing:
        ref = replay.replay(nodes, run.inputs[i], replay.lost_columns(specs, recs), missing)
    else:
        ref = clean
    got = np.frombuffer(res.output, dtype=np.int8)
    air_in = sum(r["air_bytes"] for r in inp_recs)
    air_ex = sum(r["air_bytes"] for r in slots)
    air_out = sum(r["air_bytes"] for r in outs)
    t_in = sum(r["airtime_us"] for r in inp_recs) / 1e6
    t_ex = sum(r["airtime_us"] for r in slots) / 1e6
    t_out = sum(r["airtime_us"] for r in outs) / 1e6
    # the output turns' idle time (air_io.c spaces the OutputFrames by node id)
    turns_us = phy.output_turns_us([(r["sender"], r["air_len"]) for r in outs])
    t_turns = max(0.0, turns_us / 1e6 - t_out)
    t_b2b = (
        sum(r.get("airtime_payload_only_us", r["airtime_us"]) for r in inp_recs + slots + outs)
        / 1e6
    )
    pay_ex = sum(len(f[4]) * f[3] for r in slots for f in r["frames"])
    pay_all = (
        pay_ex
        + sum(r.get("payload_bytes") or 0 for r in inp_recs)
        + sum(r.get("payload_bytes") or 0 for r in outs)
    )
    floor_s = phy.floor_us(pay_all) / 1e6
    row = {
        "request_id": int(res.request_id),
        "inference_id": int(res.inference_id),
        "status": int(res.status),
        "message": res.message,
        "degraded": bool(res.degraded),
        "missing_nodes": missing,
        "output": got.tolist(),
        "bit_exact": bool(res.status == 0 and got.shape == ref.shape and np.array_equal(got, ref)),
        "slots": len(slots),
        "frames_sent": sum(r["frames_sent"] for r in slots),
        "payload_bytes": pay_ex,
        "payload_bytes_total": pay_all,
        "frames_lost": sum(r["frames_lost"] for r in slots),
        "deliveries": sum(r["deliveries"] for r in slots),
        "air_bytes": air_in + air_ex + air_out,
        "air_bytes_input": air_in,
        "air_bytes_exchanges": air_ex,
        "air_bytes_output": air_out,
        "airtime_s": t_in + t_ex + t_out,
        "airtime_payload_only_s": t_b2b,
        "airtime_floor_s": floor_s,
        "airtime_floor_ratio": (t_in + t_ex + t_out) / floor_s if floor_s else None,
        "output_turns_s": t_turns,
        "compute_s": compute["compute_s"],
        "modelled_latency_s": compute["compute_s"] + t_in + t_ex + t_out + t_turns,
        "wall_s": answer.wall_s,
        "gateway": {
            "air_bytes": int(res.air_bytes),
            "frames_lost": int(res.frames_lost),
            "modelled_latency_s": float(res.modelled_latency_s),
        },
    }
    if run.truth is not None and res.status == 0:
        row.update(_prediction_metrics(run, i, got, clean, float(res.output_scale)))
    return row


def _prediction_metrics(
    run: RunInputs, i: int, got: np.ndarray, clean: np.ndarray, output_scale: float
) -> dict[str, Any]:
    """Forecast MSE / MAE (and qref's MSE without loss) in the train-normalised space after
    RevIN's de-normalisation, or whether a classifier's answer is right."""
    cfg = run.loaded[0].spec.cfg
    out_scale = float(run.loaded[0].manifest.output_scale)
    y = got.astype(np.float64) * (output_scale or out_scale)
    y_ref = clean.astype(np.float64) * out_scale
    truth = run.truth[i]
    if cfg.task != "forecast":
        return {"correct": bool(int(np.argmax(y)) == int(truth))}
    pred = y * run.sd[i] + run.mu[i]
    pred_ref = y_ref * run.sd[i] + run.mu[i]
    return {
        "mse": float(((pred - truth) ** 2).mean()),
        "mae": float(np.abs(pred - truth).mean()),
        "reference_mse": float(((pred_ref - truth) ** 2).mean()),
    }


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
        beyond += max(0, int(c.frames_authenticated) - honest)
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


def _summary(
    partition_dir: Path,
    opts: SimOptions,
    run: RunInputs,
    swarm: Any,
    compute: dict[str, Any],
    records: list[dict[str, Any]],
    per: list[dict[str, Any]],
    timing: _Timing,
    last_result: Any = None,
) -> dict[str, Any]:
    """The JSON summary of the run: means over the inferences and the medium's counters."""
    k = len(run.inputs)
    n = max(1, len(per))
    counters: dict[str, int] = {}
    for r in records:
        if r.get("event") == "counters":
            counters = {k2: v for k2, v in r.items() if k2 not in ("event", "t")}
    out: dict[str, Any] = {
        "ok": len(per) == k and all(r["status"] == 0 for r in per),
        "partition_dir": str(partition_dir),
        "partition_hash": run.summary.get("partition_hash"),
        "nodes": len(run.loaded),
        "pruning_ratio": run.summary.get("pruning_ratio"),
        "link": opts.link,
        "external_nodes": {str(d): spec for d, spec in sorted(swarm.external.items())},
        "loss": "+".join(opts.loss) or "none",
        "seed": opts.seed,
        "inferences": k,
        "dataset": run.dataset,
        "bit_exact": len(per) == k and all(r["bit_exact"] for r in per),
        "air_bytes": sum(r["air_bytes"] for r in per) / n,
        "air_bytes_exchanges": sum(r["air_bytes_exchanges"] for r in per) / n,
        "frames_lost": sum(r["frames_lost"] for r in per),
        "frames_sent": sum(r["frames_sent"] for r in per),
        "deliveries": sum(r["deliveries"] for r in per),
        "modelled_latency_s": sum(r["modelled_latency_s"] for r in per) / n,
        "airtime_s": sum(r["airtime_s"] for r in per) / n,
        "output_turns_s": sum(r["output_turns_s"] for r in per) / n,
        "airtime_payload_only_s": sum(r["airtime_payload_only_s"] for r in per) / n,
        "airtime_floor_s": sum(r["airtime_floor_s"] for r in per) / n,
        "airtime_floor_ratio": (
            sum(r["airtime_s"] for r in per) / sum(r["airtime_floor_s"] for r in per)
            if per and all(r["airtime_floor_s"] for r in per)
            else None
        ),
        "mac": phys.get(opts.link, opts.mac).mac.to_dict(),
        "compute_s": compute["compute_s"],
        "compute": compute,
        "wall_s": timing.done - timing.start,
        "wall_s_startup": timing.ready - timing.start,
        "wall_s_per_inference": (timing.done - timing.ready) / n,
        "degraded": sum(r["degraded"] for r in per),
        "medium_counters": counters,
        "log": str(swarm.log) if swarm.log.exists() else None,
        "pcap": str(opts.pcap) if opts.pcap else None,
        "per_inference": per,
    }
    out["auth"] = auth_summary(last_result, counters, len(run.loaded), opts.mic)
    if timing.attack is not None:
        out["attack"] = dict(
            timing.attack,
            attack_frames_accepted=out["auth"]["frames_accepted_beyond_honest"],
            rejected=out["auth"]["rejected"],
            outputs_changed=not out["bit_exact"] or not out["ok"],
        )
    scored = [r for r in per if "mse" in r]
    if scored:
        for key in ("mse", "mae", "reference_mse"):
            out[key] = sum(r[key] for r in scored) / len(scored)
    judged = [r for r in per if "correct" in r]
    if judged:
        out["accuracy"] = sum(r["correct"] for r in judged) / len(judged)
    return out
