"""`cats prune`: stepwise SomeGather pruning of a checkpoint, fine-tuned after each step."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cats.model.prune import IMPORTANCES
from cats.training.train import prune_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="SomeGather-prune a trained checkpoint (stepwise, fine-tuning in between)",
        description="Prune a checkpoint's partition to a target ratio, fine-tuning between "
        "steps on the checkpoint's data, and write a new checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="input checkpoint.pt")
    p.add_argument("--data", default=None, help="CSV path or 'default' (default: as trained)")
    p.add_argument("--target", type=float, required=True, help="pruning ratio, e.g. 0.5")
    p.add_argument("--step", type=float, default=0.1, help="ratio pruned per step")
    p.add_argument("--nodes", type=int, default=None, help="re-partition for D nodes first")
    p.add_argument("--finetune-steps", type=int, default=100, help="optimizer steps per step")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-train-windows", type=int, default=None)
    p.add_argument("--max-eval-windows", type=int, default=2000, help="validation subset")
    p.add_argument("--max-test-windows", type=int, default=None, help="test subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--importance",
        choices=IMPORTANCES,
        default="remote",
        help="column importance: L1 of the remote consuming rows, or of the whole row (paper)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args: argparse.Namespace) -> dict[str, Any]:

    return prune_checkpoint(
        args.checkpoint,
        out=args.out,
        target=args.target,
        step=args.step,
        data=args.data,
        nodes=args.nodes,
        finetune_steps=args.finetune_steps,
        batch=args.batch,
        lr=args.lr,
        max_train_windows=args.max_train_windows,
        max_eval_windows=args.max_eval_windows,
        max_test_windows=args.max_test_windows,
        seed=args.seed,
        progress=not args.json,
        importance=args.importance,
    )
