"""The demo registry builder: real Beijing PM2.5 drops that the auditor can read.

One small registry (two weekly drops, a few epochs) is built once for the module; the alignment
test recomputes the expected window values from the CSV with plain csv/numpy code, independent
of the pandas pipeline in `flows.demo`.
"""

from __future__ import annotations

import csv
import datetime as dt
import tomllib
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import pytest

from audit.types import AuditError
from flows.demo import DEFAULT_DATA_CSV, DEMO_FEATURES, build_demo_registry

pytestmark = pytest.mark.slow

WEEKS = (dt.date(2014, 10, 6), dt.date(2014, 10, 13))
EPOCHS = 4
N_EVAL = 7 * 24


class _Built:
    """The module's registry, the paths the builder returned and the progress it reported."""

    def __init__(self, registry: Path, paths: list[Path], messages: list[str]) -> None:
        self.registry = registry
        self.paths = paths
        self.messages = messages


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> _Built:
    registry = tmp_path_factory.mktemp("demo") / "registry"
    messages: list[str] = []
    paths = build_demo_registry(registry, drop_weeks=WEEKS, epochs=EPOCHS, seed=0, progress=messages.append)
    return _Built(registry, paths, messages)


def _load_eval(drop: Path) -> dict[str, npt.NDArray[np.generic]]:
    with np.load(drop / "eval.npz", allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def test_drops_are_date_folders_with_all_files(built: _Built) -> None:
    assert built.paths == [built.registry / week.isoformat() for week in WEEKS]
    assert sorted(entry.name for entry in built.registry.iterdir()) == [w.isoformat() for w in WEEKS]
    for drop in built.paths:
        assert sorted(entry.name for entry in drop.iterdir()) == [
            "audit.toml",
            "eval.npz",
            "model.keras",
        ]
        config = tomllib.loads((drop / "audit.toml").read_text(encoding="utf-8"))
        assert config == {"task": "regression"}
    assert len(built.messages) == len(WEEKS)
    assert all(
        message.startswith(week.isoformat()) for message, week in zip(built.messages, WEEKS, strict=True)
    )


def test_eval_sample_has_one_week_of_windows(built: _Built) -> None:
    for drop in built.paths:
        sample = _load_eval(drop)
        assert set(sample) == {"X", "y", "feature_names"}
        assert sample["X"].dtype == np.float32
        assert sample["X"].shape == (N_EVAL, 24, len(DEMO_FEATURES))
        assert sample["y"].dtype == np.float32
        assert sample["y"].shape == (N_EVAL,)
        assert tuple(sample["feature_names"].tolist()) == DEMO_FEATURES
        assert np.isfinite(sample["X"]).all()
        assert np.isfinite(sample["y"]).all()


def test_saved_model_loads_safely_and_beats_predicting_zero(built: _Built) -> None:
    for drop in built.paths:
        model = keras.saving.load_model(drop / "model.keras", safe_mode=True)
        sample = _load_eval(drop)
        predicted = np.asarray(model.predict(sample["X"], verbose=0))
        assert predicted.shape == (N_EVAL, 1)
        mse = float(np.mean((predicted[:, 0] - sample["y"]) ** 2))
        assert mse < float(np.mean(sample["y"] ** 2))
        # seed 000's activation map reads "extractor" by name; names must not vary between drops
        assert [layer.name for layer in model.layers] == [
            "window",
            "gru",
            "pooling",
            "extractor",
            "flatten",
            "forecast",
        ]


def test_second_call_skips_complete_drops(built: _Built) -> None:
    before = {path: path.stat().st_mtime_ns for path in built.registry.rglob("*")}
    messages: list[str] = []
    paths = build_demo_registry(built.registry, drop_weeks=WEEKS, epochs=EPOCHS, progress=messages.append)
    assert paths == built.paths
    assert {path: path.stat().st_mtime_ns for path in built.registry.rglob("*")} == before
    assert len(messages) == len(WEEKS)
    assert all("skipped" in message for message in messages)


def _csv_hours() -> tuple[list[dt.datetime], npt.NDArray[np.float64], list[str]]:
    """Timestamps, raw pm2.5 (NaN where NA) and wind direction of every CSV row, in file order."""
    with DEFAULT_DATA_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    hours = [dt.datetime(int(r["year"]), int(r["month"]), int(r["day"]), int(r["hour"])) for r in rows]
    pm25 = np.array([np.nan if r["pm2.5"] == "NA" else float(r["pm2.5"]) for r in rows])
    return hours, pm25, [r["cbwd"] for r in rows]


def _standardised_pm25(hours: list[dt.datetime], pm25: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """pm2.5 interpolated linearly between known hours (leading gap takes the first value),
    scaled with the mean and population std of the years 2010-2013."""
    position = np.arange(len(pm25), dtype=np.float64)
    known = ~np.isnan(pm25)
    filled = np.interp(position, position[known], pm25[known])
    reference = filled[[hour.year <= 2013 for hour in hours]]
    return np.asarray((filled - reference.mean()) / reference.std(), dtype=np.float64)


def test_windows_end_the_hour_before_their_target(built: _Built) -> None:
    hours, pm25, wind = _csv_hours()
    expected = _standardised_pm25(hours, pm25)
    drop_row = hours.index(dt.datetime.combine(WEEKS[1], dt.time()))
    sample = _load_eval(built.paths[1])
    # a sample whose target and previous hour are both measured and differ, so an off-by-one shows
    changes = [
        i
        for i in range(N_EVAL)
        if not np.isnan(pm25[drop_row + i - 1 : drop_row + i + 1]).any()
        and pm25[drop_row + i - 1] != pm25[drop_row + i]
    ]
    for i in (changes[0], changes[len(changes) // 2]):
        target_row = drop_row + i
        assert hours[target_row] - hours[target_row - 1] == dt.timedelta(hours=1)
        np.testing.assert_allclose(sample["y"][i], expected[target_row], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sample["X"][i, -1, 0], expected[target_row - 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            sample["X"][i, :, 0], expected[target_row - 24 : target_row], rtol=1e-5, atol=1e-6
        )
        wind_columns = sample["X"][i, -1, 7:]
        assert DEMO_FEATURES[7 + int(np.argmax(wind_columns))] == f"cbwd_{wind[target_row - 1]}"


def test_interrupted_write_leaves_no_half_drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", fail)  # the module calls np.savez at write time
    with pytest.raises(KeyboardInterrupt):
        build_demo_registry(tmp_path, drop_weeks=WEEKS[:1], epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_missing_csv_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "PRSA.csv"
    with pytest.raises(AuditError, match="nowhere"):
        build_demo_registry(tmp_path / "registry", data_csv=missing)
    assert not (tmp_path / "registry").exists()


def test_drop_week_without_history_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="2010-01-04"):
        build_demo_registry(tmp_path, drop_weeks=[dt.date(2010, 1, 4)])
    assert list(tmp_path.iterdir()) == []
