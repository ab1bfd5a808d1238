"""`cats export`: partition a model into per-node artefacts (manifest + weights)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cats.artefacts.export import export_partition, untrained
from cats.model.partition import Partition
from cats.quant.int8 import load_for_export


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write per-node manifests and weight blobs",
                       description=__doc__.splitlines()[0])  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="trained checkpoint from `cats train`")
    src.add_argument("--preset", help="export an untrained model of this preset")
    add_untrained_args(p)
    p.add_argument("--nodes", type=int, help="D (default: the checkpoint's partition)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=run)


def add_untrained_args(p: argparse.ArgumentParser) -> None:
    """The shape options of an untrained --preset model (`cats export`, `west cats-partition`)."""
    p.add_argument("--init-seed", type=int, default=0, help="seed of the untrained model")
    p.add_argument(
        "--io",
        choices=("lean", "paper"),
        help="input/output blocks of the untrained model (default: the preset's)",
    )
    p.add_argument("--io-hidden", type=int, help="width of the paper blocks' MLPs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.preset:
        if args.nodes is None:
            raise ValueError("--nodes is required with --preset")
        overrides = {k: v for k, v in (("io", args.io), ("io_hidden", args.io_hidden)) if v}
        _, qm = untrained(args.preset, args.init_seed, **overrides)
        part = Partition.full(qm.cfg, args.nodes)
    else:
        if args.io or args.io_hidden:
            raise ValueError("--io and --io-hidden shape an untrained --preset model only")
        qm, part = load_for_export(args.checkpoint, args.nodes)
    summary = export_partition(qm, part, args.out)
    summary["out"] = str(args.out)
    if not args.json:
        print(
            f"exported {summary['nodes']} nodes to {args.out} "
            f"(hash {summary['partition_hash'][:16]}, pruning {summary['pruning_ratio']:.2f})"
        )
        for n in summary["node_files"]:
            print(f"  node {n['node']:2d}: {n['blob_bytes']:8d} bytes, {n['tensors']} tensors")
    return summary
