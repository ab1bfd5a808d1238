"""`cats train`: train a model and write its checkpoint, metrics and forecast plot."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cats.model.config import preset
from cats.model.dropout import DropoutConfig, paper_dropout
from cats.model.prune import IMPORTANCES
from cats.training.recipe import RECIPES, paper_recipe
from cats.training.train import TrainOptions, prepare_data, train_model

# What each option defaults to without a recipe (argparse defaults are None so that a recipe
# can tell which options were given).
_DEFAULTS = {"epochs": 3, "batch": 64, "lr": 1e-3, "nodes": 8, "max_eval_windows": 2000}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a CATS model (message-dropout, SomeGather pruning, QAT)",
        description="Train a CATS transformer on a CSV series (or the bundled default data) "
        "and write checkpoint.pt, metrics.json and forecast.png.",
    )
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="default",
        help="paper: the reference code's regime (ETT OT column, 60/20/20 split, context 512, "
        "batch 512 x 50 epochs, Adam lr 1e-3 wd 1e-3, warm-up + cosine, dropout 0.1, ReLU, "
        "random padding, paper input/output blocks, all-token metric); options given "
        "explicitly override it",
    )
    p.add_argument(
        "--message-dropout",
        type=float,
        default=None,
        help="message-dropout p for all three modes at once (the paper's setting)",
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
    p.add_argument("--nodes", type=int, default=None, help="D, the number of swarm nodes (8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (3; paper recipe 50)")
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides --epochs)")
    p.add_argument("--batch", type=int, default=None, help="batch size (64; paper recipe 512)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (1e-3)")
    p.add_argument("--dropout-link", type=float, default=0.0, help="P(link drops a frame)")
    p.add_argument("--dropout-receiver", type=float, default=0.0, help="P(receiver hears none)")
    p.add_argument("--dropout-sender", type=float, default=0.0, help="P(sender heard by none)")
    p.add_argument("--prune", type=float, default=0.0, help="SomeGather pruning target ratio")
    p.add_argument("--prune-step", type=float, default=0.1)
    p.add_argument("--finetune-steps", type=int, default=100, help="steps after each prune step")
    p.add_argument(
        "--prune-importance",
        choices=IMPORTANCES,
        default="remote",
        help="column importance: L1 of the remote consuming rows, or of the whole row (paper)",
    )
    p.add_argument(
        "--prune-at-init",
        action="store_true",
        help="prune the initialised model to --prune, then train the masked model (paper)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--qat", action="store_true", help="fake-quantised fine-tune at the end")
    p.add_argument("--qat-fraction", type=float, default=0.2, help="share of steps under QAT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-windows", type=int, default=None, help="random subset")
    p.add_argument(
        "--max-eval-windows", type=int, default=None, help="validation subset (2000; 0: all)"
    )
    p.add_argument("--max-test-windows", type=int, default=None, help="test subset")
    p.add_argument("--out", type=Path, default=None, help="directory for the artefacts")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    names = ("context", "blocks", "features", "heads", "ffn", "horizon", "patch")
    over = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.task is not None:
        over["task"] = args.task
    if args.message_dropout is not None:
        drop = paper_dropout(args.message_dropout)
    else:
        drop = DropoutConfig(args.dropout_link, args.dropout_receiver, args.dropout_sender)
    given = {
        k: getattr(args, k)
        for k in ("epochs", "batch", "lr", "nodes", "max_eval_windows")
        if getattr(args, k) is not None
    }
    if "max_eval_windows" in given:
        given["max_eval_windows"] = given["max_eval_windows"] or None
    common = dict(
        steps=args.steps,
        qat=args.qat,
        qat_fraction=args.qat_fraction,
        prune=args.prune,
        prune_step=args.prune_step,
        finetune_steps=args.finetune_steps,
        prune_importance=args.prune_importance,
        prune_at_init=args.prune_at_init,
        seed=args.seed,
        max_train_windows=args.max_train_windows,
        max_test_windows=args.max_test_windows,
        device=args.device,
        progress=not args.json and sys.stderr.isatty(),
    )
    data_kw: dict[str, Any] = {}
    if args.recipe == "paper":
        rec = paper_recipe(args.message_dropout or 0.0)
        cfg = rec.cfg.replace(**over)
        opts = replace(rec.options, **common, **given)
        if args.message_dropout is None and drop.active:
            opts = replace(opts, dropout=drop)
        data_kw = {"columns": rec.columns, "scheme": rec.scheme}
    else:
        cfg = preset(args.preset, **over)
        opts = TrainOptions(**{**_DEFAULTS, **given}, dropout=drop, **common)
    data = prepare_data(args.data, cfg, **data_kw) if data_kw else args.data
    res = train_model(cfg, data, opts)
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
