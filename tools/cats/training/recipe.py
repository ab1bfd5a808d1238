"""Named training recipes: a model shape, a data selection and the training options together.

``paper`` reproduces the regime of the paper's public reference code
(Data-Science-in-Mechanical-Engineering/CATS: parameters/run/ett.yaml, parameters/model/
verytiny.yaml, parameters/optimizer/adam.yaml, trainer.py, dataset_loaders/ETT.py):

* data: the ETT ``OT`` column only, 60/20/20 % train/val/test split, z-scored with the train
  part's mean and standard deviation;
* model: "verytiny" (6 blocks, F = 128, 16 heads, FFN 128, patch 16), context 512, horizon 96,
  ReLU, standard dropout 0.1, the reference's input block (MLP + residual on patch and padding
  flags, its inputs exchanged) and output block (LN -> MLP 128 -> 96 + residual);
* training: batch 512 x 50 epochs, Adam(W) lr 1e-3 with decoupled weight decay 1e-3, 1 warm-up
  epoch from 0.01 lr then cosine decay to 0, gradient clipping at norm 1.0, TimesFM-style random
  padding, the all-token metric, the best validation epoch kept;
* message-dropout: all three modes at the same p (0, 0.01, 0.05 or 0.1 in the paper's table).

``default`` is what ``cats train`` did before recipes existed (TrainOptions' defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cats.model.config import ModelConfig, preset
from cats.model.dropout import paper_dropout
from cats.training.train import TrainOptions

RECIPES = ("default", "paper")


@dataclass(frozen=True)
class Recipe:
    name: str
    cfg: ModelConfig
    options: TrainOptions
    columns: list[str] | None = None  # channels kept (None: all)
    scheme: str | None = None  # split scheme (None: by the file name)
    notes: list[str] = field(default_factory=list)


def paper_recipe(message_dropout: float = 0.0, **option_overrides: Any) -> Recipe:
    """The reference regime at message-dropout p = `message_dropout` (all three modes)."""
    cfg = preset(
        "verytiny",
        context=512,
        horizon=96,
        activation="relu",
        dropout=0.1,
        io="paper",
        io_hidden=128,
    )
    opts = TrainOptions(
        nodes=8,
        epochs=50,
        batch=512,
        lr=1e-3,
        weight_decay=1e-3,
        warmup_epochs=1.0,
        warmup_start=0.01,
        lr_floor=0.0,
        clip=1.0,
        dropout=paper_dropout(message_dropout),
        metric="all",
        random_padding=True,
        max_eval_windows=None,  # the whole validation split, every epoch
        max_test_windows=None,
    )
    if option_overrides:
        opts = replace(opts, **option_overrides)
    return Recipe("paper", cfg, opts, columns=["OT"], scheme="paper")


def recipe(name: str, message_dropout: float = 0.0, **option_overrides: Any) -> Recipe:
    if name == "paper":
        return paper_recipe(message_dropout, **option_overrides)
    if name == "default":
        opts = replace(TrainOptions(), **option_overrides)
        return Recipe("default", preset("demo"), opts)
    raise ValueError(f"unknown recipe {name!r}; choose from {RECIPES}")
