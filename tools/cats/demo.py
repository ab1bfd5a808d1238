"""`cats demo`: the whole tool chain on the default dataset, end to end.

Train (or reuse) a small forecasting model with message-dropout and quantisation-aware
training, prune its SomeGather exchanges, export it for 8 nodes, reload the artefacts, run the
integer swarm on held-out windows, and print the resource table and the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats import export, qref, resource
from cats.checkpoint import load_checkpoint
from cats.config import preset
from cats.dropout import DropoutConfig, loss_delivery
from cats.evaluate import eval_indices, robustness
from cats.int8 import int8_gap, predict_int8, quantized
from cats.train import TrainOptions, prepare_data, train_model

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
    p.set_defaults(func=run)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = preset("demo")
    ck_path = args.out / "model" / "checkpoint.pt"
    opts = TrainOptions(**{**DEMO_OPTIONS.__dict__, "steps": args.steps,
                           "progress": not args.json and sys.stderr.isatty()})  # fmt: skip
    reuse = ck_path.is_file() and not args.retrain
    if reuse:
        ck = load_checkpoint(ck_path)
        if ck.cfg != cfg or ck.extra.get("options", {}).get("steps") != args.steps:
            reuse = False
    if reuse:
        _say(args, f"[1/5] reusing trained model {ck_path}")
        model, part = ck.model(), ck.partition()
        data = prepare_data(None, cfg, normaliser=ck.normaliser)
        train_metrics = ck.metrics
    else:
        _say(args, f"[1/5] training the `demo` preset on the default dataset ({args.steps} "
                   "steps, message-dropout, QAT, pruning to p = 0.5 for 8 nodes)")  # fmt: skip
        data = prepare_data(None, cfg)
        res = train_model(cfg, data, opts)
        res.save(ck_path.parent)
        model, part, train_metrics = res.model, res.part, res.metrics

    _say(args, "[2/5] quantising and exporting the 8-node partition")
    qm = quantized(model, data.train)
    part_dir = args.out / "partition"
    summary = export.export_partition(qm, part, part_dir)

    _say(args, "[3/5] reloading the artefacts and running the integer swarm")
    loaded = [n.runtime() for n in export.load_partition(part_dir)]
    idx = eval_indices(len(data.test), 64)
    x, _ = data.test.batch(idx)
    in_memory = predict_int8(model, qm, qref.build_nodes(qm, part), x)
    from_files = predict_int8(model, qm, loaded, x)
    gen = torch.Generator().manual_seed(0)
    lossy = {e: d[0].numpy() for e, d in loss_delivery(part, None, 1, 0.1, gen).items()}
    bit_exact = bool(np.array_equal(in_memory, from_files)) and bool(
        np.array_equal(predict_int8(model, qm, qref.build_nodes(qm, part), x, lossy),
                       predict_int8(model, qm, loaded, x, lossy)))  # fmt: skip

    _say(args, "[4/5] scoring held-out windows (float, int8, message loss)")
    gap = int8_gap(model, qm, part, data.test, max_windows=args.test_windows)
    rob = robustness(model, part, data.test, (0.0, 0.1, 0.2), seeds=3,
                     max_windows=args.test_windows)  # fmt: skip

    _say(args, "[5/5] resources per node")
    res_rows = {
        "cats_pruned": resource.node_resources(cfg, part.nodes, partition=part),
        "allgather": resource.node_resources(cfg, part.nodes, method="allgather"),
        "single": resource.node_resources(cfg, 1, method="single"),
    }
    result = {
        "dataset": data.name,
        "config": cfg.to_dict(),
        "nodes": part.nodes,
        "pruning_ratio": part.pruning_ratio(),
        "partition_hash": summary["partition_hash"],
        "partition_dir": str(part_dir),
        "checkpoint": str(ck_path),
        "trained": not reuse,
        "train_wall_s": train_metrics.get("wall_time_s"),
        "artefacts_bit_exact": bit_exact,
        "test": gap,
        "robustness": [{k: r[k] for k in ("loss_rate", "mse", "ratio")} for r in rob],
        "resources": {
            k: {
                m: v["max"][m]
                for m in ("ram_bytes", "flash_bytes", "air_payload_bytes", "air_frames")
            }
            for k, v in res_rows.items()
        },  # fmt: skip
        "wall_s": time.perf_counter() - t0,
    }
    (args.out / "demo.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    if not args.json:
        _print(result)
    if not bit_exact:
        raise ValueError("reloaded artefacts do not reproduce the in-memory integer swarm")
    return result


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
    print(f"\nartefacts in {r['partition_dir']} (hash {r['partition_hash'][:16]}), reload "
          f"bit-exact: {r['artefacts_bit_exact']}; total {r['wall_s']:.0f} s")  # fmt: skip
