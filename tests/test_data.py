"""Data loading, standard splits, train-only normalisation and windowing on real data."""

from pathlib import Path

import numpy as np
import pytest

from cats.base.paths import ETTH2_CSV
from cats.training import data

needs_etth2 = pytest.mark.skipif(
    not ETTH2_CSV.is_file(), reason=f"ETTh2 not laid out at {ETTH2_CSV} (shared/data)"
)

CONTEXT, HORIZON = 336, 96


@pytest.fixture(scope="module")
def etth2() -> tuple[list[str], np.ndarray, list[str]]:
    if not ETTH2_CSV.is_file():
        pytest.skip(f"ETTh2 not laid out at {ETTH2_CSV} (shared/data)")
    return data.load_csv_series(ETTH2_CSV)


@pytest.fixture(scope="module")
def default_series() -> tuple[list[str], np.ndarray, list[str]]:
    return data.load_default_series()


@needs_etth2
def test_etth2_loads(etth2):
    timestamps, values, columns = etth2
    assert values.shape == (17420, 7)
    assert values.dtype == np.float32
    assert columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert timestamps[0] == "2016-07-01 00:00:00"
    assert len(timestamps) == 17420


@needs_etth2
def test_ett_split_uses_standard_borders(etth2):
    _, values, _ = etth2
    s = data.split_series(values, "ett-hourly", CONTEXT, HORIZON)
    m = 30 * 24
    assert s.borders == (
        (0, 12 * m),
        (12 * m - CONTEXT, 16 * m),
        (16 * m - CONTEXT, 20 * m),
    )
    assert s.train.shape == (12 * m, 7)
    assert s.val.shape == (4 * m + CONTEXT, 7)
    assert s.test.shape == (4 * m + CONTEXT, 7)
    # The test part is the raw rows after standardisation, nothing shuffled.
    lo, hi = s.borders[2]
    np.testing.assert_allclose(s.normaliser.invert(s.test), values[lo:hi], rtol=1e-4, atol=1e-3)


@needs_etth2
def test_normaliser_uses_train_statistics_only(etth2):
    _, values, _ = etth2
    s = data.split_series(values, "ett-hourly", CONTEXT, HORIZON)
    train_raw = values[: 12 * 30 * 24]
    np.testing.assert_allclose(s.normaliser.mean, train_raw.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.train.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(s.train.std(0), 1.0, atol=1e-4)
    # Statistics from the whole series would differ: the split really excludes val/test.
    assert not np.allclose(s.normaliser.mean, values.mean(0), rtol=1e-3)
    assert abs(float(s.test.mean())) > 1e-3


def test_ratio_split_borders(default_series):
    _, values, _ = default_series
    n = len(values)
    s = data.split_series(values, "ratio", 96, 24)
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    assert s.borders[0] == (0, n_train)
    assert s.borders[1] == (n_train - 96, n - n_test)
    assert s.borders[2] == (n - n_test - 96, n)


@needs_etth2
def test_forecast_windows_shapes(etth2):
    _, values, _ = etth2
    s = data.split_series(values, "ett-hourly", CONTEXT, HORIZON)
    w = data.ForecastWindows(s.test, CONTEXT, HORIZON)
    # Channel-independent: every channel of every start is one sample; the first target of
    # the test part is the first test row.
    assert len(w) == (4 * 30 * 24 - HORIZON + 1) * 7
    x, y = w.batch(np.array([0, 1, len(w) - 1]))
    assert x.shape == (3, CONTEXT) and y.shape == (3, HORIZON)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x[0], s.test[:CONTEXT, 0])
    np.testing.assert_array_equal(y[0], s.test[CONTEXT : CONTEXT + HORIZON, 0])
    np.testing.assert_array_equal(y[2], s.test[-HORIZON:, 6])
    assert list(w.channels(np.array([0, len(w) - 1]))) == [0, 6]

    strided = data.ForecastWindows(s.test, CONTEXT, HORIZON, stride=24)
    assert len(strided) == ((4 * 30 * 24 - HORIZON) // 24 + 1) * 7
    x, _ = strided.batch(np.array([1]))
    np.testing.assert_array_equal(x[0], s.test[24 : 24 + CONTEXT, 0])

    idx = w.sample_indices(64, np.random.default_rng(0))
    assert idx.shape == (64,) and len(set(idx.tolist())) == 64
    assert sum(len(b) for b in strided.batches(100)) == len(strided)


def test_default_dataset(default_series):
    timestamps, values, columns = default_series
    assert columns == ["seattle_temp", "sf_temp"]
    assert values.shape == (8759, 2)
    assert timestamps[0] == "2010-01-01 00:00:00"
    assert timestamps == sorted(timestamps)
    # Hourly Fahrenheit air temperatures.
    assert values.min() > 20 and values.max() < 110
    assert 40 < values[:, 0].mean() < 65 and 45 < values[:, 1].mean() < 70

    name, vals, scheme = data.dataset_from_arg(None)
    assert (name, scheme) == (data.DEFAULT_NAME, "ratio")
    np.testing.assert_array_equal(vals, values)
    assert data.dataset_from_arg("default")[0] == data.DEFAULT_NAME


@needs_etth2
def test_dataset_from_arg_picks_scheme(tmp_path: Path):
    name, values, scheme = data.dataset_from_arg(str(ETTH2_CSV), context=CONTEXT, horizon=96)
    assert (name, scheme, values.shape) == ("ETTh2", "ett-hourly", (17420, 7))

    other = tmp_path / "sensors.csv"
    rows = ["date,a,b"] + [f"2020-01-01 {i % 24:02d}:00:00,{i},{2 * i}" for i in range(400)]
    other.write_text("\n".join(rows) + "\n")
    name, values, scheme = data.dataset_from_arg(other, context=8, horizon=4)
    assert (name, scheme, values.shape) == ("sensors", "ratio", (400, 2))


def test_classification_labels(default_series):
    _, values, _ = default_series
    s = data.split_series(values, "ratio", 96, 24)
    w = data.ClassificationWindows(s.train, 96, 24, stride=4)
    x, label = w.batch(np.arange(len(w)))
    assert x.shape == (len(w), 96) and label.shape == (len(w),)
    assert label.dtype == np.int64
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    counts = w.class_counts()
    assert counts.sum() == len(w) and counts.min() > 0.05 * len(w)
    # Labels depend only on the data's shape, not its scale (raw == normalised).
    raw = data.make_trend_classes(values[: len(s.train)], 96, 24)
    np.testing.assert_array_equal(raw[::4], w.labels)


def test_trend_classes_follow_the_future():
    t = np.arange(200, dtype=np.float32)
    series = np.stack([t, -t, np.zeros_like(t)], axis=1)
    labels = data.make_trend_classes(series, context=16, horizon=16)
    assert (labels[:, 0] == 2).all() and (labels[:, 1] == 0).all() and (labels[:, 2] == 1).all()
    assert set(data.make_trend_classes(series, 16, 8, n_classes=2).ravel().tolist()) == {0, 1}


def test_missing_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_csv_series(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="not found"):
        data.dataset_from_arg(str(tmp_path / "ETTh9.csv"))


def test_too_short_series_errors(tmp_path: Path):
    short = tmp_path / "short.csv"
    short.write_text("date,x\n" + "".join(f"2020-01-01 {i:02d}:00:00,{i}\n" for i in range(24)))
    with pytest.raises(ValueError, match="too short"):
        data.dataset_from_arg(short, context=16, horizon=4)
    with pytest.raises(ValueError, match="too short"):
        data.split_series(np.zeros((40, 1), np.float32), "ratio", 8, 8)
    with pytest.raises(ValueError, match="ett-hourly"):
        data.split_series(np.zeros((1000, 1), np.float32), "ett-hourly", 8, 8)
    with pytest.raises(ValueError, match="shorter than context"):
        data.ForecastWindows(np.zeros((10, 1), np.float32), 8, 4)


def test_bad_csv_errors(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,x\n2020-01-01 00:00:00,abc\n")
    with pytest.raises(ValueError, match="non-numeric"):
        data.load_csv_series(bad)
    with pytest.raises(ValueError, match="unknown split scheme"):
        data.split_series(np.zeros((1000, 1), np.float32), "weekly", 8, 8)
