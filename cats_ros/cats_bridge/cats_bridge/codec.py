"""Request validation and the client side of the int8 swarm, as ``cats.quant.int8.predict_int8``:
RevIN (per-window mean and standard deviation) and int8 quantisation of the input patches on
the way in; dequantisation and de-normalisation of the int8 output on the way back. numpy
only, so the bridge does not load torch.

Numerics: a window is range-checked in float64 (which cannot overflow for finite float32
values): values beyond ``MAX_ABS`` are refused with a clear message (float32 statistics of
±1e19 alternating, or 1e36, overflowed: an infinite variance, all-NaN outputs reported as
"ok"). Within the range the float32 RevIN statistics cannot overflow, and are used, so the
int8 input stays bit-equal to the model's (``cats.quant.int8.predict_int8``). The output is
de-normalised in float64; one that does not fit float32 is an ``OutputError``, never a success."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cats_bridge.partition_info import PartitionInfo

QMAX = 127  # int8 values are symmetric: [-127, 127] (cats.quant.qref.sat8)
REVIN_EPS = np.float32(1e-5)  # CatsModel.normalise
MAX_ABS = 1e15  # largest |input| accepted: its statistics and outputs stay finite in float32


class OutputError(ValueError):
    """The output cannot be represented (not finite); the text says why."""


class RequestError(ValueError):
    """A request the bridge refuses before it reaches the swarm; the text says why."""


def validate(values: Sequence[float], shape: Sequence[int], info: PartitionInfo) -> np.ndarray:
    """The request's input as a float32 (context,) vector, or RequestError.

    ``shape`` must be [context] or [1, context] (an image model also takes [height, width],
    row major); an empty shape means [len(input)]."""
    shape = [int(s) for s in shape] or [len(values)]
    image = [[info.context // info.image_width, info.image_width]] if info.image_width else []
    if shape not in ([info.context], [1, info.context], *image):
        raise RequestError(
            f"input shape {shape} is not supported: this model takes [{info.context}] or "
            f"[1, {info.context}] ({info.tokens} patches of {info.patch} samples)"
        )
    if len(values) != info.context:
        raise RequestError(
            f"input has {len(values)} values but its shape {shape} needs {info.context}"
        )
    x = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        where = np.flatnonzero(bad)
        raise RequestError(
            f"input has {len(where)} non-finite values (NaN or Inf), first at index {where[0]}"
        )
    big = np.abs(x.astype(np.float64)) > MAX_ABS
    if big.any():
        where = np.flatnonzero(big)
        raise RequestError(
            f"input has {len(where)} values beyond ±{MAX_ABS:g} (first at index {where[0]}: "
            f"{float(x[where[0]]):g}); scale the signal into range"
        )
    return x


def output_shape(request_shape: Sequence[int], info: PartitionInfo) -> list[int]:
    """[outputs], or [1, outputs] for a [1, context] request."""
    batched = [int(s) for s in request_shape] == [1, info.context]
    return [1, info.outputs] if batched else [info.outputs]


def patch_layout(info: PartitionInfo) -> np.ndarray:
    """Flat input index of every (token, patch element): consecutive runs of a series, or
    the image's square patches in raster order (``ModelConfig.patch_order`` of cats)."""
    if not info.image_width:
        return np.arange(info.context)
    side = int(round(info.patch**0.5))
    rows, cols = info.context // info.image_width // side, info.image_width // side
    return np.array([
        (tr * side + r) * info.image_width + tc * side + c
        for tr in range(rows) for tc in range(cols) for r in range(side) for c in range(side)
    ])  # fmt: skip


def encode_input(x: np.ndarray, info: PartitionInfo) -> tuple[bytes, float, float]:
    """RevIN + int8: (tokens x patch int8 bytes, with paper io blocks tokens x (patch, padding
    flags), mean, std) of one (context,) window."""
    x = np.asarray(x, dtype=np.float32).reshape(1, info.context)
    # Range first, in float64 (it cannot overflow for a finite float32 window): the float32
    # statistics below (bit-equal to the model's RevIN) are then finite too.
    x64 = x.astype(np.float64)
    spread = float(np.sqrt(x64.var()))
    if not np.abs(x64).max() <= MAX_ABS or not np.isfinite(spread):
        raise RequestError(f"input values must lie within ±{MAX_ABS:g}")
    mu = x.mean(axis=1, keepdims=True, dtype=np.float32)
    sd = np.sqrt(x.var(axis=1, keepdims=True, dtype=np.float32) + REVIN_EPS)
    if not (np.isfinite(mu).all() and np.isfinite(sd).all()):  # cannot happen within MAX_ABS
        raise RequestError("input statistics overflow float32")
    patches = ((x - mu) / sd)[:, patch_layout(info)]
    if info.io == "paper":  # the padding flags after each patch: nothing is padded
        patches = patches.reshape(info.tokens, info.patch)
        patches = np.concatenate([patches, np.zeros_like(patches)], axis=-1)
    q = np.floor(patches.astype(np.float64) / info.input_scale + 0.5)
    q = np.clip(q, -QMAX, QMAX).astype(np.int8)
    return q.tobytes(), float(mu[0, 0]), float(sd[0, 0])


def decode_output(
    raw: bytes, scale: float, mu: float, sd: float, info: PartitionInfo
) -> np.ndarray:
    """int8 outputs -> float: times the output scale, de-normalised for a forecast (float64);
    OutputError when a value does not fit float32."""
    y = np.frombuffer(raw, dtype=np.int8).astype(np.float64) * scale
    if info.task == "forecast":
        y = y * sd + mu
    bad = ~np.isfinite(y) | (np.abs(y) > np.finfo(np.float32).max)
    if bad.any():
        raise OutputError(
            f"{int(bad.sum())} of {len(y)} outputs are not finite in float32 (first at index "
            f"{int(np.flatnonzero(bad)[0])}); the input's scale is out of range"
        )
    return y.astype(np.float32)
