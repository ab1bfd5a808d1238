"""Real data for training and evaluating the swarm's models (numpy only).

Three sources:

* ETT (Electricity Transformer Temperature, e.g. ETTh2.csv laid in shared/data) with the
  standard Informer/PatchTST train/val/test borders, so results compare with the literature;
* the demo's default: hourly 2010 air temperatures for Seattle and San Francisco that ship
  inside the pinned PyPI package ``vega-datasets``, so ``make demo`` needs no download;
* images for the ViT: the 8 x 8 handwritten digits that ship inside the pinned scikit-learn
  wheel (``--data digits``, ``ImageSet``).

Windows are channel-independent (every channel of every window is its own univariate
sample, as in PatchTST): the model on the swarm sees one sensor stream at a time.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

HOURS_PER_MONTH = 30 * 24
ETT_TRAIN = 12 * HOURS_PER_MONTH
ETT_VAL = 4 * HOURS_PER_MONTH
ETT_TEST = 4 * HOURS_PER_MONTH
SCHEMES = ("ett-hourly", "ratio", "paper")
DEFAULT_NAME = "seattle-sf-temps"
DEFAULT_COLUMNS = ["seattle_temp", "sf_temp"]
TREND_CLASS_NAMES = ("down", "flat", "up")


# --------------------------------------------------------------------------- loading


def _normalise_timestamp(text: str) -> str:
    """ISO 'YYYY-MM-DD HH:MM:SS'; the two vega files spell the same hour differently."""
    try:
        return datetime.fromisoformat(text.strip().replace("/", "-")).isoformat(sep=" ")
    except ValueError:
        return text.strip()


def load_csv_series(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read an ETT-format CSV: a ``date`` column plus numeric channels.

    The timestamp column is the one named ``date`` (any case) or else the first column.
    Returns ``(timestamps, values float32 [T, C], channel names)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty CSV file") from None
        lower = [h.lower() for h in header]
        t_col = lower.index("date") if "date" in lower else 0
        v_cols = [i for i in range(len(header)) if i != t_col]
        if not v_cols:
            raise ValueError(f"{path}: no value columns besides {header[t_col]!r}")
        timestamps: list[str] = []
        rows: list[list[float]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
            try:
                rows.append([float(row[i]) for i in v_cols])
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: non-numeric value in a data column: {row}"
                ) from None
            timestamps.append(_normalise_timestamp(row[t_col]))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    values = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    return timestamps, values, [header[i] for i in v_cols]


def vega_data_dir() -> Path:
    """The ``_data`` directory of the installed vega-datasets package (not imported: that
    would pull in pandas just to find two files)."""
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default dataset ships in the PyPI package vega-datasets, which is not "
            "installed; run `make setup`"
        )
    return Path(spec.origin).parent / "_data"


def load_default_series() -> tuple[list[str], np.ndarray, list[str]]:
    """Hourly air temperature (°F) in Seattle and San Francisco, 2010, as 2 channels.

    Source: NOAA hourly observations as redistributed in the vega-datasets package
    (``seattle-temps.csv``, ``sf-temps.csv``; vega-datasets is BSD-3-Clause, the NOAA data
    are US-government public domain). The files spell timestamps differently, so they are
    inner-joined on the parsed hour: 8759 rows (2010 has 8760 hours; 2010-03-14 03:00, the
    daylight-saving change, is absent from both files).
    """
    data_dir = vega_data_dir()
    t_sea, v_sea, _ = load_csv_series(data_dir / "seattle-temps.csv")
    t_sf, v_sf, _ = load_csv_series(data_dir / "sf-temps.csv")
    sf_row = {t: i for i, t in enumerate(t_sf)}
    keep = [(i, sf_row[t]) for i, t in enumerate(t_sea) if t in sf_row]
    if not keep:
        raise ValueError(f"{data_dir}: Seattle and SF temperature files share no timestamps")
    i_sea = np.array([a for a, _ in keep])
    i_sf = np.array([b for _, b in keep])
    values = np.stack([v_sea[i_sea, 0], v_sf[i_sf, 0]], axis=1).astype(np.float32)
    return [t_sea[i] for i in i_sea], values, list(DEFAULT_COLUMNS)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Normaliser:
    """Per-channel standardisation with statistics from the training part only (no leakage
    from val/test). ``channels`` selects per-sample statistics for channel-independent
    windows: an int, or an index array with one channel per row of a ``[B, L]`` batch."""

    mean: np.ndarray  # [C] float32
    std: np.ndarray  # [C] float32, never 0

    @classmethod
    def fit(cls, train: np.ndarray) -> Normaliser:
        mean = train.mean(axis=0, dtype=np.float64)
        std = train.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays finite
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def _stats(self, channels: int | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if channels is None:
            return self.mean, self.std
        if isinstance(channels, int | np.integer):
            return self.mean[channels], self.std[channels]
        ch = np.asarray(channels)
        return self.mean[ch][:, None], self.std[ch][:, None]

    def apply(self, x: np.ndarray, channels: int | np.ndarray | None = None) -> np.ndarray:
        mean, std = self._stats(channels)
        return ((x - mean) / std).astype(np.float32)

    def invert(self, x: np.ndarray, channels: int | np.ndarray | None = None) -> np.ndarray:
        mean, std = self._stats(channels)
        return (x * std + mean).astype(np.float32)


@dataclass(frozen=True)
class Split:
    """Train/val/test parts of one series, normalised with train statistics.

    ``borders`` are the ``(start, end)`` rows of each part in the original series; val and
    test start ``context`` rows before their first predicted step, so no target is lost.
    """

    train: np.ndarray  # [T_train, C] float32
    val: np.ndarray
    test: np.ndarray
    normaliser: Normaliser
    borders: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    scheme: str
    context: int

    def part(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split part {name!r}; use train, val or test")
        return getattr(self, name)


def split_borders(
    n_rows: int, scheme: str, context: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Row ranges of train/val/test: "ett-hourly" and "ratio" are the Informer/PatchTST
    ``border1s``/``border2s`` (val and test start `context` rows early); "paper" is the CATS
    reference loader's (dataset_loaders/ETT.py): 60/20/20 % of the rows, each part standing
    alone (its windows lie wholly inside it)."""
    if scheme == "paper":
        a, b = int(0.6 * n_rows), int(0.8 * n_rows)
        if a < context:
            raise ValueError(f"series too short: {n_rows} rows leave {a} training rows")
        return (0, a), (a, b), (b, n_rows)
    if scheme == "ett-hourly":
        need = ETT_TRAIN + ETT_VAL + ETT_TEST
        if n_rows < need:
            raise ValueError(
                f"the ett-hourly split needs at least {need} hourly rows, got {n_rows}"
            )
        n_train, n_val, n_test = ETT_TRAIN, ETT_VAL, ETT_TEST
    elif scheme == "ratio":
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; choose one of {SCHEMES}")
    b1 = (0, n_train - context, n_train + n_val - context)
    b2 = (n_train, n_train + n_val, n_train + n_val + n_test)
    if min(b1) < 0:
        raise ValueError(
            f"series too short: {n_rows} rows leave {n_train} training rows, fewer than "
            f"the context of {context}"
        )
    return (b1[0], b2[0]), (b1[1], b2[1]), (b1[2], b2[2])


def split_series(
    values: np.ndarray, scheme: str, context: int, horizon: int = 1, normalise: bool = True
) -> Split:
    """Split chronologically and standardise with train statistics.

    Raises ValueError if any part is shorter than ``context + horizon`` (no single window).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a [T, C] series, got shape {values.shape}")
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1, got {context} and {horizon}")
    borders = split_borders(len(values), scheme, context)
    for name, (lo, hi) in zip(("train", "val", "test"), borders, strict=True):
        if hi - lo < context + horizon:
            raise ValueError(
                f"series too short: {len(values)} rows give a {name} part of {hi - lo} rows "
                f"under the {scheme!r} split, fewer than context+horizon = "
                f"{context}+{horizon}"
            )
    tr, va, te = (values[lo:hi] for lo, hi in borders)
    norm = Normaliser.fit(tr)
    if normalise:
        tr, va, te = norm.apply(tr), norm.apply(va), norm.apply(te)
    return Split(tr, va, te, norm, borders, scheme, context)


# --------------------------------------------------------------------------- windows


class _Windows:
    """Channel-independent sliding windows; sample ``i`` is (channel, start) of a grid."""

    def __init__(self, series: np.ndarray, context: int, horizon: int, stride: int = 1) -> None:
        series = np.asarray(series, dtype=np.float32)
        if series.ndim != 2:
            raise ValueError(f"expected a [T, C] series, got shape {series.shape}")
        if context < 1 or horizon < 1 or stride < 1:
            raise ValueError("context, horizon and stride must all be >= 1")
        if len(series) < context + horizon:
            raise ValueError(
                f"series of {len(series)} rows is shorter than context+horizon = "
                f"{context}+{horizon}"
            )
        self.series = series
        self.context = context
        self.horizon = horizon
        self.stride = stride
        self.n_channels = series.shape[1]
        self.n_starts = (len(series) - context - horizon) // stride + 1

    def __len__(self) -> int:
        return self.n_starts * self.n_channels

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(channel, start row) of each sample index."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        return idx // self.n_starts, (idx % self.n_starts) * self.stride

    def channels(self, indices: np.ndarray) -> np.ndarray:
        """Channel of each sample, e.g. for ``Normaliser.invert(y, channels)``."""
        return self.locate(indices)[0]

    def _take(self, channels: np.ndarray, starts: np.ndarray, offset: int, length: int):
        rows = starts[:, None] + offset + np.arange(length)
        return self.series[rows, channels[:, None]]

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random sample indices (without replacement when there are enough)."""
        return rng.choice(len(self), size=n, replace=n > len(self))

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[np.ndarray]:
        """Index batches covering every sample once; shuffled when ``rng`` is given."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        for lo in range(0, len(order), batch_size):
            yield order[lo : lo + batch_size]


class ForecastWindows(_Windows):
    """Forecasting samples: ``context`` past steps of one channel -> next ``horizon``."""

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x [B, context], y [B, horizon])`` float32."""
        ch, st = self.locate(indices)
        return self._take(ch, st, 0, self.context), self._take(ch, st, self.context, self.horizon)


def make_trend_classes(
    values: np.ndarray, context: int, horizon: int, n_classes: int = 3, band: float = 1.0
) -> np.ndarray:
    """Label every (start, channel) window by where the next ``horizon`` steps go.

    With 3 classes: 0 = down / 1 = flat / 2 = up, according to whether the mean of the next
    ``horizon`` values lies below, within or above ``last value ± band * std`` of the
    window's ``context`` values; with 2 classes: below or not below the last value. The
    labels come from the data itself, so this is a real sensor-window classification task,
    and they are unchanged by per-channel standardisation. Returns int64
    ``[T - context - horizon + 1, C]`` for stride-1 starts.
    """
    if n_classes not in (2, 3):
        raise ValueError(f"n_classes must be 2 or 3, got {n_classes}")
    v = np.asarray(values, dtype=np.float64)
    n = len(v) - context - horizon + 1
    if n < 1:
        raise ValueError(
            f"series of {len(v)} rows is shorter than context+horizon = {context}+{horizon}"
        )
    zero = np.zeros((1, v.shape[1]))
    c1 = np.concatenate([zero, np.cumsum(v, axis=0)])
    c2 = np.concatenate([zero, np.cumsum(v * v, axis=0)])
    starts = np.arange(n)
    win_mean = (c1[starts + context] - c1[starts]) / context
    win_var = (c2[starts + context] - c2[starts]) / context - win_mean**2
    win_std = np.sqrt(np.clip(win_var, 0.0, None))
    fut_mean = (c1[starts + context + horizon] - c1[starts + context]) / horizon
    last = v[starts + context - 1]
    if n_classes == 2:
        return (fut_mean >= last).astype(np.int64)
    labels = np.ones_like(last, dtype=np.int64)
    labels[fut_mean < last - band * win_std] = 0
    labels[fut_mean > last + band * win_std] = 2
    return labels


class ClassificationWindows(_Windows):
    """Sensor-window classification: ``context`` steps of one channel -> trend class
    (see ``make_trend_classes``); the ``horizon`` future steps only define the label."""

    def __init__(
        self,
        series: np.ndarray,
        context: int,
        horizon: int,
        stride: int = 1,
        n_classes: int = 3,
        band: float = 1.0,
    ) -> None:
        super().__init__(series, context, horizon, stride)
        self.n_classes = n_classes
        labels = make_trend_classes(self.series, context, horizon, n_classes, band)
        self.labels = labels[::stride]  # [n_starts, C]

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x [B, context] float32, label [B] int64)``."""
        ch, st = self.locate(indices)
        return self._take(ch, st, 0, self.context), self.labels[st // self.stride, ch]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels.ravel(), minlength=self.n_classes)


# --------------------------------------------------------------------------- images

DIGITS_NAME = "digits"
DIGITS_SHAPE = (8, 8)
IMAGE_SPLIT_SEED = 0  # the fixed train/val/test split of an image set
IMAGE_SPLIT = (0.6, 0.2, 0.2)


def sklearn_data_dir() -> Path:
    """The bundled-data directory of the installed scikit-learn (not imported: that would
    pull in scipy just to read one file)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the digits images ship in the PyPI package scikit-learn, which is not installed; "
            "run `make setup`"
        )
    return Path(spec.origin).parent / "datasets" / "data"


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The UCI optical-recognition handwritten digits as scikit-learn ships them
    (``sklearn/datasets/data/digits.csv.gz``, what ``sklearn.datasets.load_digits`` reads):
    1797 images of 8 x 8 pixels, grey levels 0..16, labels 0..9. scikit-learn is
    BSD-3-Clause; the data set (Alpaydin & Kaynak, UCI ML repository) is CC BY 4.0.
    Returns ``(images float32 [n, 64] row major, labels int64 [n])``."""
    path = sklearn_data_dir() / "digits.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scikit-learn's bundled digits are missing")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    npix = DIGITS_SHAPE[0] * DIGITS_SHAPE[1]
    if table.ndim != 2 or table.shape[1] != npix + 1:
        raise ValueError(f"{path}: expected {npix + 1} columns, got {table.shape}")
    return np.ascontiguousarray(table[:, :npix]), table[:, npix].astype(np.int64)


class ImageSet:
    """Labelled images, each a row-major float32 vector of ``context`` pixels (the model cuts
    it into patches); the same ``batch`` / ``sample_indices`` interface as the windows."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = n_classes

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x [B, pixels] float32, label [B] int64)``."""
        idx = np.asarray(indices, dtype=np.int64)
        return self.images[idx], self.labels[idx]

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self), size=n, replace=n > len(self))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes)


def split_images(
    images: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = IMAGE_SPLIT_SEED
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """A fixed stratified train/val/test split (60/20/20 % of every class, shuffled with
    `seed`), the same on every machine and run."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a = round(IMAGE_SPLIT[0] * len(idx))
        b = a + round(IMAGE_SPLIT[1] * len(idx))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            part.append(chunk)
    out = []
    for part in parts:
        idx = np.sort(np.concatenate(part))
        out.append(ImageSet(images[idx], labels[idx], n_classes))
    return out[0], out[1], out[2]


def image_dataset(arg: str | Path | None, shape: tuple[int, int]) -> tuple[ImageSet, ...]:
    """Train/val/test ImageSets of the image data set `arg` (``digits``, the default for an
    image model) for a model whose input is `shape` (height, width) pixels."""
    name = DIGITS_NAME if arg is None or str(arg) in ("default", DIGITS_NAME) else str(arg)
    if name != DIGITS_NAME:
        raise ValueError(f"unknown image data set {name!r}; an image model takes 'digits'")
    if tuple(shape) != DIGITS_SHAPE:
        raise ValueError(f"the digits are {DIGITS_SHAPE} pixels, the model wants {shape}")
    images, labels = load_digits_images()
    return split_images(images, labels, 10)


# --------------------------------------------------------------------------- selection


def dataset_from_arg(
    arg: str | Path | None,
    *,
    context: int | None = None,
    horizon: int | None = None,
    columns: list[str] | None = None,
    scheme: str | None = None,
) -> tuple[str, np.ndarray, str]:
    """Resolve the CLI's data argument to ``(name, values [T, C], split scheme)``.

    ``None``/``"default"`` is the bundled Seattle/SF temperatures ("ratio" split); a CSV
    whose file name starts with ``ETT`` gets the standard "ett-hourly" split, any other CSV
    "ratio"; ``scheme`` overrides that. ``columns`` keeps only the named channels (e.g.
    ``["OT"]``, the paper's setting). Given ``context`` and ``horizon``, also checks now that
    every split part holds at least one window, so a too-short file fails before any training
    starts.
    """
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; choose one of {SCHEMES}")
    forced = scheme
    if arg is None or str(arg) == "default":
        _, values, names = load_default_series()
        name, scheme = DEFAULT_NAME, "ratio"
    else:
        path = Path(arg)
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path} (give a CSV path or 'default')")
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: expected a .csv file")
        _, values, names = load_csv_series(path)
        name = path.stem
        scheme = "ett-hourly" if path.name.startswith("ETT") else "ratio"
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{name}: no column(s) {missing}; it has {names}")
        values = values[:, [names.index(c) for c in columns]]
        name = f"{name}[{','.join(columns)}]"
    scheme = forced or scheme
    if context is not None:
        split_series(values, scheme, context, horizon or 1, normalise=False)
    return name, values, scheme
