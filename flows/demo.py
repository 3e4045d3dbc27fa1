"""Build a demo model registry from real data: weekly retrains of a next-hour PM2.5 forecaster.

The demo reproduces the model of seed 000 (GRU -> AveragePooling1D -> Conv1D "extractor" -> Dense)
on the UCI Beijing PM2.5 data (Liang et al. 2015, Proc. R. Soc. A 471: 20150257) and lays it out
the way a team that retrains every Monday would: one folder per drop, ``registry/<YYYY-MM-DD>/``,
holding ``model.keras``, ``eval.npz`` (the week after the drop) and ``audit.toml``.

Each drop is trained on a rolling window of the 8 weeks before its date, so consecutive drops see
mostly the same data and differ by one week plus training noise: what the auditor has to tell apart.
Features are standardised with statistics from a fixed period (2010-2013), so the input space of
every drop is the same and importances stay comparable from week to week.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import pandas as pd

from audit.types import AuditError

DEFAULT_DATA_CSV: Path = (
    Path(__file__).resolve().parents[1] / "data" / "beijing_pm25" / "PRSA_data_2010.1.1-2014.12.31.csv"
)

#: Input features, in the order of the last axis of every window; pm2.5 first (it is also the target).
DEMO_FEATURES: tuple[str, ...] = (
    "pm2.5",
    "DEWP",
    "TEMP",
    "PRES",
    "Iws",
    "Is",
    "Ir",
    "cbwd_NE",
    "cbwd_NW",
    "cbwd_SE",
    "cbwd_cv",
)

#: Six Monday drops in autumn 2014, after the normalisation period and with a full week after each.
DEFAULT_DROP_WEEKS: tuple[dt.date, ...] = tuple(
    dt.date(2014, 10, 6) + dt.timedelta(weeks=k) for k in range(6)
)

N_STEPS = 24
"""Hours of history in one window (the sample shape is (N_STEPS, len(DEMO_FEATURES)))."""
TRAIN_WEEKS = 8
EVAL_DAYS = 7
# Tuned on a 2-core CPU: six default drops train in 40-50 s with eval R^2 of 0.77-0.95. A
# smaller learning rate or fewer epochs leaves the first drop (trained on summer air, evaluated on
# October smog) well short of the others; larger batches converge too slowly.
DEFAULT_EPOCHS = 25
BATCH_SIZE = 64
LEARNING_RATE = 2e-2

_NORMALISATION_START = "2010-01-01"
_NORMALISATION_END = "2013-12-31"
_WIND_DIRECTIONS = ("NE", "NW", "SE", "cv")
_WEATHER_COLUMNS = DEMO_FEATURES[1:7]
_RAW_COLUMNS = ("year", "month", "day", "hour", "pm2.5", *_WEATHER_COLUMNS, "cbwd")
_DROP_FILES = ("model.keras", "eval.npz", "audit.toml")

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def build_demo_registry(
    registry: Path,
    *,
    data_csv: Path = DEFAULT_DATA_CSV,
    drop_weeks: Sequence[dt.date] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Train one forecaster per drop week and write it, with its eval week, into `registry`.

    Parameters
    ----------
    registry : Path
        Folder that receives one ``<YYYY-MM-DD>/`` drop per week; created if missing.
    data_csv : Path
        The Beijing PM2.5 CSV (defaults to the copy shipped in ``data/beijing_pm25/``).
    drop_weeks : sequence of datetime.date, optional
        Drop dates; defaults to `DEFAULT_DROP_WEEKS` (six Mondays from 2014-10-06). Each needs
        8 weeks of history before it and a full week of data from it.
    epochs : int
        Training epochs per drop.
    seed : int
        Drop ``k`` (its position in `drop_weeks`) is built with seed ``seed + k``.
    progress : callable, optional
        Called with one human-readable line per drop (built or skipped).

    Returns
    -------
    list of Path
        The drop folders, in the order of `drop_weeks`, whether built now or already present.

    Raises
    ------
    AuditError
        If the CSV is missing or malformed, a drop date is outside the data, or a drop folder
        exists without its files.

    Notes
    -----
    A drop is written into a hidden temporary sibling folder and renamed into place when complete,
    so an interrupted build leaves no half drop; complete drops are skipped, so reruns are cheap.
    """
    weeks = _validate_weeks(DEFAULT_DROP_WEEKS if drop_weeks is None else drop_weeks)
    if epochs < 1:
        raise AuditError(f"epochs must be at least 1, got {epochs}; pass epochs=1 or more")
    features = load_demo_features(data_csv)
    # every date is checked before the first (slow) training, so a bad last date fails at once
    splits = [_target_rows(features.index, week) for week in weeks]
    values = features.to_numpy(dtype=np.float32)
    registry.mkdir(parents=True, exist_ok=True)
    report = progress if progress is not None else _ignore
    paths = []
    for index, (week, (train_rows, eval_rows)) in enumerate(zip(weeks, splits, strict=True)):
        drop = registry / week.isoformat()
        if _is_complete(drop):
            report(f"{week}: already complete, skipped")
        else:
            _check_absent(drop)
            message = _build_drop(drop, values, train_rows, eval_rows, epochs=epochs, seed=seed + index)
            report(f"{week}: {message}")
        paths.append(drop)
    return paths


def load_demo_features(data_csv: Path = DEFAULT_DATA_CSV) -> pd.DataFrame:
    """Read the CSV into standardised hourly features, one row per hour, columns `DEMO_FEATURES`.

    pm2.5 gaps are interpolated linearly in time (leading gaps back-filled), the wind direction
    is one-hot encoded, and every column is standardised with the mean and standard deviation of
    the fixed period 2010-01-01 to 2013-12-31, so every drop shares one input space.
    """
    raw = _read_csv(data_csv)
    return _standardise(_hourly_features(raw, data_csv))


def _ignore(message: str) -> None:
    """Default progress callback: discard the message."""


def _validate_weeks(weeks: Sequence[dt.date]) -> list[dt.date]:
    """Check drop dates are plain, distinct dates (a datetime would silently drop its time)."""
    checked = list(weeks)
    for week in checked:
        if isinstance(week, dt.datetime) or not isinstance(week, dt.date):
            raise AuditError(
                f"drop week {week!r} is not a datetime.date; pass dates like dt.date(2014, 10, 6)"
            )
    if len(set(checked)) != len(checked):
        raise AuditError(f"drop weeks {checked} contain duplicates; pass each date once")
    return checked


def _read_csv(data_csv: Path) -> pd.DataFrame:
    """Read the raw CSV, failing with a message that names the file and the fix."""
    if not data_csv.is_file():
        raise AuditError(
            f"demo data {data_csv} not found; restore data/beijing_pm25/ from the repository "
            "(see data/beijing_pm25/README.md) or pass data_csv="
        )
    raw = pd.read_csv(data_csv, na_values=["NA"])
    missing = [column for column in _RAW_COLUMNS if column not in raw.columns]
    if missing:
        raise AuditError(
            f"{data_csv} lacks columns {missing}; expected the UCI Beijing PM2.5 CSV "
            "(PRSA_data_2010.1.1-2014.12.31.csv)"
        )
    return raw


def _hourly_features(raw: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Index the rows by hour, fill pm2.5 gaps and one-hot the wind direction (not yet scaled)."""
    index = pd.DatetimeIndex(pd.to_datetime(raw[["year", "month", "day", "hour"]]), name="time")
    steps = index[1:] - index[:-1]
    if len(index) < 2 or not (steps == pd.Timedelta(hours=1)).all():
        raise AuditError(
            f"{source} is not one row per consecutive hour; windows need a gap-free hourly series"
        )
    frame = raw.set_index(index)
    pm25 = frame["pm2.5"].astype(np.float64).interpolate(method="time").bfill()
    wind = frame["cbwd"].astype(str)
    columns: dict[str, pd.Series] = {"pm2.5": pm25}
    for name in _WEATHER_COLUMNS:
        columns[name] = frame[name].astype(np.float64)
    for direction in _WIND_DIRECTIONS:
        columns[f"cbwd_{direction}"] = (wind == direction).astype(np.float64)
    return pd.DataFrame(columns, index=index)[list(DEMO_FEATURES)]


def _standardise(features: pd.DataFrame) -> pd.DataFrame:
    """Scale every column with the mean and std (ddof=0) of the fixed normalisation period."""
    reference = features.loc[_NORMALISATION_START:_NORMALISATION_END]
    mean = reference.mean()
    std = reference.std(ddof=0)
    unscalable = list(std.index[~(std > 0)])  # constant, or no rows in the period (NaN)
    if unscalable:
        raise AuditError(
            f"features {unscalable} cannot be standardised: no variation between "
            f"{_NORMALISATION_START} and {_NORMALISATION_END}; pass the full 2010-2014 CSV"
        )
    return (features - mean) / std


def _target_rows(index: pd.DatetimeIndex, week: dt.date) -> tuple[IntArray, IntArray]:
    """Row positions of the training targets (8 weeks before `week`) and eval targets (its week).

    The training window ends strictly before the drop date, so no eval hour is seen in training.
    """
    drop = index.searchsorted(pd.Timestamp(week))
    train_start = drop - TRAIN_WEEKS * 7 * 24
    eval_end = drop + EVAL_DAYS * 24
    if train_start < N_STEPS or eval_end > len(index) or index[drop] != pd.Timestamp(week):
        first = (index[0] + pd.Timedelta(hours=N_STEPS) + pd.Timedelta(weeks=TRAIN_WEEKS)).date()
        last = (index[-1] + pd.Timedelta(hours=1) - pd.Timedelta(days=EVAL_DAYS)).date()
        raise AuditError(
            f"drop week {week} needs {TRAIN_WEEKS} weeks of data before it and {EVAL_DAYS} days "
            f"after it; pick a date between {first} and {last}"
        )
    return np.arange(train_start, drop, dtype=np.int64), np.arange(drop, eval_end, dtype=np.int64)


def _windows(values: Float32Array, targets: IntArray) -> tuple[Float32Array, Float32Array]:
    """Cut the (len(targets), N_STEPS, n_features) windows ending just before each target row.

    Window ``i`` holds rows ``targets[i] - N_STEPS`` .. ``targets[i] - 1``; its label is the
    standardised pm2.5 (column 0) of row ``targets[i]``, the hour right after the window.
    """
    rows = targets[:, np.newaxis] + np.arange(-N_STEPS, 0)[np.newaxis, :]
    return values[rows], values[targets, 0]


def _build_model(n_features: int, seed: int) -> keras.Model:
    """Seed 000's forecaster: GRU(16) -> AveragePooling1D(2) -> Conv1D 'extractor' -> Dense(1)."""
    # Fixed layer names: otherwise Keras numbers them per session (gru_1, gru_2, ...) and the
    # drops of one build would differ in names from drops built on another day.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(N_STEPS, n_features), name="window")
    x = keras.layers.GRU(16, return_sequences=True, name="gru")(inputs)
    x = keras.layers.AveragePooling1D(2, name="pooling")(x)
    x = keras.layers.Conv1D(16, 3, activation="relu", padding="same", name="extractor")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(1, name="forecast")(x)
    model = keras.Model(inputs, outputs, name="pm25_next_hour")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss="mse")
    return model


def _r_squared(y: Float32Array, predicted: Float32Array) -> float:
    """Share of the eval week's variance the model explains (1 - MSE / var(y))."""
    residual = np.mean((y - predicted) ** 2, dtype=np.float64)
    return float(1.0 - residual / np.var(y, dtype=np.float64))


def _is_complete(drop: Path) -> bool:
    """A drop folder counts as complete when all of its files are present."""
    return all((drop / name).is_file() for name in _DROP_FILES)


def _check_absent(drop: Path) -> None:
    """Refuse to overwrite a drop folder that exists without its files (not written by us)."""
    if drop.exists():
        raise AuditError(f"{drop} exists but lacks some of {list(_DROP_FILES)}; delete it and rerun the demo")


def _build_drop(
    drop: Path,
    values: Float32Array,
    train_rows: IntArray,
    eval_rows: IntArray,
    *,
    epochs: int,
    seed: int,
) -> str:
    """Train one drop's model on its 8 weeks, write the drop, and describe the result in a line."""
    started = time.perf_counter()
    X_train, y_train = _windows(values, train_rows)
    X_eval, y_eval = _windows(values, eval_rows)
    model = _build_model(values.shape[1], seed)
    model.fit(X_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0)
    # a direct call, not model.predict: predict() builds a tf.function per model and TF warns on retracing
    predicted = np.asarray(model(X_eval, training=False))[:, 0]
    _write_drop(drop, model, X_eval, y_eval)
    return (
        f"trained on {len(y_train)} windows for {epochs} epochs in "
        f"{time.perf_counter() - started:.1f} s; eval R^2 {_r_squared(y_eval, predicted):.3f}"
    )


def _write_drop(drop: Path, model: keras.Model, X_eval: Float32Array, y_eval: Float32Array) -> None:
    """Write the drop's files into a hidden sibling folder, then rename it into place at once."""
    # Not tempfile.mkdtemp: its 0700 mode would follow the folder into place and hide the drop
    # from other users of a shared registry; a plain mkdir honours the umask.
    staging = drop.parent / f".{drop.name}.partial-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model.save(staging / "model.keras")
        np.savez(
            staging / "eval.npz",
            X=X_eval.astype(np.float32),
            y=y_eval.astype(np.float32),
            feature_names=np.array(DEMO_FEATURES, dtype=str),
        )
        (staging / "audit.toml").write_text(
            '# Demo drop built by flows/demo.py from the UCI Beijing PM2.5 data.\ntask = "regression"\n',
            encoding="utf-8",
        )
        os.replace(staging, drop)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
