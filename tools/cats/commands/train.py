"""`cats train`: train a model and write its checkpoint, metrics and forecast plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cats.model.config import preset
from cats.model.dropout import DropoutConfig
from cats.training.train import TrainOptions, train_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a CATS model (message-dropout, SomeGather pruning, QAT)",
        description="Train a CATS transformer on a CSV series (or the bundled default data) "
        "and write checkpoint.pt, metrics.json and forecast.png.",
    )
    p.add_argument(
        "--data",
        default="default",
        help="CSV path (ETT format), 'default', or 'digits' (image presets; their default)",
    )
    p.add_argument(
        "--preset", default="demo", help="model preset: verytiny, demo, test, vit-digits"
    )
    for name in ("context", "blocks", "features", "heads", "ffn", "horizon", "patch"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"override the preset's {name}")
    p.add_argument(
        "--task", choices=("forecast", "classify"), default=None, help="default: the preset's"
    )
    p.add_argument("--nodes", type=int, default=8, help="D, the number of swarm nodes")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides --epochs)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout-link", type=float, default=0.0, help="P(link drops a frame)")
    p.add_argument("--dropout-receiver", type=float, default=0.0, help="P(receiver hears none)")
    p.add_argument("--dropout-sender", type=float, default=0.0, help="P(sender heard by none)")
    p.add_argument("--prune", type=float, default=0.0, help="SomeGather pruning target ratio")
    p.add_argument("--prune-step", type=float, default=0.1)
    p.add_argument("--finetune-steps", type=int, default=100, help="steps after each prune step")
    p.add_argument("--qat", action="store_true", help="fake-quantised fine-tune at the end")
    p.add_argument("--qat-fraction", type=float, default=0.2, help="share of steps under QAT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-windows", type=int, default=None, help="random subset")
    p.add_argument("--max-eval-windows", type=int, default=2000, help="validation subset")
    p.add_argument("--max-test-windows", type=int, default=None, help="test subset")
    p.add_argument("--out", type=Path, default=None, help="directory for the artefacts")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    names = ("context", "blocks", "features", "heads", "ffn", "horizon", "patch")
    over = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.task is not None:
        over["task"] = args.task
    cfg = preset(args.preset, **over)
    opts = TrainOptions(
        nodes=args.nodes,
        epochs=args.epochs,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        dropout=DropoutConfig(args.dropout_link, args.dropout_receiver, args.dropout_sender),
        qat=args.qat,
        qat_fraction=args.qat_fraction,
        prune=args.prune,
        prune_step=args.prune_step,
        finetune_steps=args.finetune_steps,
        seed=args.seed,
        max_train_windows=args.max_train_windows,
        max_eval_windows=args.max_eval_windows,
        max_test_windows=args.max_test_windows,
        progress=not args.json and sys.stderr.isatty(),
    )
    res = train_model(cfg, args.data, opts)
    out: dict[str, Any] = {"ok": True, **res.metrics}
    if args.out is not None:
        out["files"] = res.save(args.out)
    if not args.json:
        m = res.metrics
        score = (
            f"test MSE {m['test_mse']:.4f}  MAE {m['test_mae']:.4f}"
            if cfg.task == "forecast"
            else f"test accuracy {m['test_accuracy']:.3f}"
        )
        print(
            f"{m['dataset']}: {score}  (val {m['initial_val_loss']:.4f} -> "
            f"{m['val_loss']:.4f}, {m['steps']} steps, D={m['nodes']}, "
            f"pruning {m['pruning_ratio']:.2f}, {m['wall_time_s']:.1f} s)"
        )
        if args.out is not None:
            print(f"wrote {', '.join(out['files'].values())}")
    return out
