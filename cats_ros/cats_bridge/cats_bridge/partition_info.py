"""What the bridge needs to know about the exported partition (``partition.json`` of
``cats export``): its hash, the model shape and the int8 scales of input and output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PartitionInfo:
    partition_hash: str  # hex sha256
    task: str  # "forecast" or "classify"
    context: int  # input samples
    tokens: int
    patch: int
    outputs: int  # horizon (forecast) or n_classes (classify)
    input_scale: float
    output_scale: float
    nodes: int
    exchanges: int  # SomeGather exchanges per inference: 4 x blocks + 1 (+ 4 with paper io)
    image_width: int = 0  # > 0: the input is an image this wide, cut into square patches (ViT)
    io: str = "lean"  # "paper": each token's input is its patch followed by its padding flags

    @classmethod
    def from_dir(cls, partition_dir: str | Path) -> PartitionInfo:
        path = Path(partition_dir) / "partition.json"
        if not path.is_file():
            raise FileNotFoundError(f"no partition.json in {partition_dir} (a `cats export` dir)")
        summary = json.loads(path.read_text())
        cfg = summary["config"]
        task = cfg.get("task", "forecast")
        return cls(
            partition_hash=str(summary["partition_hash"]).lower(),
            task=task,
            context=int(cfg["context"]),
            tokens=int(cfg["context"]) // int(cfg["patch"]),
            patch=int(cfg["patch"]),
            outputs=int(cfg["horizon"] if task == "forecast" else cfg["n_classes"]),
            input_scale=float(summary["input_scale"]),
            output_scale=float(summary["output_scale"]),
            nodes=int(summary["nodes"]),
            exchanges=4 * int(cfg["blocks"]) + (4 if cfg.get("io") == "paper" else 1),
            image_width=int(cfg.get("image_width", 0)),
            io=str(cfg.get("io", "lean")),
        )
