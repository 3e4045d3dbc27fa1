"""The report's importance history read from SQL (storage.history.report_history), on both backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.types import Importance, MethodOutcome, MethodStatus, ModelFacts, Task
from storage import writes
from storage.history import report_history
from storage.session import make_engine, upgrade_database

W1, W2, W3, W4 = (dt.date(2024, 1, 1) + dt.timedelta(weeks=i) for i in range(4))
NAN = np.nan


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    upgrade_database(engine)
    return engine


def _facts() -> ModelFacts:
    return ModelFacts(Path("/registry/model.keras"), "a" * 64, (None, 3), (None, 1), 10, Task.REGRESSION)


def _outcomes(figures: Mapping[str, Mapping[str, float]]) -> list[MethodOutcome]:
    """OK outcomes of methods {method: {feature: value}}, plus a skipped and a profile-only method."""
    outcomes = [
        MethodOutcome(
            method,
            MethodStatus.OK,
            importance=Importance(method, tuple(values), np.array(list(values.values()), dtype=float)),
        )
        for method, values in figures.items()
    ]
    cam = Importance("grad_cam", (), np.zeros(0), profile=np.ones((2, 1)), profile_features=("*",))
    outcomes.append(MethodOutcome("grad_cam", MethodStatus.OK, importance=cam))
    outcomes.append(MethodOutcome("integrated_gradients", MethodStatus.SKIPPED, reason="no sample"))
    return outcomes


def _audit(
    engine: sa.Engine, week: dt.date, figures: Mapping[str, Mapping[str, float]], model: str = "m"
) -> int:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name=model, week=week, model_path=_facts().path)
    with Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(figures),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
            feature_names=list(next(iter(figures.values()))),
        )
    return run_id


def _fail(engine: sa.Engine, week: dt.date) -> None:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=week, model_path=_facts().path)
    with Session(engine) as session, session.begin():
        writes.record_failure(session, run_id, "model.keras: cannot load")


def _history(engine: sa.Engine, week: dt.date, **options: int) -> dict[str, tuple[list[str], np.ndarray]]:
    with Session(engine) as session:
        histories = report_history(session, "m", week, **options)
    return {h.method: (list(h.feature_names), h.values) for h in histories}


def _three_weeks(engine: sa.Engine) -> None:
    """W1, W2 and W3 audited; feature "new" appears in W2; a week of another model in between."""
    _audit(
        engine, W1, {"permutation": {"a": 0.5, "b": 0.2, "c": 0.1}, "weight_sum": {"a": 1, "b": 2, "c": 3}}
    )
    _audit(
        engine,
        W2,
        {
            "permutation": {"a": 0.6, "b": 0.1, "c": 0.2, "new": 0.05},
            "weight_sum": {"a": 1, "b": 2, "c": 3, "new": 4},
        },
    )
    _audit(engine, W2, {"permutation": {"a": 99.0}}, model="other")
    _audit(
        engine,
        W3,
        {
            "permutation": {"a": 0.4, "b": 0.3, "c": 0.2, "new": 0.5},
            "weight_sum": {"a": 3, "b": 2, "c": 1, "new": 0},
        },
    )


def test_top_features_of_the_week_over_the_recent_weeks_oldest_first(engine: sa.Engine) -> None:
    _three_weeks(engine)
    with Session(engine) as session:
        histories = report_history(session, "m", W3, top_k=2)
    assert [h.method for h in histories] == [
        "permutation",
        "weight_sum",
    ]  # stored order; grad_cam has no values
    assert all(h.weeks == (W1, W2, W3) for h in histories)
    permutation, weights = histories
    assert permutation.feature_names == ("new", "a")  # W3's ranks: new 0.5, a 0.4
    np.testing.assert_array_equal(permutation.values, [[NAN, 0.5], [0.05, 0.6], [0.5, 0.4]])
    assert weights.feature_names == ("a", "b")
    np.testing.assert_array_equal(weights.values, [[1, 2], [1, 2], [3, 2]])


def test_window_ends_at_the_week_and_keeps_the_latest_weeks(engine: sa.Engine) -> None:
    _three_weeks(engine)
    names, values = _history(engine, W2, top_k=3)["permutation"]
    assert names == ["a", "c", "b"]  # W2's ranks; W3 is after the week and not shown
    np.testing.assert_array_equal(values, [[0.5, 0.1, 0.2], [0.6, 0.2, 0.1]])
    with Session(engine) as session:
        (latest, *_) = report_history(session, "m", W3, weeks=2)
    assert latest.weeks == (W2, W3) and latest.feature_names == ("new", "a", "b", "c")
    np.testing.assert_array_equal(latest.values[:, 0], [0.05, 0.5])


def test_a_superseded_reaudit_and_failed_runs_do_not_count(engine: sa.Engine) -> None:
    _three_weeks(engine)
    _audit(
        engine,
        W2,
        {
            "permutation": {"a": 0.7, "b": 0.9, "c": 0.0, "new": 0.3},
            "weight_sum": {"a": 1, "b": 2, "c": 3, "new": 4},
        },
    )
    _fail(engine, W2)  # a later failed attempt leaves the re-audit current
    _fail(engine, W4)  # a week with only a failed run is no audited week
    names, values = _history(engine, W3, top_k=4)["permutation"]
    assert names == ["new", "a", "b", "c"]
    np.testing.assert_array_equal(values[:, 2], [0.2, 0.9, 0.3])  # b in W2 is the re-audit's 0.9
    with Session(engine) as session:
        assert report_history(session, "m", W4) == ()
        assert report_history(session, "m", dt.date(2023, 12, 25)) == ()
        assert report_history(session, "nobody", W3) == ()
        assert {h.weeks for h in report_history(session, "m", W3)} == {(W1, W2, W3)}


def test_two_queries_with_bound_parameters(engine: sa.Engine) -> None:
    _three_weeks(engine)
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            report_history(session, "m", W3, top_k=2)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 2
    assert all("'m'" not in statement and "2024" not in statement for statement, _ in statements)


@pytest.mark.parametrize("options", [{"weeks": 0}, {"top_k": 0}])
def test_bad_window_names_the_value(engine: sa.Engine, options: dict[str, int]) -> None:
    with (
        Session(engine) as session,
        pytest.raises(ValueError, match=f"{next(iter(options))} must be >= 1, got 0"),
    ):
        report_history(session, "m", W1, **options)
