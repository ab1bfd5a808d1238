"""Training: AdamW on every token's forecast, with message-dropout, SomeGather pruning and QAT.

The schedule of one run (each phase keeps its best validation state):

1. float training (cosine learning rate with warm-up);
2. with ``qat``: the last ``qat_fraction`` of the steps with fake quantisation switched on (the
   activation observers have been tracking ranges all along, so scales are warm);
3. with ``prune``: stepwise SomeGather pruning, fine-tuning after every step.

Forecasting minimises the MSE over all token targets (every token predicts the horizon after
its patch, ``token_targets``), classification the cross-entropy. The partitioned forward (the
semantics the swarm runs) is used whenever it can differ from the monolithic one: message
dropout or pruned kept sets with D > 1; otherwise the cheaper monolithic path computes the same.

``train_model`` is the library entry point (bench and demo call it); ``cats train`` wraps it.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cats.model.config import ModelConfig
from cats.model.dropout import DropoutConfig, sample_delivery
from cats.model.partition import Partition
from cats.model.prune import IMPORTANCES, prune
from cats.model.transformer import CatsModel, token_targets
from cats.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cats.training.data import (
    DIGITS_NAME,
    ClassificationWindows,
    ForecastWindows,
    ImageSet,
    Normaliser,
    dataset_from_arg,
    image_dataset,
    split_series,
)
from cats.training.evaluate import (
    METRICS,
    eval_indices,
    evaluate,
    is_pruned,
    needs_partition,
    val_loss,
)

Windows = ForecastWindows | ClassificationWindows | ImageSet


# --------------------------------------------------------------------------- data


@dataclass
class DataBundle:
    """Train/val/test windows of one dataset, normalised with train statistics."""

    name: str
    source: str  # what --data said: a CSV path or "default"
    scheme: str
    normaliser: Normaliser
    train: Windows
    val: Windows
    test: Windows
    columns: list[str] | None = None  # the channels kept (None: all)

    def normaliser_dict(self) -> dict[str, list[float]]:
        return {
            "mean": self.normaliser.mean.tolist(),
            "std": self.normaliser.std.tolist(),
        }


def prepare_data(
    data: str | Path | None,
    cfg: ModelConfig,
    *,
    normaliser: Normaliser | dict[str, list[float]] | None = None,
    stride: int = 1,
    columns: list[str] | None = None,
    scheme: str | None = None,
) -> DataBundle:
    """Load `data` (CSV path, or None/"default"; for an image model "digits"), split it and
    cut windows for `cfg`; keep only `columns` when given, split by `scheme` when given (see
    ``dataset_from_arg``).

    A given `normaliser` (e.g. a checkpoint's) replaces the one fitted on the train part, so
    evaluation sees exactly the scaling the model was trained with."""
    shape = cfg.image_shape
    if shape is not None:  # a ViT: labelled images with a fixed split, no normaliser to fit
        source = DIGITS_NAME if data is None or str(data) == "default" else str(data)
        train, val, test = image_dataset(source, shape)
        if cfg.n_classes != train.n_classes:
            raise ValueError(f"{source} has {train.n_classes} classes, not {cfg.n_classes}")
        ident = Normaliser(np.zeros(1, np.float32), np.ones(1, np.float32))
        return DataBundle(source, source, "fixed", ident, train, val, test)
    source = "default" if data is None else str(data)
    name, values, scheme = dataset_from_arg(
        data, context=cfg.context, horizon=cfg.horizon, columns=columns, scheme=scheme
    )
    split = split_series(values, scheme, cfg.context, cfg.horizon, normalise=False)
    norm = split.normaliser
    if isinstance(normaliser, dict):
        normaliser = Normaliser(
            np.asarray(normaliser["mean"], dtype=np.float32),
            np.asarray(normaliser["std"], dtype=np.float32),
        )
    if normaliser is not None:
        if normaliser.mean.shape != norm.mean.shape:
            raise ValueError(
                f"{source}: {norm.mean.size} channels, but the normaliser has "
                f"{normaliser.mean.size}"
            )
        norm = normaliser
    parts = [norm.apply(split.part(p)) for p in ("train", "val", "test")]
    if cfg.task == "forecast":
        wins = [ForecastWindows(s, cfg.context, cfg.horizon, stride) for s in parts]
    else:
        wins = [
            ClassificationWindows(s, cfg.context, cfg.horizon, stride, n_classes=cfg.n_classes)
            for s in parts
        ]
    return DataBundle(name, source, scheme, norm, *wins, columns=list(columns) if columns else None)


def data_kwargs_of(ck: Checkpoint) -> dict[str, Any]:
    """The column selection and split scheme a checkpoint was trained with (for prepare_data)."""
    return {"columns": ck.extra.get("columns"), "scheme": ck.extra.get("scheme")}


def data_arg_of(ck: Checkpoint, override: str | None) -> str:
    """The data a checkpoint was trained on, unless overridden."""
    if override is not None:
        return override
    src = ck.extra.get("data")
    if not src:
        raise ValueError("the checkpoint does not record its data; pass --data")
    return src


# --------------------------------------------------------------------------- options


@dataclass
class TrainOptions:
    """Everything about a run except the model shape (ModelConfig) and the data."""

    nodes: int = 8
    epochs: int = 3
    steps: int | None = None  # total optimiser steps; overrides epochs
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of the main phase
    clip: float = 1.0
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    qat: bool = False
    qat_fraction: float = 0.2
    prune: float = 0.0
    prune_step: float = 0.1
    finetune_steps: int = 100
    finetune_lr: float | None = None  # default lr / 3
    seed: int = 0
    max_train_windows: int | None = None
    max_eval_windows: int | None = 2000  # validation subset (evenly spaced)
    max_test_windows: int | None = None  # None: the whole test split, as in the literature
    eval_every: int | None = None  # steps; default: per epoch, at least 5 times a phase
    progress: bool = True
    # the paper recipe's regime (cats.training.recipe); the defaults keep the earlier behaviour
    metric: str = "last"  # validation/test forecast metric: "last" token or "all" tokens
    random_padding: bool = False  # TimesFM-style: pad the first r ~ U{0..P-1} samples, flagged
    warmup_epochs: float | None = None  # warm-up length in epochs (overrides `warmup`)
    warmup_start: float = 0.0  # warm-up starts at warmup_start * lr
    lr_floor: float = 0.1  # cosine decays to lr_floor * lr
    prune_importance: str = "remote"  # "remote" rows only, or the whole consuming "row"
    prune_at_init: bool = False  # prune the initialised model, then train the masked one
    device: str = "cpu"  # torch device of training and evaluation ("cuda" on a GPU machine)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError("batch, epochs and steps must be >= 1")
        if not 0 <= self.qat_fraction <= 1:
            raise ValueError("qat_fraction must be in [0, 1]")
        if not 0 <= self.prune < 1:
            raise ValueError(f"prune target must be in [0, 1), not {self.prune}")
        if self.finetune_steps < 0:
            raise ValueError("finetune_steps must be >= 0")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {self.metric!r}")
        if self.prune_importance not in IMPORTANCES:
            raise ValueError(f"prune_importance must be one of {IMPORTANCES}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropout"] = self.dropout.to_dict()
        return d


@dataclass
class TrainResult:
    model: CatsModel
    part: Partition
    data: DataBundle
    options: TrainOptions
    metrics: dict[str, Any]

    def save(self, out: str | Path) -> dict[str, str]:
        """Write checkpoint.pt, metrics.json and (forecasting) forecast.png into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"checkpoint": str(out / "checkpoint.pt"), "metrics": str(out / "metrics.json")}
        save_checkpoint(
            out / "checkpoint.pt",
            self.model,
            self.part,
            dropout=self.options.dropout,
            metrics=self.metrics,
            normaliser=self.data.normaliser_dict(),
            dataset=self.data.name,
            extra={
                "data": self.data.source,
                "columns": self.data.columns,
                "scheme": self.data.scheme,
                "options": self.options.to_dict(),
            },
        )
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=2, sort_keys=True))
        if self.model.cfg.task == "forecast":
            plot_forecasts(
                self.model,
                self.part,
                self.data.test,
                out / "forecast.png",
                title=f"{self.data.name} test, D={self.part.nodes}",
            )
            paths["plot"] = str(out / "forecast.png")
        return paths


# --------------------------------------------------------------------------- the loop


class Trainer:
    """One model + partition + optimiser; `run` trains a phase and keeps its best state."""

    def __init__(self, model: CatsModel, part: Partition, data: DataBundle, opts: TrainOptions):
        self.model, self.part, self.data, self.opts = model, part, data, opts
        self.device = torch.device(opts.device)
        model.to(self.device)
        self.cfg = model.cfg
        self.rng = np.random.default_rng(opts.seed)
        self.gen = torch.Generator().manual_seed(opts.seed + 1)
        n = len(data.train)
        if opts.max_train_windows is not None and opts.max_train_windows < n:
            self.train_idx = np.sort(self.rng.choice(n, opts.max_train_windows, replace=False))
        else:
            self.train_idx = np.arange(n)
        self.opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_idx) / opts.batch))
        self.history: list[dict[str, Any]] = []
        self.total_steps = 0
        self._order: list[np.ndarray] = []

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._order:
            perm = self.rng.permutation(self.train_idx)
            self._order = [
                perm[i : i + self.opts.batch] for i in range(0, len(perm), self.opts.batch)
            ][::-1]
        xb, yb = self.data.train.batch(self._order.pop())
        dev = self.device
        return torch.from_numpy(xb).to(dev), torch.from_numpy(np.asarray(yb)).to(dev)

    def padding(self, batch: int) -> torch.Tensor | None:
        """Random padding flags (B, context): the first r ~ U{0, .., P-1} samples of each window
        (the reference trainer's TimesFM-style padding; none at evaluation)."""
        if not self.opts.random_padding:
            return None
        r = torch.randint(0, self.cfg.patch, (batch, 1), generator=self.gen)
        return (torch.arange(self.cfg.context)[None, :] < r).float().to(self.device)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        drop = self.opts.dropout if self.part.nodes > 1 else DropoutConfig()
        pad = self.padding(len(x))
        if needs_partition(self.part, drop.active):
            delivery = sample_delivery(self.part, None, len(x), drop, self.gen)
            out = self.model(x, self.part, delivery, pad=pad)
        else:
            out = self.model(x, pad=pad)
        if self.cfg.task == "classify":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, token_targets(self.cfg, x, y))

    def validate(self) -> float:
        res = evaluate(
            self.model,
            self.part,
            self.data.val,
            0.0,
            max_windows=self.opts.max_eval_windows,
            metric=self.opts.metric,
        )
        return val_loss(res)

    def run(self, steps: int, lr_at: Callable[[int], float], phase: str) -> dict[str, Any]:
        """Train `steps` steps; validate at the start, every eval interval and at the end; end
        with the best validated state (the start counts: a phase never makes things worse)."""
        opts = self.opts
        every = opts.eval_every or min(self.steps_per_epoch, max(1, math.ceil(steps / 5)))
        best = initial = self.validate()
        best_state = copy.deepcopy(self.model.state_dict())
        self.history.append({"phase": phase, "step": 0, "epoch": 0.0, "val_loss": initial})
        self.model.train()
        run_loss, run_n = 0.0, 0
        bar = tqdm(
            total=steps,
            desc=phase,
            leave=False,
            disable=not opts.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for step in range(1, steps + 1):
            for g in self.opt.param_groups:
                g["lr"] = lr_at(step - 1)
            x, y = self._next_batch()
            loss = self.loss(x, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if opts.clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.clip)
            self.opt.step()
            run_loss += loss.item()
            run_n += 1
            self.total_steps += 1
            bar.update(1)
            if step % every == 0 or step == steps:
                v = self.validate()
                self.model.train()
                rec = {
                    "phase": phase,
                    "step": step,
                    "epoch": step / self.steps_per_epoch,
                    "train_loss": run_loss / run_n,
                    "val_loss": v,
                }
                self.history.append(rec)
                bar.set_postfix(train=f"{rec['train_loss']:.4f}", val=f"{v:.4f}")
                run_loss, run_n = 0.0, 0
                if v < best:
                    best, best_state = v, copy.deepcopy(self.model.state_dict())
        bar.close()
        self.model.load_state_dict(best_state)
        self.model.eval()
        return {"phase": phase, "steps": steps, "initial_val_loss": initial, "best_val_loss": best}


def cosine_lr(
    base: float, total: int, warmup: int, floor: float = 0.1, start: float = 0.0
) -> Callable[[int], float]:
    """Linear warm-up (from start * base, or from base / warmup when start is 0), then cosine
    decay to floor * base, over `total` steps."""

    def at(step: int) -> float:
        if step < warmup:
            if start > 0:
                return base * (start + (1 - start) * step / warmup)
            return base * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    return at


def train_model(
    cfg: ModelConfig,
    data: DataBundle | str | Path | None = None,
    options: TrainOptions | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a CATS model; `data` is a DataBundle or what `prepare_data` accepts; keyword
    overrides set TrainOptions fields. Returns the trained model, its (pruned) partition and
    metrics (test MSE/MAE in the train-normalised space, losses, wall time, pruning ratio)."""
    opts = options or TrainOptions()
    if overrides:
        opts = TrainOptions(**{**asdict(opts), "dropout": opts.dropout, **overrides})
    t0 = time.perf_counter()
    if not isinstance(data, DataBundle):
        data = prepare_data(data, cfg)
    torch.manual_seed(opts.seed)
    model = CatsModel(cfg)
    part = Partition.full(cfg, opts.nodes)
    tr = Trainer(model, part, data, opts)

    notes = []
    prune_hist: list[dict[str, Any]] = []
    if opts.prune_at_init and opts.prune > 0 and part.nodes > 1:
        # the reference's default regime: prune the initialised model, train the masked one
        prune_hist = prune(model, part, opts.prune, opts.prune_step, None, opts.prune_importance)
        notes.append(f"pruned to {part.pruning_ratio():.2f} at initialisation")

    total = opts.steps or opts.epochs * tr.steps_per_epoch
    qat_steps = min(total, max(1, round(opts.qat_fraction * total))) if opts.qat else 0
    warm = (
        round(opts.warmup_epochs * tr.steps_per_epoch)
        if opts.warmup_epochs is not None
        else round(opts.warmup * total)
    )
    lr = cosine_lr(opts.lr, total, max(1, warm), opts.lr_floor, opts.warmup_start)
    phases = [tr.run(total - qat_steps, lr, "float")] if total > qat_steps else []
    if opts.qat:
        model.set_quant(True)
        offset = total - qat_steps
        phases.append(tr.run(qat_steps, lambda s: lr(s + offset), "qat"))

    if part.nodes == 1 and (opts.prune > 0 or opts.dropout.active):
        notes.append("D = 1: nothing crosses the air, so pruning and message-dropout are off")
    if opts.prune > 0 and part.nodes > 1 and not opts.prune_at_init:
        ft_lr = opts.finetune_lr if opts.finetune_lr is not None else opts.lr / 3

        def finetune(m: CatsModel, p: Partition) -> dict[str, Any]:
            if opts.finetune_steps == 0:
                return {"steps": 0, "val_loss": tr.validate()}
            return tr.run(opts.finetune_steps, lambda s: ft_lr, f"prune{p.pruning_ratio():.2f}")

        prune_hist = prune(
            model, part, opts.prune, opts.prune_step, finetune, opts.prune_importance
        )

    model.eval()
    test = evaluate(
        model, part, data.test, 0.0, max_windows=opts.max_test_windows, metric=opts.metric
    )
    metrics: dict[str, Any] = {
        "dataset": data.name,
        "data": data.source,
        "scheme": data.scheme,
        "task": cfg.task,
        "config": cfg.to_dict(),
        "nodes": part.nodes,
        "options": opts.to_dict(),
        "windows": {
            "train": int(len(tr.train_idx)),
            "val": int(len(data.val)),
            "test": int(test["windows"]),
        },
        "steps": tr.total_steps,
        "initial_val_loss": tr.history[0]["val_loss"],
        "val_loss": tr.validate(),
        "phases": phases,
        "history": tr.history,
        "pruning_ratio": part.pruning_ratio(),
        "pruning": prune_hist,
        "quant": model.quant,
        "notes": notes,
        "wall_time_s": time.perf_counter() - t0,
    }
    if cfg.task == "forecast":
        metrics.update(test_mse=test["mse"], test_mae=test["mae"])
    else:
        metrics.update(test_ce=test["ce"], test_accuracy=test["accuracy"])
    return TrainResult(model, part, data, opts, metrics)


def prune_checkpoint(
    checkpoint: str | Path,
    *,
    out: str | Path,
    target: float,
    step: float = 0.1,
    data: str | None = None,
    nodes: int | None = None,
    finetune_steps: int = 100,
    batch: int = 64,
    lr: float = 3e-4,
    max_train_windows: int | None = None,
    max_eval_windows: int | None = 2000,
    max_test_windows: int | None = None,
    seed: int = 0,
    progress: bool = True,
    importance: str = "remote",
) -> dict[str, Any]:
    """`cats prune`: prune a trained checkpoint with fine-tuning and save the result."""
    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    bundle = prepare_data(
        data_arg_of(ck, data), ck.cfg, normaliser=ck.normaliser, **data_kwargs_of(ck)
    )
    model = ck.model()
    part = ck.partition() if nodes is None else Partition.full(ck.cfg, nodes)
    if part.nodes == 1:
        raise ValueError("a 1-node partition has nothing to prune; pass --nodes D > 1")
    opts = TrainOptions(
        nodes=part.nodes,
        batch=batch,
        lr=lr,
        dropout=ck.dropout,
        prune=target,
        prune_step=step,
        finetune_steps=finetune_steps,
        finetune_lr=lr,
        prune_importance=importance,
        metric=ck.extra.get("options", {}).get("metric", "last"),
        seed=seed,
        max_train_windows=max_train_windows,
        max_eval_windows=max_eval_windows,
        max_test_windows=max_test_windows,
        progress=progress and sys.stderr.isatty(),
    )
    tr = Trainer(model, part, bundle, opts)
    before = tr.validate()
    hist = prune(
        model,
        part,
        target,
        step,
        lambda m, p: (
            tr.run(finetune_steps, lambda s: lr, f"prune{p.pruning_ratio():.2f}")
            if finetune_steps
            else {"val_loss": tr.validate()}
        ),
        importance,
    )
    test = evaluate(model, part, bundle.test, 0.0, max_windows=max_test_windows, metric=opts.metric)
    metrics = {**ck.metrics}
    metrics.update(
        pruning_ratio=part.pruning_ratio(),
        pruning=hist,
        val_loss_before_prune=before,
        val_loss=tr.validate(),
        history=ck.metrics.get("history", []) + tr.history,
    )
    if ck.cfg.task == "forecast":
        metrics.update(test_mse=test["mse"], test_mae=test["mae"])
    else:
        metrics.update(test_ce=test["ce"], test_accuracy=test["accuracy"])
    res = TrainResult(model, part, bundle, opts, metrics)
    paths = res.save(out)
    return {
        "ok": True,
        **paths,
        "pruning_ratio": part.pruning_ratio(),
        "val_loss_before": before,
        "val_loss": metrics["val_loss"],
        "wall_time_s": time.perf_counter() - t0,
        **{k: v for k, v in metrics.items() if k.startswith("test_")},
    }


# --------------------------------------------------------------------------- plot


def plot_forecasts(
    model: CatsModel,
    part: Partition | None,
    windows: ForecastWindows,
    path: str | Path,
    n: int = 4,
    title: str = "",
) -> None:
    """Forecast vs truth for `n` evenly spaced test windows (context tail shown for scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = eval_indices(len(windows), n)
    xb, yb = windows.batch(idx)
    with torch.no_grad():
        use = part if is_pruned(part) else None
        dev = next(model.parameters()).device
        pred = model.predict(torch.from_numpy(xb).to(dev), use).cpu().numpy()
    cfg = model.cfg
    tail = min(cfg.context, 2 * cfg.horizon)
    fig, axes = plt.subplots(len(idx), 1, figsize=(8, 2.2 * len(idx)), squeeze=False)
    for ax, x, y, p in zip(axes[:, 0], xb, yb, pred, strict=True):
        t_ctx = np.arange(-tail, 0)
        t_fut = np.arange(cfg.horizon)
        ax.plot(t_ctx, x[-tail:], color="0.5", lw=1, label="context")
        ax.plot(t_fut, y, color="k", lw=1.2, label="truth")
        ax.plot(t_fut, p, color="tab:red", lw=1.2, label="forecast")
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_ylabel("normalised")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("steps from forecast start")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
