"""ViT image classification on the swarm: accuracy float, int8, C swarm, and under message loss.

The `vit-digits` preset (8 x 8 handwritten digits bundled in scikit-learn, 2 x 2 pixel patches
-> 16 tokens, mean-pooled, 10 classes) is trained twice with the same seed and shape for a
D-node swarm, once plainly and once with message-dropout, both with QAT at the end. For each:

* float: the partitioned torch model on the 360 test images (fixed split);
* int8: the integer reference `cats.quant.qref` (what every node computes);
* C: the exported partition on the host C build (`cats.firmware.cnode`), every output
  compared bit for bit with qref;
* sim: `cats sim` (C node processes + radio medium) on a few test images, clean and with iid
  frame loss, every result checked bit for bit against qref (with the medium's actual losses);
* loss: float and int8 accuracy when every sender -> receiver frame of every exchange is lost
  independently with probability 5 / 10 / 20 % (`cats.model.dropout.loss_delivery`, as
  `cats evaluate`), mean over several loss patterns (seeds); float draws a mask per image,
  int8 one per 4 images (qref runs them as one batch).

    .venv/bin/python bench/vit/run.py --out bench/vit/results.json
    .venv/bin/python bench/vit/run.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats.artefacts import export
from cats.firmware import cnode
from cats.model.config import preset
from cats.model.dropout import DropoutConfig, loss_delivery
from cats.model.partition import Partition
from cats.model.transformer import CatsModel
from cats.quant import qref
from cats.quant.int8 import quantized
from cats.training.evaluate import evaluate
from cats.training.train import TrainOptions, prepare_data, train_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="vit-digits")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=800, help="training steps per model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--p-link", type=float, default=0.1)
    p.add_argument("--p-receiver", type=float, default=0.02)
    p.add_argument("--p-sender", type=float, default=0.02)
    p.add_argument("--losses", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    p.add_argument("--seeds", type=int, default=5, help="loss patterns per rate (float)")
    p.add_argument("--int8-seeds", type=int, default=3, help="loss patterns per rate (int8)")
    p.add_argument("--seed", type=int, default=0, help="training seed (both models)")
    p.add_argument("--sim-inferences", type=int, default=8, help="test images through cats sim")
    p.add_argument("--sim-loss", default="iid:0.1", help="medium loss of the lossy sim run")
    p.add_argument("--quick", action="store_true", help="smoke version (few steps, 1 seed)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--workdir", type=Path, default=None, help="keep checkpoints/partitions")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.int8_seeds, args.sim_inferences = 60, 1, 1, 2
    return args


def int8_inputs(model: CatsModel, qm: qref.QModel, images: np.ndarray) -> np.ndarray:
    """What the gateway broadcasts: per-image standardised, patch-ordered int8 pixels."""
    patches = model.normalise(torch.from_numpy(images))[0].numpy()
    return qref.quantize_input(patches, qm.input_scale)


def int8_loss_accuracy(
    qnodes: list[qref.Node],
    part: Partition,
    inputs: np.ndarray,
    labels: np.ndarray,
    rate: float,
    seeds: int,
    chunk: int = 4,
) -> list[float]:
    """int8 (qref) accuracy per loss seed. The integer swarm runs `chunk` images at a time,
    which then share one delivery mask per exchange (a fresh mask per chunk and exchange)."""
    out = []
    for seed in range(seeds if rate > 0 else 1):
        gen = torch.Generator().manual_seed(seed)
        correct = 0
        for lo in range(0, len(inputs), chunk):
            dl = loss_delivery(part, None, 1, rate, gen)
            y = qref.run_swarm(
                qnodes,
                inputs[lo : lo + chunk],
                {e: m[0].numpy().astype(bool) for e, m in dl.items()},
            )
            correct += int((y.argmax(-1) == labels[lo : lo + chunk]).sum())
        out.append(correct / len(inputs))
    return out


def bench_model(
    label: str, dropout: DropoutConfig, args: argparse.Namespace, bundle, workdir: Path
) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    t0 = time.perf_counter()
    opts = TrainOptions(nodes=args.nodes, steps=args.steps, batch=args.batch, lr=args.lr,
                        dropout=dropout, qat=True, qat_fraction=0.2, seed=args.seed,
                        eval_every=50, progress=False)  # fmt: skip
    res = train_model(cfg, bundle, opts)
    train_s = time.perf_counter() - t0
    res.save(workdir / label)
    model, part, test = res.model, res.part, bundle.test
    qm = quantized(model, bundle.train)
    qnodes = qref.build_nodes(qm, part)
    inputs = int8_inputs(model, qm, test.images)
    labels = test.labels

    # clean: float, int8 (qref), C (host build), every C output == qref
    float_acc = evaluate(model, part, test, 0.0)["accuracy"]
    q_out = np.stack([qref.run_swarm(qnodes, x) for x in inputs])
    pdir = workdir / label / "partition"
    export.export_partition(qm, part, pdir)
    cnodes = cnode.load_swarm(pdir)
    c_out = np.stack([cnode.run_swarm(cnodes, x, inference_id=i) for i, x in enumerate(inputs)])
    row: dict[str, Any] = {
        "training": label,
        "dropout": dropout.to_dict(),
        "train_s": train_s,
        "float": float_acc,
        "int8": float((q_out.argmax(1) == labels).mean()),
        "c": float((c_out.argmax(1) == labels).mean()),
        "c_bit_exact": int((c_out == q_out).all(axis=1).sum()),
        "test_images": len(labels),
    }
    # the simulated swarm (C node processes + medium), clean and lossy, checked against qref
    from cats.sim.run import simulate
    from cats.sim.swarm import build_executables

    build_executables()
    row["sim"] = {}
    for name, loss in (("clean", []), ("lossy", [args.sim_loss])):
        s = simulate(pdir, inferences=args.sim_inferences, data="digits", loss=loss)
        row["sim"][name] = {k: s.get(k) for k in ("ok", "bit_exact", "accuracy", "inferences",
                                                  "frames_lost", "frames_sent", "loss",
                                                  "modelled_latency_s", "air_bytes")}  # fmt: skip
    # message loss: float and int8
    row["loss"] = {}
    for rate in args.losses:
        f = evaluate(model, part, test, rate, args.seeds)
        q = int8_loss_accuracy(qnodes, part, inputs, labels, rate, args.int8_seeds)
        row["loss"][f"{rate:g}"] = {
            "float": f["accuracy"],
            "float_per_seed": f["per_seed"]["accuracy"],
            "int8": float(np.mean(q)),
            "int8_per_seed": q,
        }
    row["eval_s"] = time.perf_counter() - t0 - train_s
    return row


def table(rows: list[dict[str, Any]], losses: list[float]) -> str:
    head = ["training", "float", "int8 (qref)", "C swarm (bit-exact)", "cats sim"]
    head += [f"{r * 100:g} % loss float / int8" for r in losses if r > 0]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sim = r["sim"]["clean"]
        cells = [
            f"{r['training']} message-dropout",
            f"{r['float'] * 100:.1f} %",
            f"{r['int8'] * 100:.1f} %",
            f"{r['c'] * 100:.1f} % ({r['c_bit_exact']}/{r['test_images']})",
            f"{sim['accuracy'] * 100:.0f} % of {sim['inferences']}, bit-exact: "
            f"{'yes' if sim['bit_exact'] and r['sim']['lossy']['bit_exact'] else 'NO'}",
        ]
        for rate in losses:
            if rate > 0:
                x = r["loss"][f"{rate:g}"]
                cells.append(f"{x['float'] * 100:.1f} % / {x['int8'] * 100:.1f} %")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = preset(args.preset)
    bundle = prepare_data("digits", cfg)
    drop = DropoutConfig(args.p_link, args.p_receiver, args.p_sender)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        workdir = args.workdir or Path(tmp)
        # the two models are independent: one process each (torch on one thread each)
        jobs = [pool.submit(bench_model, lab, d, args, bundle, workdir)
                for lab, d in (("without", DropoutConfig()), ("with", drop))]  # fmt: skip
        rows = [j.result() for j in jobs]
    out = {
        "config": cfg.to_dict(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "split": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test)},
        "rows": rows,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(table(rows, args.losses))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    ok = all(r["c_bit_exact"] == r["test_images"] for r in rows) and all(
        s["ok"] and s["bit_exact"] for r in rows for s in r["sim"].values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
