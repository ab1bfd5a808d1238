"""`cats evaluate`: score a checkpoint (float, under message loss, and int8 with --int8)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cats.model.dropout import LOSS_MODELS
from cats.quant.int8 import int8_gap, quantized
from cats.training.checkpoint import load_checkpoint
from cats.training.evaluate import DEFAULT_LOSSES, METRICS, robustness
from cats.training.train import data_arg_of, data_kwargs_of, prepare_data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test MSE/MAE of a checkpoint under message loss",
        description="Evaluate a checkpoint's last-token forecast (or classification) on the "
        "test split, clean and at each message-loss rate, averaged over seeds.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt from cats train")
    p.add_argument("--data", default=None, help="CSV path or 'default' (default: as trained)")
    p.add_argument(
        "--loss",
        type=float,
        nargs="+",
        default=list(DEFAULT_LOSSES),
        help="message-loss rates (fractions, e.g. 0 0.05 0.1)",
    )
    p.add_argument(
        "--loss-model",
        choices=LOSS_MODELS,
        default="paper",
        help="paper: the reference's sampler, all three modes at x (a message = one sender's "
        "whole exchange); link: each sender->receiver message lost with x; frame: each "
        "SomeGather frame lost with x per receiver (the C swarm's iid:x)",
    )
    p.add_argument(
        "--metric",
        choices=METRICS,
        default=None,
        help="forecast metric: last token or all tokens (default: what the checkpoint was "
        "trained with)",
    )
    p.add_argument("--seeds", type=int, default=5, help="loss patterns averaged per rate")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--max-windows", type=int, default=None, help="evenly spaced subset")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument(
        "--int8",
        action="store_true",
        help="also run the integer swarm (cats.quant.qref) and report the int8-vs-float gap",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    ck = load_checkpoint(args.checkpoint)
    if any(not 0 <= r <= 1 for r in args.loss):
        raise ValueError("--loss rates are fractions in [0, 1]")
    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    data = prepare_data(
        data_arg_of(ck, args.data), ck.cfg, normaliser=ck.normaliser, **data_kwargs_of(ck)
    )
    model, part = ck.model(), ck.partition()
    windows = getattr(data, args.split)
    metric = args.metric or ck.extra.get("options", {}).get("metric", "last")
    rows = robustness(
        model,
        part,
        windows,
        args.loss,
        args.seeds,
        args.batch,
        args.max_windows,
        loss_model=args.loss_model,
        metric=metric,
    )
    if not args.json:
        key = "mse" if ck.cfg.task == "forecast" else "ce"
        print(
            f"{args.checkpoint}: {data.name} {args.split}, D={part.nodes}, "
            f"pruning {part.pruning_ratio():.2f}, {rows[0]['windows']} windows, "
            f"loss model {args.loss_model}"
        )
        for r in rows:
            extra = f"  mae {r['mae']:.4f}" if "mae" in r else f"  acc {r['accuracy']:.3f}"
            print(
                f"  loss {r['loss_rate']:5.1%}: {key} {r[key]:.4f} ({r['ratio']:.3f}x clean){extra}"
            )
    gap = None
    if args.int8:
        gap = int8_gap(model, quantized(model, data.train), part, windows, args.max_windows,
                       args.batch)  # fmt: skip
        if not args.json:
            print("  int8 swarm vs float: " + ", ".join(f"{k} {v:.4f}" for k, v in gap.items()
                                                       if k != "windows"))  # fmt: skip
    return {
        "ok": True,
        "int8": gap,
        "checkpoint": str(args.checkpoint),
        "dataset": data.name,
        "split": args.split,
        "loss_model": args.loss_model,
        "nodes": part.nodes,
        "pruning_ratio": part.pruning_ratio(),
        "results": rows,
    }
