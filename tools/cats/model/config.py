"""Model hyper-parameters and the named presets every tool agrees on."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Task = Literal["forecast", "classify"]
Activation = Literal["gelu", "relu"]
IoBlocks = Literal["lean", "paper"]

# Fields added after the first checkpoints and exports: left out of ``to_dict`` while they hold
# their default, so the JSON (and every partition hash built from it) of a lean model is unchanged.
_LATE_FIELDS = ("io", "io_hidden", "dropout")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of one CATS transformer (notation of DESIGN.md: N tokens, F features, H heads)."""

    task: Task = "forecast"
    features: int = 128  # F
    heads: int = 16  # H
    blocks: int = 6  # L
    ffn: int = 128  # hidden width of the two-layer FFN
    patch: int = 16  # samples per token
    context: int = 512  # input samples
    horizon: int = 96  # forecast samples (task == "forecast")
    n_classes: int = 3  # task == "classify"
    # > 0: the input is an image of context // image_width rows of image_width pixels (row
    # major) cut into square patches of sqrt(patch) x sqrt(patch) pixels, one token each (a
    # ViT); 0: a 1-D series cut into runs of `patch` samples.
    image_width: int = 0
    activation: Activation = "gelu"
    ln_eps: float = 1e-5
    # Input and output blocks. "lean": the input embedding is local to each node (the gateway
    # broadcasts the input losslessly) and the head is final LN + one linear (1 exchange).
    # "paper": the reference implementation's blocks (arXiv 2605.15694, code
    # Data-Science-in-Mechanical-Engineering/CATS, model/decoder.py): the input block is a
    # 2-layer MLP + linear residual on (patch, padding flags) whose 2P inputs are owned by the
    # nodes and exchanged (2 lossy exchanges); the output block is LN -> 2-layer MLP + linear
    # residual on the un-normalised input (2 exchanges). Both MLPs are `io_hidden` wide.
    io: IoBlocks = "lean"
    io_hidden: int = 128
    dropout: float = 0.0  # standard (unit) dropout while training; 0 = off

    def __post_init__(self) -> None:
        errors = []
        if self.task not in ("forecast", "classify"):
            errors.append(f"task must be 'forecast' or 'classify', not {self.task!r}")
        if self.io not in ("lean", "paper"):
            errors.append(f"io must be 'lean' or 'paper', not {self.io!r}")
        if self.io_hidden < 1:
            errors.append("io_hidden must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout must be in [0, 1), not {self.dropout}")
        if self.activation not in ("gelu", "relu"):
            errors.append(f"activation must be 'gelu' or 'relu', not {self.activation!r}")
        for name in ("features", "heads", "blocks", "ffn", "patch", "context", "horizon"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1")
        if self.heads >= 1 and self.features % self.heads:
            errors.append(f"features ({self.features}) must be a multiple of heads ({self.heads})")
        if self.patch >= 1 and self.context % self.patch:
            errors.append(f"context ({self.context}) must be a multiple of patch ({self.patch})")
        if self.task == "classify" and self.n_classes < 2:
            errors.append("n_classes must be >= 2")
        if self.image_width < 0:
            errors.append("image_width must be >= 0")
        elif self.image_width:
            side = math.isqrt(self.patch)
            if side * side != self.patch:
                errors.append(f"an image's patch ({self.patch}) must be a square number")
            elif self.image_width % side or self.context % self.image_width:
                errors.append(
                    f"image_width ({self.image_width}) must be a multiple of the patch side "
                    f"({side}) and divide context ({self.context})"
                )
            elif (self.context // self.image_width) % side:
                errors.append(
                    f"image height ({self.context // self.image_width}) must be a multiple of "
                    f"the patch side ({side})"
                )
            if self.task != "classify":
                errors.append("an image input (image_width > 0) needs task 'classify'")
        if errors:
            raise ValueError("invalid ModelConfig: " + "; ".join(errors))

    @property
    def tokens(self) -> int:
        """N: one token per patch of the context."""
        return self.context // self.patch

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) in pixels of an image input, None for a series."""
        if not self.image_width:
            return None
        return self.context // self.image_width, self.image_width

    def patch_order(self) -> np.ndarray:
        """Index into the flat input of every (token, patch element), shape (N, P): how the
        gateway lays the input out before broadcasting it. A series is cut into consecutive
        runs; an image into square patches in raster order, each patch's pixels in raster
        order (ViT patchify), so the node's input embedding is the ViT's patch embedding."""
        if not self.image_width:
            return np.arange(self.context).reshape(self.tokens, self.patch)
        h, w = self.context // self.image_width, self.image_width
        s = math.isqrt(self.patch)
        pix = np.arange(self.context).reshape(h // s, s, w // s, s)
        return pix.transpose(0, 2, 1, 3).reshape(self.tokens, self.patch)

    @property
    def head_dim(self) -> int:
        return self.features // self.heads

    @property
    def outputs(self) -> int:
        """Output units of the (partitioned) head."""
        return self.horizon if self.task == "forecast" else self.n_classes

    @property
    def input_width(self) -> int:
        """Features of one input token: the patch, plus its padding flags with paper blocks."""
        return 2 * self.patch if self.io == "paper" else self.patch

    @property
    def input_exchanges(self) -> int:
        """Exchanges before the first block: the paper input block's two, else none."""
        return 2 if self.io == "paper" else 0

    @property
    def exchanges(self) -> int:
        """Four SomeGather exchanges per block plus the output head's (1 lean, 2 paper) and the
        paper input block's 2."""
        return 4 * self.blocks + (4 if self.io == "paper" else 1)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in _LATE_FIELDS:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        if not self.image_width:  # a series model serialises (and hashes) as before images
            del d["image_width"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}

PRESETS: dict[str, ModelConfig] = {
    # The paper's model: 6 blocks, F = 128, 16 heads, FFN 128 wide, patch 16, context 512.
    "verytiny": ModelConfig(),
    # Trains in about a minute on two cores; what `make demo` uses.
    "demo": ModelConfig(features=64, heads=8, blocks=2, ffn=64, context=256, horizon=96),
    # Small enough for unit tests, still with 16 heads so D = 16 is possible.
    "test": ModelConfig(features=32, heads=16, blocks=2, ffn=24, patch=8, context=64, horizon=16),
    # A ViT for the 8 x 8 handwritten digits bundled in scikit-learn (`--data digits`): 2 x 2
    # pixel patches -> 16 tokens, bidirectional attention, mean-pooled tokens, 10 classes.
    "vit-digits": ModelConfig(
        task="classify",
        features=64,
        heads=8,
        blocks=2,
        ffn=128,
        patch=4,
        context=64,
        horizon=1,
        n_classes=10,
        image_width=8,
    ),  # fmt: skip
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
    return base.replace(**overrides) if overrides else base
