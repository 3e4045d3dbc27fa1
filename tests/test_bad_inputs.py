"""The bad-input catalogue (docs/reliability.md): what a user sees, and what is stored, for each.

Every failing case runs the real `weekly_audit` flow twice on one database: first on a good drop
(the figures a bad drop must not touch), then with the bad drop added. It checks the one-line
message (it names the file or value and the fix) and that the database changed by exactly one
`failed` run row (and the row of the new drop it belongs to) while every stored figure is as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.states import State
from sqlalchemy.orm import Session

from audit.compare import compare_audits
from flows.cli import main
from flows.weekly_audit import AuditResult, weekly_audit
from storage import reads
from storage.session import make_engine
from tests.helpers import linear_model, table_counts, write_drop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

GOOD_WEEK = dt.date(2014, 10, 27)
BAD_WEEK = dt.date(2014, 11, 3)
LATER_WEEK = dt.date(2014, 11, 10)
NAMES = ("f0", "f1", "f2", "f3")
WEIGHTS = (1.0, 2.0, 3.0, 4.0)
FAST = ["weight_sum"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


# --- helpers -------------------------------------------------------------------------------------


def _sample(n_rows: int = 32, n_features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    return X, X @ np.arange(1.0, n_features + 1.0)


def _good_drop(registry: Path, week: dt.date) -> Path:
    X, y = _sample()
    return write_drop(registry, week, linear_model(WEIGHTS), X=X, y=y, feature_names=NAMES)


def _audit(registry: Path, db_url: str, tmp_path: Path, **options: object) -> State:
    state = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        model_name="m",
        methods=options.pop("methods", FAST),
        return_state=True,
        **options,
    )
    assert isinstance(state, State)
    return state


def _figures(engine: sa.Engine) -> list[tuple[object, ...]]:
    """Every stored figure, as plain tuples (a snapshot to compare before/after)."""
    with engine.connect() as connection:
        importances = connection.execute(
            sa.text("SELECT run_id, method, feature, value, std, rank FROM importances ORDER BY id")
        ).all()
        methods = connection.execute(
            sa.text("SELECT run_id, method, status, reason FROM method_results ORDER BY id")
        ).all()
    return [tuple(row) for row in (*importances, *methods)]


@dataclass(frozen=True)
class Failure:
    """What a user sees when the bad drop fails, and the stored error of its run."""

    state_message: str
    stored_error: str


def audit_bad_drop(tmp_path: Path, db_url: str, make_bad: Callable[[Path], None]) -> Failure:
    """Audit a good drop, add a drop of BAD_WEEK spoiled by `make_bad`, audit again, check the DB."""
    registry = tmp_path / "registry"
    _good_drop(registry, GOOD_WEEK)
    assert _audit(registry, db_url, tmp_path).is_completed()
    engine = make_engine(db_url)
    before, figures = table_counts(engine), _figures(engine)

    make_bad(_good_drop(registry, BAD_WEEK))
    state = _audit(registry, db_url, tmp_path)

    assert state.is_failed()
    after = table_counts(engine)
    assert after == {
        **before,
        "model_drops": before["model_drops"] + 1,
        "audit_runs": before["audit_runs"] + 1,
    }
    assert _figures(engine) == figures  # nothing of the bad drop is half-written
    with engine.connect() as connection:
        run = connection.execute(
            sa.text(
                "SELECT r.status, r.error, r.n_eval_samples, d.content_hash FROM audit_runs r "
                "JOIN model_drops d ON d.id = r.drop_id WHERE d.week = :week"
            ),
            {"week": BAD_WEEK},
        ).one()
    assert run.status == "failed" and run.n_eval_samples is None and run.content_hash is None
    message = state.message or ""
    assert message == f"1 of 1 drop(s) failed; {BAD_WEEK.isoformat()}: {run.error}"
    assert "\n" not in run.error
    engine.dispose()
    return Failure(state_message=message, stored_error=run.error)


def _matches(pattern: str, text: str) -> None:
    assert re.fullmatch(pattern, text), f"{text!r} does not match {pattern!r}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def prefect_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of every Prefect flow and task run logger (works without pytest's logging plugin)."""
    handler = _Records()
    logger = logging.getLogger("prefect")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def _warnings(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.levelno == logging.WARNING]


# --- model files ---------------------------------------------------------------------------------


def _corrupt(folder: Path) -> None:
    model = folder / "model.keras"
    data = bytearray(model.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(b ^ 0xFF for b in data[middle : middle + 256])
    model.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    model = folder / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _empty_file(folder: Path) -> None:
    (folder / "model.keras").write_bytes(b"")


def _not_a_model(folder: Path) -> None:
    (folder / "model.keras").write_text("this is a README, not a model\n", encoding="utf-8")


_CANNOT_LOAD = r"{path}: cannot load the model \(.+\); check the file is a complete \.keras save"


@pytest.mark.parametrize(
    ("make_bad", "pattern"),
    [
        pytest.param(_corrupt, _CANNOT_LOAD, id="corrupt"),
        pytest.param(_truncate, _CANNOT_LOAD, id="truncated"),
        pytest.param(_not_a_model, _CANNOT_LOAD, id="text-file"),
        pytest.param(
            _empty_file, r"{path}: model file is empty \(0 bytes\); re-save the model", id="0-bytes"
        ),
    ],
)
def test_broken_model_file(
    tmp_path: Path, db_url: str, make_bad: Callable[[Path], None], pattern: str
) -> None:
    failure = audit_bad_drop(tmp_path, db_url, make_bad)
    path = tmp_path / "registry" / BAD_WEEK.isoformat() / "model.keras"
    _matches(pattern.format(path=re.escape(str(path))), failure.stored_error)


def test_broken_model_on_reaudit_adds_only_a_failed_run(tmp_path: Path, db_url: str) -> None:
    """Re-auditing a drop whose model was replaced by a broken file keeps its earlier figures."""
    registry = tmp_path / "registry"
    _good_drop(registry, GOOD_WEEK)
    assert _audit(registry, db_url, tmp_path).is_completed()
    engine = make_engine(db_url)
    before, figures = table_counts(engine), _figures(engine)
    _truncate(registry / GOOD_WEEK.isoformat())

    state = _audit(registry, db_url, tmp_path, week=GOOD_WEEK)

    assert state.is_failed() and "cannot load the model" in (state.message or "")
    assert table_counts(engine) == {**before, "audit_runs": before["audit_runs"] + 1}
    assert _figures(engine) == figures
    with engine.connect() as connection:
        statuses = connection.execute(sa.text("SELECT status FROM audit_runs ORDER BY id")).scalars().all()
    assert statuses == ["succeeded", "failed"]  # the earlier figures stay current


def test_two_unrelated_model_files_in_one_drop(tmp_path: Path, sqlite_url: str) -> None:
    def add_second_model(folder: Path) -> None:
        other = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3, activation="softmax")])
        other.save(folder / "model.h5")

    failure = audit_bad_drop(tmp_path, sqlite_url, add_second_model)
    folder = re.escape(str(tmp_path / "registry" / BAD_WEEK.isoformat()))
    _matches(
        folder + r": model\.keras and model\.h5 are different models \(.+\); "
        r"a drop holds one model, or reseeded copies of one architecture",
        failure.stored_error,
    )


# --- eval sample against the model -------------------------------------------------------------


def _in_bad_drop(tmp_path: Path, name: str) -> str:
    """The path of file `name` of the bad drop, as a regular expression."""
    return re.escape(str(tmp_path / "registry" / BAD_WEEK.isoformat() / name))


def test_eval_sample_shape_does_not_match_the_model(tmp_path: Path, db_url: str) -> None:
    def three_features(folder: Path) -> None:
        X, y = _sample(n_features=3)
        np.savez(folder / "eval.npz", X=X, y=y)

    failure = audit_bad_drop(tmp_path, db_url, three_features)
    _matches(
        _in_bad_drop(tmp_path, "eval.npz") + r": X has per-sample shape \(3,\) but the model takes \(4,\); "
        r"the eval sample must be the model's input",
        failure.stored_error,
    )


def test_sequence_sample_for_a_tabular_model(tmp_path: Path, sqlite_url: str) -> None:
    def sequences(folder: Path) -> None:
        np.savez(folder / "eval.npz", X=np.zeros((8, 5, 4)))

    failure = audit_bad_drop(tmp_path, sqlite_url, sequences)
    assert "X has per-sample shape (5, 4) but the model takes (4,)" in failure.stored_error


@pytest.mark.parametrize(
    ("make_bad", "expected"),
    [
        pytest.param(
            lambda folder: np.savez(
                folder / "eval.npz", X=_sample()[0], feature_names=np.array(["f0", "f1", "f2"])
            ),
            "eval.npz: 3 feature names for 4 features in X; give one name per feature (last axis of X)",
            id="npz-names",
        ),
        pytest.param(
            lambda folder: (folder / "audit.toml").write_text('feature_names = ["a", "b", "c"]\n'),
            "eval.npz: X has 4 features but audit.toml feature_names lists 3; "
            "give one name per feature (last axis of X)",
            id="toml-names-with-sample",
        ),
        pytest.param(
            lambda folder: (
                (folder / "eval.npz").unlink(),
                (folder / "audit.toml").write_text('feature_names = ["a", "b", "c"]\n'),
            ),
            "audit.toml: 3 feature_names for a model with 4 input features; give one name per feature",
            id="toml-names-without-sample",
        ),
    ],
)
def test_feature_name_count_mismatch(
    tmp_path: Path, sqlite_url: str, make_bad: Callable[[Path], None], expected: str
) -> None:
    failure = audit_bad_drop(tmp_path, sqlite_url, make_bad)
    folder = tmp_path / "registry" / BAD_WEEK.isoformat()
    assert failure.stored_error == f"{folder}/{expected}"


def _csv_with_duplicate_columns(folder: Path) -> None:
    (folder / "eval.npz").unlink()
    X, y = _sample()
    frame = pd.DataFrame(np.column_stack([X, y]), columns=["f0", "f1", "f1", "f3", "target"])
    frame.to_csv(folder / "eval.csv", index=False)


@pytest.mark.parametrize(
    ("make_bad", "expected"),
    [
        pytest.param(
            lambda folder: np.savez(
                folder / "eval.npz", X=_sample()[0], feature_names=np.array(["f0", "f1", "f1", "f3"])
            ),
            "eval.npz: duplicate feature names f1; names must be unique",
            id="npz",
        ),
        pytest.param(
            lambda folder: (folder / "audit.toml").write_text('feature_names = ["a", "b", "b", "a"]\n'),
            "audit.toml: duplicate feature_names a, b; give every feature its own name",
            id="audit.toml",
        ),
        pytest.param(
            _csv_with_duplicate_columns,
            "eval.csv: duplicate column names f1; give every column its own name",
            id="csv-columns",
        ),
    ],
)
def test_duplicate_feature_names(
    tmp_path: Path, sqlite_url: str, make_bad: Callable[[Path], None], expected: str
) -> None:
    failure = audit_bad_drop(tmp_path, sqlite_url, make_bad)
    folder = tmp_path / "registry" / BAD_WEEK.isoformat()
    assert failure.stored_error == f"{folder}/{expected}"


def test_labels_outside_the_models_classes(tmp_path: Path, db_url: str) -> None:
    def five_classes_for_three(folder: Path) -> None:
        keras.utils.set_random_seed(0)
        classifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        classifier.save(folder / "model.keras")
        np.savez(folder / "eval.npz", X=_sample()[0], y=np.arange(32) % 6)

    failure = audit_bad_drop(tmp_path, db_url, five_classes_for_three)
    _matches(
        _in_bad_drop(tmp_path, "eval.npz")
        + r": labels span 0\.\.5 but the model has 3 classes; fix y or set task in audit\.toml",
        failure.stored_error,
    )


# --- NaN / inf ------------------------------------------------------------------------------------


def _with_non_finite(folder: Path, *, nan_rows: int, inf_y_rows: int, config: str | None = None) -> None:
    X, y = _sample()
    X[:nan_rows, 1] = np.nan
    y[nan_rows : nan_rows + inf_y_rows] = np.inf
    np.savez(folder / "eval.npz", X=X, y=y, feature_names=np.array(NAMES))
    if config is not None:
        (folder / "audit.toml").write_text(config, encoding="utf-8")


@pytest.mark.parametrize(
    ("nan_rows", "inf_y_rows", "where"),
    [(2, 0, "X"), (0, 3, "y"), (1, 1, "X and y")],
    ids=["nan-in-X", "inf-in-y", "both"],
)
def test_non_finite_values_are_an_error_by_default(
    tmp_path: Path, db_url: str, nan_rows: int, inf_y_rows: int, where: str
) -> None:
    failure = audit_bad_drop(
        tmp_path, db_url, lambda folder: _with_non_finite(folder, nan_rows=nan_rows, inf_y_rows=inf_y_rows)
    )
    n_bad = nan_rows + inf_y_rows
    _matches(
        _in_bad_drop(tmp_path, "eval.npz") + rf": {n_bad} of 32 rows of {where} hold NaN or inf; clean them, "
        r'or set nan_policy = "drop" in audit\.toml to drop them \(the count is reported\)',
        failure.stored_error,
    )


def test_bad_setting_values_name_the_key(tmp_path: Path, sqlite_url: str) -> None:
    failure = audit_bad_drop(
        tmp_path, sqlite_url, lambda folder: (folder / "audit.toml").write_text('nan_policy = "skip"\n')
    )
    folder = tmp_path / "registry" / BAD_WEEK.isoformat()
    assert failure.stored_error == (
        f'{folder}/audit.toml: nan_policy = \'skip\' is not one of "error" or "drop"'
    )


def test_unreadable_audit_toml(tmp_path: Path, sqlite_url: str) -> None:
    failure = audit_bad_drop(
        tmp_path, sqlite_url, lambda folder: (folder / "audit.toml").write_text("max_eval_samples = \n")
    )
    folder = tmp_path / "registry" / BAD_WEEK.isoformat()
    _matches(
        re.escape(f"{folder}/audit.toml") + r": not valid TOML \(.+\); fix the file or remove it",
        failure.stored_error,
    )


# --- method options in audit.toml (checked when the drop loads: tests/test_method_options.py) -----

_PERMUTATION_TAKES = "permutation takes n_repeats, max_samples, scoring"
BAD_METHOD_OPTIONS = [
    pytest.param(
        "[methods.permutation]\nn_repeat = 10\n",
        f"unknown option methods.permutation.n_repeat (did you mean n_repeats?); {_PERMUTATION_TAKES}",
        id="typo",
    ),
    pytest.param(
        "[methods.permutaton]\nn_repeats = 10\n",
        "unknown method table [methods.permutaton] (did you mean [methods.permutation]?); known methods: "
        "garson, grad_cam, gradient_shap, gradient_x_input, integrated_gradients, olden, permutation, "
        "perturbation, saliency, sensitivity_sweep, weight_sum",
        id="unknown-method",
    ),
    pytest.param(
        '[methods.permutation]\nn_repeats = "10"\n',
        "methods.permutation.n_repeats must be an integer >= 1, got '10'",
        id="ill-typed",
    ),
    pytest.param(
        "[methods.perturbation]\nscale = -0.5\n",
        "methods.perturbation.scale must be a number > 0, got -0.5",
        id="out-of-range",
    ),
]


@pytest.mark.parametrize(("config", "message"), BAD_METHOD_OPTIONS)
def test_bad_method_options_fail_the_drop(tmp_path: Path, sqlite_url: str, config: str, message: str) -> None:
    """The run audits `weight_sum` only: a bad table of another method still fails the drop."""
    failure = audit_bad_drop(
        tmp_path, sqlite_url, lambda folder: (folder / "audit.toml").write_text(config, encoding="utf-8")
    )
    folder = tmp_path / "registry" / BAD_WEEK.isoformat()
    assert failure.stored_error == f"{folder}/audit.toml: {message}"


def test_a_bad_method_option_fails_its_drop_and_the_others_are_audited(tmp_path: Path, db_url: str) -> None:
    registry = tmp_path / "registry"
    _good_drop(registry, GOOD_WEEK)
    bad = _good_drop(registry, BAD_WEEK)
    (bad / "audit.toml").write_text("[methods.permutation]\nn_repeat = 10\n", encoding="utf-8")
    _good_drop(registry, LATER_WEEK)

    state = _audit(registry, db_url, tmp_path, methods=["weight_sum", "permutation"])

    error = (
        f"{bad}/audit.toml: unknown option methods.permutation.n_repeat (did you mean n_repeats?); "
        f"{_PERMUTATION_TAKES}"
    )
    assert state.is_failed() and state.message == f"1 of 3 drop(s) failed; {BAD_WEEK.isoformat()}: {error}"
    engine = make_engine(db_url)
    with engine.connect() as connection:
        runs = connection.execute(
            sa.text(
                "SELECT d.week, r.status, r.error, COUNT(i.id) AS n_figures FROM audit_runs r "
                "JOIN model_drops d ON d.id = r.drop_id LEFT JOIN importances i ON i.run_id = r.id "
                "GROUP BY d.week, r.status, r.error ORDER BY d.week"
            )
        ).all()
        compared = connection.execute(
            sa.text(
                "SELECT d.week, pd.week FROM comparisons c JOIN audit_runs r ON r.id = c.run_id "
                "JOIN model_drops d ON d.id = r.drop_id JOIN audit_runs pr ON pr.id = c.previous_run_id "
                "JOIN model_drops pd ON pd.id = pr.drop_id WHERE c.method = 'permutation'"
            )
        ).all()
    engine.dispose()
    assert [(str(week), status, error_text, n) for week, status, error_text, n in runs] == [
        (GOOD_WEEK.isoformat(), "succeeded", None, 2 * len(NAMES)),
        (BAD_WEEK.isoformat(), "failed", error, 0),
        (LATER_WEEK.isoformat(), "succeeded", None, 2 * len(NAMES)),
    ]
    assert [(str(week), str(previous)) for week, previous in compared] == [
        (LATER_WEEK.isoformat(), GOOD_WEEK.isoformat())
    ]
    assert (tmp_path / "out" / LATER_WEEK.isoformat() / "report.html").is_file()


def _nan_drop_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    folder = _good_drop(registry, BAD_WEEK)
    _with_non_finite(folder, nan_rows=2, inf_y_rows=1, config='nan_policy = "drop"\n')
    return registry


def test_non_finite_rows_dropped_on_request_are_counted_and_logged(tmp_path: Path, db_url: str) -> None:
    registry = _nan_drop_registry(tmp_path)
    with prefect_logs() as records:
        state = _audit(registry, db_url, tmp_path)
    assert state.is_completed()
    with make_engine(db_url).connect() as connection:
        used = connection.execute(sa.text("SELECT n_eval_samples FROM audit_runs")).scalar_one()
    assert used == 29
    assert any(
        "29 eval samples (32 rows in eval.npz, 3 with NaN/inf dropped)" in message
        for message in _warnings(records)
    )


def test_dropped_row_count_reaches_the_stored_run_and_the_report(tmp_path: Path, sqlite_url: str) -> None:
    registry = _nan_drop_registry(tmp_path)
    state = _audit(registry, sqlite_url, tmp_path)
    assert state.is_completed()
    with make_engine(sqlite_url).connect() as connection:
        row = connection.execute(
            sa.text("SELECT n_eval_samples, n_eval_rows_in_file, n_eval_rows_dropped FROM audit_runs")
        ).one()
    assert tuple(row) == (29, 32, 3)
    html = (tmp_path / "out" / BAD_WEEK.isoformat() / "report.html").read_text(encoding="utf-8")
    assert "3 rows with NaN/inf dropped" in html


# --- large eval samples -----------------------------------------------------------------------------


def _large_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    X, y = _sample(n_rows=500)
    write_drop(
        registry,
        BAD_WEEK,
        linear_model(WEIGHTS),
        X=X,
        y=y,
        feature_names=NAMES,
        config="max_eval_samples = 50\n[methods.permutation]\nn_repeats = 2\n",
    )
    return registry


def _permutation_figures(db_url: str) -> list[tuple[object, ...]]:
    with make_engine(db_url).connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT i.feature, i.value, i.std FROM importances i JOIN audit_runs r ON r.id = i.run_id "
                "WHERE r.status = 'succeeded' AND i.method = 'permutation' ORDER BY i.position"
            )
        ).all()
    return [tuple(row) for row in rows]


def test_large_eval_sample_is_capped_reproducibly(tmp_path: Path, db_url: str) -> None:
    registry = _large_registry(tmp_path)
    with prefect_logs() as records:
        assert _audit(registry, db_url, tmp_path, methods=["permutation"]).is_completed()
    first = _permutation_figures(db_url)
    with make_engine(db_url).connect() as connection:
        assert connection.execute(sa.text("SELECT n_eval_samples FROM audit_runs")).scalar_one() == 50
    logged = [record.getMessage() for record in records]
    expected = "50 eval samples (500 rows in eval.npz, sampled to max_eval_samples = 50 with seed 20141103)"
    assert any(expected in message for message in logged)

    # A rerun of the same drop audits the same 50 rows: the same figures, to the last bit.
    assert _audit(registry, db_url, tmp_path, methods=["permutation"], week=BAD_WEEK).is_completed()
    assert _permutation_figures(db_url) == first and len(first) == 4


def test_original_row_count_and_seed_are_stored(tmp_path: Path, sqlite_url: str) -> None:
    registry = _large_registry(tmp_path)
    assert _audit(registry, sqlite_url, tmp_path).is_completed()
    with make_engine(sqlite_url).connect() as connection:
        row = connection.execute(
            sa.text("SELECT n_eval_samples, n_eval_rows_in_file, eval_sampling_seed FROM audit_runs")
        ).one()
    assert tuple(row) == (50, 500, 20141103)


# --- registry folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        # "no model in the drop (expected model.keras, ...)"; before the model formats: "no model.keras ..."
        pytest.param(BAD_WEEK.isoformat(), "no model", id="empty-date-folder"),
        pytest.param("latest", "folder name is not a date (YYYY-MM-DD or YYYYMMDD)", id="not-a-date"),
        pytest.param(
            "2014-13-01", "folder name is not a date (YYYY-MM-DD or YYYYMMDD)", id="impossible-date"
        ),
    ],
)
def test_folders_that_are_not_drops_are_skipped_with_a_warning(
    tmp_path: Path, db_url: str, folder: str, reason: str
) -> None:
    registry = tmp_path / "registry"
    (registry / folder).mkdir(parents=True)
    if folder == "latest":  # a model in a folder that is not named by a date is still not a drop
        linear_model(WEIGHTS).save(registry / folder / "model.keras")
    with prefect_logs() as records:
        state = _audit(registry, db_url, tmp_path)

    assert state.is_completed()
    result = state.result()
    assert isinstance(result, AuditResult)
    assert result.audited_weeks == () and result.report_path is None
    assert any(line.startswith(f"skipped {registry / folder}: {reason}") for line in _warnings(records))
    assert "no audited drop yet: no report written" in _warnings(records)
    engine = make_engine(db_url)
    assert set(table_counts(engine).values()) == {0}  # nothing written


def test_skipped_folder_beside_good_drops(tmp_path: Path, sqlite_url: str) -> None:
    """An empty date folder between two drops does not break the comparison of the others."""
    registry = tmp_path / "registry"
    _good_drop(registry, GOOD_WEEK)
    (registry / BAD_WEEK.isoformat()).mkdir()
    _good_drop(registry, LATER_WEEK)
    with prefect_logs() as records:
        state = _audit(registry, sqlite_url, tmp_path)
    result = state.result()
    assert isinstance(result, AuditResult) and result.audited_weeks == (GOOD_WEEK, LATER_WEEK)
    skipped = f"skipped {registry / BAD_WEEK.isoformat()}: no model"
    assert any(line.startswith(skipped) for line in _warnings(records))
    with Session(make_engine(sqlite_url)) as session:
        current = reads.load_audit(session, "m", LATER_WEEK)
        previous = reads.previous_audit(session, "m", LATER_WEEK)
    assert current is not None and previous is not None and previous.week == GOOD_WEEK


# --- feature sets that change between drops ---------------------------------------------------------


def test_features_are_aligned_by_name_across_drops(tmp_path: Path, db_url: str) -> None:
    """Reordered features compare equal by name; added and removed ones are listed as such."""
    registry = tmp_path / "registry"
    weights = dict(zip(NAMES, WEIGHTS, strict=True))
    X, _ = _sample()
    write_drop(registry, GOOD_WEEK, linear_model(WEIGHTS), X=X, feature_names=NAMES)
    reordered = ("f3", "f1", "f0", "f2")
    write_drop(
        registry, BAD_WEEK, linear_model([weights[n] for n in reordered]), X=X, feature_names=reordered
    )
    changed = ("f0", "f1", "f2", "f4")  # f3 removed, f4 added
    write_drop(registry, LATER_WEEK, linear_model([1.0, 2.0, 3.0, 5.0]), X=X, feature_names=changed)

    state = _audit(registry, db_url, tmp_path, methods=["weight_sum"])  # exact: |w| of each feature

    assert state.is_completed()
    engine = make_engine(db_url)
    with Session(engine) as session:
        audits = {week: reads.load_audit(session, "m", week) for week in (GOOD_WEEK, BAD_WEEK, LATER_WEEK)}
    first, second, third = (audits[week] for week in (GOOD_WEEK, BAD_WEEK, LATER_WEEK))
    assert first is not None and second is not None and third is not None

    for comparison in compare_audits(second, first):
        by_name = {change.feature: change for change in comparison.changes}
        assert set(by_name) == set(NAMES)
        for name, change in by_name.items():
            assert change.value == pytest.approx(weights[name]) and change.delta == pytest.approx(0.0)
            assert change.rank_change == 0
        assert comparison.spearman == pytest.approx(1.0) and comparison.top_k_overlap == 1.0

    for comparison in compare_audits(third, second):
        by_name = {change.feature: change for change in comparison.changes}
        assert by_name["f4"].previous_value is None and by_name["f4"].value == pytest.approx(5.0)
        assert by_name["f3"].value is None and by_name["f3"].previous_value == pytest.approx(4.0)
        assert by_name["f0"].delta == pytest.approx(0.0)
        assert comparison.spearman == pytest.approx(1.0)  # f0 < f1 < f2 in both drops

    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT method, spearman, top_k FROM comparisons ORDER BY run_id, method")
        ).all()
    assert [(row.method, row.spearman, row.top_k) for row in stored] == [
        ("weight_sum", pytest.approx(1.0), 4)
    ] * 2
    html = (tmp_path / "out" / LATER_WEEK.isoformat() / "report.html").read_text(encoding="utf-8")
    assert html.count("New this week: f4") == 1 and html.count("No longer in the model: f3") == 1


# --- the command line -------------------------------------------------------------------------------


def test_cli_prints_the_one_line_message(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    _empty_file(_good_drop(registry, BAD_WEEK))
    code = main(["run", "--registry", str(registry), "--db", sqlite_url, "--out", str(tmp_path / "out")])
    assert code == 1
    model = registry / BAD_WEEK.isoformat() / "model.keras"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"drift-audit: error: 1 of 1 drop(s) failed; {BAD_WEEK.isoformat()}: "
        f"{model}: model file is empty (0 bytes); re-save the model"
    )
