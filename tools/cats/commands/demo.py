"""`cats demo`: the whole tool chain on the default dataset, end to end.

Train (or reuse) a small forecasting model with message-dropout and quantisation-aware
training, prune its SomeGather exchanges, export it for 8 nodes, reload the artefacts, run the
integer swarm on held-out windows, and print the resource table and the metrics. Then serve the
export as a robot would use it: the simulated swarm (radio medium, C node and gateway
processes) behind the ROS 2 bridge node (`cats serve`), called from a separate client process
(cats_ros/examples/infer_client.py) on held-out test windows, with a forecast plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats.analysis import resource
from cats.artefacts import export
from cats.base.paths import REPO_ROOT
from cats.model.config import preset
from cats.model.dropout import DropoutConfig, loss_delivery
from cats.quant import qref
from cats.quant.int8 import int8_gap, predict_int8, quantized
from cats.training.checkpoint import load_checkpoint
from cats.training.evaluate import eval_indices, robustness
from cats.training.train import TrainOptions, prepare_data, train_model

DEMO_OPTIONS = TrainOptions(
    nodes=8, steps=600, batch=64, lr=2e-3, qat=True, qat_fraction=0.25, prune=0.5,
    prune_step=0.25, finetune_steps=60, max_eval_windows=500,
    dropout=DropoutConfig(p_link=0.05, p_receiver=0.02, p_sender=0.02),
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, prune, export for 8 nodes and evaluate the swarm",
                       description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="work directory")
    p.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    p.add_argument("--steps", type=int, default=DEMO_OPTIONS.steps, help="training steps")
    p.add_argument("--test-windows", type=int, default=1000, help="held-out windows to score")
    p.add_argument("--ros-windows", type=int, default=48,
                   help="held-out windows sent through ROS 2 (0: skip swarm + bridge)")  # fmt: skip
    p.set_defaults(func=run)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, flush=True)


@dataclass
class _Trained:
    """Step 1's model: trained now or reused from the work directory."""

    model: Any
    part: Any
    data: Any
    metrics: dict[str, Any]
    checkpoint: Path
    trained: bool


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = preset("demo")
    tr = _train_or_reuse(args, cfg)
    model, part, data = tr.model, tr.part, tr.data

    _say(args, "[2/6] quantising and exporting the 8-node partition")
    qm = quantized(model, data.train)
    part_dir = args.out / "partition"
    summary = export.export_partition(qm, part, part_dir)

    _say(args, "[3/6] reloading the artefacts and running the integer swarm")
    loaded = [n.runtime() for n in export.load_partition(part_dir)]
    bit_exact = _artefacts_bit_exact(model, qm, part, loaded, data.test)

    _say(args, "[4/6] scoring held-out windows (float, int8, message loss)")
    gap = int8_gap(model, qm, part, data.test, max_windows=args.test_windows)
    rob = robustness(model, part, data.test, (0.0, 0.1, 0.2), seeds=3,
                     max_windows=args.test_windows)  # fmt: skip

    _say(args, "[5/6] resources per node")
    result = {
        "dataset": data.name,
        "config": cfg.to_dict(),
        "nodes": part.nodes,
        "pruning_ratio": part.pruning_ratio(),
        "partition_hash": summary["partition_hash"],
        "partition_dir": str(part_dir),
        "checkpoint": str(tr.checkpoint),
        "trained": tr.trained,
        "train_wall_s": tr.metrics.get("wall_time_s"),
        "artefacts_bit_exact": bit_exact,
        "test": gap,
        "robustness": [{k: r[k] for k in ("loss_rate", "mse", "ratio")} for r in rob],
        "resources": _resources(cfg, part),
    }
    if args.ros_windows > 0:
        _say(args, f"[6/6] serving the partition: simulated swarm + ROS 2 bridge (cats serve); "
                   f"a separate client process calls /cats_bridge/infer on {args.ros_windows} "
                   "held-out windows")  # fmt: skip
        result["ros"] = serve_and_call(args, part_dir, data.test, model, qm, loaded)
    result["wall_s"] = time.perf_counter() - t0
    (args.out / "demo.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    if not args.json:
        _print(result)
    if not bit_exact:
        raise ValueError("reloaded artefacts do not reproduce the in-memory integer swarm")
    if "ros" in result and not result["ros"]["ok"]:
        raise ValueError(f"the ROS 2 client failed: {result['ros']}")
    return result


def _train_or_reuse(args: argparse.Namespace, cfg: Any) -> _Trained:
    """Step 1: the checkpoint in the work directory when it is of this preset and step count
    (and --retrain is not given), else a model trained now and saved there."""
    ck_path = args.out / "model" / "checkpoint.pt"
    reuse = ck_path.is_file() and not args.retrain
    if reuse:
        ck = load_checkpoint(ck_path)
        if ck.cfg != cfg or ck.extra.get("options", {}).get("steps") != args.steps:
            reuse = False
    if reuse:
        _say(args, f"[1/6] reusing trained model {ck_path}")
        data = prepare_data(None, cfg, normaliser=ck.normaliser)
        return _Trained(ck.model(), ck.partition(), data, ck.metrics, ck_path, trained=False)
    _say(args, f"[1/6] training the `demo` preset on the default dataset ({args.steps} "
               "steps, message-dropout, QAT, pruning to p = 0.5 for 8 nodes)")  # fmt: skip
    opts = TrainOptions(**{**DEMO_OPTIONS.__dict__, "steps": args.steps,
                           "progress": not args.json and sys.stderr.isatty()})  # fmt: skip
    data = prepare_data(None, cfg)
    res = train_model(cfg, data, opts)
    res.save(ck_path.parent)
    return _Trained(res.model, res.part, data, res.metrics, ck_path, trained=True)


def _artefacts_bit_exact(model: Any, qm: Any, part: Any, loaded: list, test: Any) -> bool:
    """Step 3: the reloaded artefacts predict exactly what the in-memory integer swarm does on
    64 held-out windows, without loss and with 10 % message loss."""
    x, _ = test.batch(eval_indices(len(test), 64))
    in_memory = predict_int8(model, qm, qref.build_nodes(qm, part), x)
    from_files = predict_int8(model, qm, loaded, x)
    gen = torch.Generator().manual_seed(0)
    lossy = {e: d[0].numpy() for e, d in loss_delivery(part, None, 1, 0.1, gen).items()}
    return bool(np.array_equal(in_memory, from_files)) and bool(
        np.array_equal(predict_int8(model, qm, qref.build_nodes(qm, part), x, lossy),
                       predict_int8(model, qm, loaded, x, lossy)))  # fmt: skip


def _resources(cfg: Any, part: Any) -> dict[str, dict[str, int]]:
    """Step 5: the largest node's RAM, flash and air use, pruned CATS vs AllGather vs one node."""
    rows = {
        "cats_pruned": resource.node_resources(cfg, part.nodes, partition=part),
        "allgather": resource.node_resources(cfg, part.nodes, method="allgather"),
        "single": resource.node_resources(cfg, 1, method="single"),
    }
    keys = ("ram_bytes", "flash_bytes", "air_payload_bytes", "air_frames")
    return {k: {m: v["max"][m] for m in keys} for k, v in rows.items()}


def serve_and_call(
    args: argparse.Namespace, part_dir: Path, test: Any, model: Any, qm: Any, loaded: list
) -> dict[str, Any]:
    """`cats serve` in this process, the example client (cats_ros/examples/infer_client.py) in
    another, on held-out windows; returns the client's summary."""
    from cats.commands.serve import LOCALHOST_DISCOVERY, serving

    out = args.out / "ros"
    out.mkdir(parents=True, exist_ok=True)
    x, y = test.batch(eval_indices(len(test), args.ros_windows))
    reference = predict_int8(model, qm, loaded, x)  # the integer swarm without loss
    np.savez(out / "windows.npz", x=x, y=y, reference=reference)
    domain = int(os.environ.get("ROS_DOMAIN_ID", 1 + os.getpid() % 100))
    env = {**os.environ, **LOCALHOST_DISCOVERY, "ROS_DOMAIN_ID": str(domain)}
    client = [sys.executable, str(REPO_ROOT / "cats_ros" / "examples" / "infer_client.py"),
              "--windows", str(out / "windows.npz"), "--concurrency", "4",
              "--plot", str(out / "forecast_ros.png"),
              "--json", str(out / "client.json")]  # fmt: skip
    t0 = time.perf_counter()
    with serving(part_dir, domain_id=domain, workdir=out / "swarm") as s:
        _say(args, f"  swarm of {s.swarm.nodes} nodes up, bridge {s.service} on gateway "
                   f"{s.swarm.endpoint} (ROS_DOMAIN_ID {domain}); client:")  # fmt: skip
        proc = subprocess.run(client, env=env, timeout=600,
                              stdout=sys.stderr if args.json else None)  # fmt: skip
    summary = json.loads((out / "client.json").read_text()) if proc.returncode == 0 else {}
    summary["reference_mse"] = float(((reference - y) ** 2).mean())
    summary["ok"] = proc.returncode == 0
    summary["wall_s"] = time.perf_counter() - t0
    summary["windows_file"] = str(out / "windows.npz")
    _say(args, f"  int8 reference (cats.quant.int8.predict_int8) on the same windows: MSE "
               f"{summary['reference_mse']:.4f}; swarm and bridge stopped")  # fmt: skip
    return summary


def _print(r: dict[str, Any]) -> None:
    t = r["test"]
    print(f"\nheld-out test windows ({t['windows']}, {r['dataset']}, normalised units):")
    print(f"  float MSE {t['float_mse']:.4f}  MAE {t['float_mae']:.4f}")
    print(f"  int8  MSE {t['int8_mse']:.4f}  MAE {t['int8_mae']:.4f}  "
          f"(int8/float MSE {t['gap_ratio']:.3f})")  # fmt: skip
    for row in r["robustness"]:
        print(f"  {row['loss_rate'] * 100:4.0f} % message loss: MSE {row['mse']:.4f} "
              f"({row['ratio']:.3f}x clean)")  # fmt: skip
    print(f"\nper node, max over {r['nodes']} nodes (pruning ratio {r['pruning_ratio']:.2f}):")
    print(f"  {'method':<12} {'RAM KiB':>8} {'flash KiB':>10} {'air B/inf':>10} {'frames':>7}")
    for name, v in r["resources"].items():
        print(f"  {name:<12} {v['ram_bytes'] / 1024:8.1f} {v['flash_bytes'] / 1024:10.1f} "
              f"{v['air_payload_bytes']:10d} {v['air_frames']:7d}")  # fmt: skip
    if "ros" in r and r["ros"].get("ok"):
        ros = r["ros"]
        print(f"\nvia ROS 2 (/cats_bridge/infer, {ros['requests']} held-out windows): "
              f"MSE {ros['mse']:.4f} (int8 reference {ros['reference_mse']:.4f}), "
              f"{ros['air_bytes_per_inference']:.0f} air bytes and "
              f"{ros['modelled_latency_s'] * 1e3:.0f} ms modelled latency per inference, "
              f"{ros['frames_lost']} frames lost; plot {ros.get('plot')}")  # fmt: skip
    print(f"\nartefacts in {r['partition_dir']} (hash {r['partition_hash'][:16]}), reload "
          f"bit-exact: {r['artefacts_bit_exact']}; total {r['wall_s']:.0f} s")  # fmt: skip
