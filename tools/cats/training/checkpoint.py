"""Training checkpoints: everything needed to rebuild, evaluate, prune or export a model.

One ``torch.save`` of a plain dict (config, weights incl. quantiser observers, partition kept
sets, dropout config, metrics, data normaliser, dataset name). Only tensors and Python
built-ins are stored, so loading uses ``weights_only=True`` and cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cats.model.config import ModelConfig
from cats.model.dropout import DropoutConfig
from cats.model.partition import Partition, Plan
from cats.model.transformer import CatsModel

FORMAT = "cats-checkpoint"
VERSION = 1
_REQUIRED = ("format", "version", "config", "state_dict", "nodes", "kept")


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``model()`` and ``partition()`` rebuild the live objects."""

    cfg: ModelConfig
    state_dict: dict[str, torch.Tensor]
    nodes: int
    kept: list[np.ndarray]
    quant: bool = False
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    metrics: dict[str, Any] = field(default_factory=dict)
    normaliser: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]}
    dataset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def model(self) -> CatsModel:
        m = CatsModel(self.cfg)
        m.load_state_dict(self.state_dict)
        m.set_quant(self.quant)
        return m.eval()

    def partition(self) -> Partition:
        part = Partition(Plan.build(self.cfg, self.nodes), [k.copy() for k in self.kept])
        part.validate()
        return part


def _plain(obj: Any) -> Any:
    """JSON-plain copy (numpy scalars/arrays -> lists/numbers), so weights_only loading works."""

    def default(o: Any) -> Any:
        return o.tolist() if hasattr(o, "tolist") else str(o)

    return json.loads(json.dumps(obj, default=default))


def save_checkpoint(
    path: str | Path,
    model: CatsModel,
    part: Partition,
    *,
    dropout: DropoutConfig | None = None,
    metrics: dict[str, Any] | None = None,
    normaliser: dict[str, list[float]] | None = None,
    dataset: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename, so a crash never leaves half a file)."""
    if part.cfg != model.cfg:
        raise ValueError("partition was made for a different model configuration")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "quant": bool(model.quant),
        "nodes": int(part.nodes),
        "kept": [[bool(b) for b in k] for k in part.kept],
        "dropout": (dropout or DropoutConfig()).to_dict(),
        "metrics": _plain(metrics or {}),
        "normaliser": _plain(normaliser),
        "dataset": dataset,
        "extra": _plain(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; every failure is a ValueError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ValueError(f"{path}: not a readable checkpoint ({why})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a CATS checkpoint (missing format marker)")
    missing = [k for k in _REQUIRED if k not in blob]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}")
    if blob["version"] != VERSION:
        raise ValueError(f"{path}: checkpoint version {blob['version']}, expected {VERSION}")
    try:
        cfg = ModelConfig.from_dict(blob["config"])
        kept = [np.asarray(k, dtype=bool) for k in blob["kept"]]
        ck = Checkpoint(
            cfg=cfg,
            state_dict=blob["state_dict"],
            nodes=int(blob["nodes"]),
            kept=kept,
            quant=bool(blob.get("quant", False)),
            dropout=DropoutConfig.from_dict(blob.get("dropout")),
            metrics=blob.get("metrics") or {},
            normaliser=blob.get("normaliser"),
            dataset=blob.get("dataset"),
            extra=blob.get("extra") or {},
        )
        ck.partition()  # validates D against the config and the kept-set shapes
        CatsModel(cfg).load_state_dict(ck.state_dict)  # validates weight names and shapes
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise ValueError(f"{path}: invalid checkpoint: {exc}") from None
    return ck
