"""Robustness to message loss, with and without message-dropout training (the CATS paper's
robustness table, on ETT-h2).

Two models with the same seed, shape and data are trained: one plainly, one with
message-dropout. Both are then run as a D-node swarm on the ETTh2 test split while every
sender -> receiver frame of every exchange is lost independently with probability 0, 1, 5,
10, 20 %, averaged over several loss patterns (seeds). Each test MSE is reported as a ratio to
the clean MSE of the model trained without message-dropout.

    .venv/bin/python bench/robustness/run.py --out bench/robustness/results.json
    .venv/bin/python bench/robustness/run.py --quick     # ~1 minute smoke run

See README.md beside this file for the settings and why they differ from the paper's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cats.base.paths import ETTH2_CSV
from cats.model.config import preset
from cats.model.dropout import DropoutConfig
from cats.training.evaluate import robustness
from cats.training.train import TrainOptions, prepare_data, train_model

PAPER_ETTH2_10 = {"without": 1.338, "with": 1.040}  # paper: test MSE at 10 % loss / clean


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ETTH2_CSV, help="ETTh2.csv")
    p.add_argument("--preset", default="verytiny", help="the paper's model shape")
    p.add_argument("--context", type=int, default=128, help="shrunk from 512 to fit 30 min")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000, help="training steps per model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--p-link", type=float, default=0.1)
    p.add_argument("--p-receiver", type=float, default=0.02)
    p.add_argument("--p-sender", type=float, default=0.02)
    p.add_argument("--losses", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1, 0.2])
    p.add_argument("--seeds", type=int, default=5, help="loss patterns per rate")
    p.add_argument("--seed", type=int, default=0, help="training seed (both models)")
    p.add_argument("--max-train-windows", type=int, default=None)
    p.add_argument(
        "--max-test-windows",
        type=int,
        default=5000,
        help="evenly spaced test windows (0: the whole split, ~19.5k)",
    )
    p.add_argument("--quick", action="store_true", help="~1 minute smoke version")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="also save both models (DIR/plain, DIR/dropout: checkpoint, plot)",
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 150)
        args.seeds = min(args.seeds, 2)
        args.max_test_windows = min(args.max_test_windows or 1000, 1000)
    args.max_test_windows = args.max_test_windows or None
    return args


def table(
    rows: dict[str, list[dict[str, Any]]], losses: list[float], bound: dict[str, dict[str, Any]]
) -> str:
    head = "| training | " + " | ".join(f"{r:.0%} loss" for r in losses)
    head += " | every remote frame lost |"
    lines = [head, "|" + "---|" * (len(losses) + 2)]
    for name, res in rows.items():
        cells = [f"{r['ratio']:.3f}x ({r['mse']:.4f})" for r in res + [bound[name]]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.data.is_file():
        print(f"ETTh2 not found at {args.data}; lay ETT/ETTh2.csv in shared/data", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    over = {"context": args.context} if args.context else {}  # 0: the preset's context
    cfg = preset(args.preset, **over)
    data = prepare_data(args.data, cfg)
    drop = DropoutConfig(args.p_link, args.p_receiver, args.p_sender)
    base = TrainOptions(
        nodes=args.nodes,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        max_train_windows=args.max_train_windows,
        max_test_windows=args.max_test_windows,
        progress=sys.stderr.isatty(),
    )
    variants = {"without message-dropout": DropoutConfig(), "with message-dropout": drop}
    trained, timings = {}, {}
    for name, d in variants.items():
        t = time.perf_counter()
        trained[name] = train_model(cfg, data, base, dropout=d)
        timings[name] = time.perf_counter() - t
        m = trained[name].metrics
        print(
            f"trained {name}: test MSE {m['test_mse']:.4f} MAE {m['test_mae']:.4f} "
            f"({timings[name]:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    # the clean MSE of the model trained without message-dropout is the reference of both rows
    ref_res: float | None = None
    rows: dict[str, list[dict[str, Any]]] = {}
    bound: dict[str, dict[str, Any]] = {}  # loss 100 %: each node sees only its own columns
    for name, res in trained.items():
        t = time.perf_counter()
        rows[name] = robustness(
            res.model,
            res.part,
            data.test,
            args.losses,
            args.seeds,
            max_windows=args.max_test_windows,
            reference=ref_res,
        )
        if ref_res is None:
            ref_res = rows[name][0]["mse"] / rows[name][0]["ratio"]
        bound[name] = robustness(
            res.model,
            res.part,
            data.test,
            [1.0],
            [0],
            max_windows=args.max_test_windows,
            reference=ref_res,
        )[0]
        timings[f"eval {name}"] = time.perf_counter() - t
        if args.save is not None:
            res.save(args.save / ("dropout" if "with " in name else "plain"))
    wall = time.perf_counter() - t0

    print(
        f"\nETTh2 test, D={args.nodes} nodes, preset {args.preset} "
        f"(F={cfg.features}, H={cfg.heads}, L={cfg.blocks}, context {cfg.context}, "
        f"horizon {cfg.horizon}), {args.steps} steps/model, {args.seeds} loss seeds, "
        f"{rows[next(iter(rows))][0]['windows']} test windows"
        + (" [QUICK smoke run]" if args.quick else "")
    )
    print(
        f"message-dropout: p_link={drop.p_link}, p_receiver={drop.p_receiver}, "
        f"p_sender={drop.p_sender} (off-diagonal drop {drop.off_diagonal_drop():.3f})"
    )
    print("entries: test MSE / clean MSE of the model without message-dropout (absolute MSE)\n")
    print(table(rows, args.losses, bound))
    print(
        f"\npaper (ETT-h2, 10 % loss): without {PAPER_ETTH2_10['without']:.3f}x, "
        f"with {PAPER_ETTH2_10['with']:.3f}x"
    )
    print(f"wall time {wall:.0f} s on {torch.get_num_threads()} threads")

    if args.out is not None:
        result = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "config": cfg.to_dict(),
            "dropout": drop.to_dict(),
            "reference_clean_mse": ref_res,
            "rows": rows,
            "every_remote_frame_lost": bound,
            "train_metrics": {
                n: {
                    k: r.metrics[k]
                    for k in (
                        "test_mse",
                        "test_mae",
                        "initial_val_loss",
                        "val_loss",
                        "steps",
                        "wall_time_s",
                    )
                }
                for n, r in trained.items()
            },
            "paper_etth2_10pct": PAPER_ETTH2_10,
            "timings_s": timings,
            "wall_time_s": wall,
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
