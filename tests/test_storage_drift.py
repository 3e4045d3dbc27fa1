"""Storage of the drift call (migration 0004) against SQLite and PostgreSQL: reseeded copies and the
frozen-set model, `save_assessment`, the drift history, the two views and the documented queries."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.orm import Session

from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.types import (
    AuditSummary,
    DriftAssessment,
    DropVerdict,
    FeatureVerdict,
    Importance,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
    ModelFacts,
    ModelImportances,
    RunStatus,
    Task,
)
from storage import reads, writes
from storage.models import AuditRun
from storage.session import alembic_config, make_engine, upgrade_database

ROOT = Path(__file__).resolve().parents[1]
WEEKS = [dt.date(2014, 10, 13), dt.date(2014, 10, 20), dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
NAMES = ("pm2.5", "DEWP", "TEMP", "PRES")
BASE = np.array([0.9, 0.4, 0.3, 0.2])
#: Tables added by migration 0004, each with a run_id.
DRIFT_TABLES = (
    "feature_drifts",
    "feature_verdicts",
    "drop_verdicts",
    "method_agreement",
    "model_importances",
    "model_profiles",
)
ASSESSMENT_TABLES = ("comparisons", "feature_drifts", "feature_verdicts", "drop_verdicts", "method_agreement")


def _facts() -> ModelFacts:
    return ModelFacts(
        path=Path("/registry/model.keras"),
        content_hash="a" * 64,
        input_shape=(None, 4, 4),
        output_shape=(None, 1),
        n_parameters=99,
        task=Task.REGRESSION,
    )


def _importances(seed: int, factors: dict[str, float] | None = None) -> tuple[Importance, ...]:
    """One model's figures: three unsigned data methods, a weight method, a signed one with a time
    profile, and a profile-only one (Grad-CAM). `factors` scales features in every method."""
    rng = np.random.default_rng(seed)
    scale = np.array([(factors or {}).get(name, 1.0) for name in NAMES])

    def values() -> np.ndarray:
        return BASE * scale * rng.uniform(0.95, 1.05, size=len(NAMES))

    profile = np.outer(np.array([0.1, 0.2, 0.3, 0.4]), BASE * scale)
    return (
        Importance("permutation", NAMES, values(), std=np.full(4, 0.01), parameters={"n_repeats": 5}),
        Importance("perturbation", NAMES, values(), std=np.full(4, 0.02)),
        Importance("integrated_gradients", NAMES, values(), profile=profile * rng.uniform(0.95, 1.05)),
        Importance("weight_sum", NAMES, values()),
        Importance("saliency", NAMES, values() * np.array([1, -1, 1, -1]), profile=profile, signed=True),
        Importance(
            "grad_cam", (), np.zeros(0), profile=np.array([[0.1], [0.6], [0.3]]), profile_features=("*",)
        ),
    )


def _outcomes(seed: int, factors: dict[str, float] | None = None) -> tuple[MethodOutcome, ...]:
    computed = [
        MethodOutcome(importance.method, MethodStatus.OK, importance=importance, seconds=0.1)
        for importance in _importances(seed, factors)
    ]
    return (*computed, MethodOutcome("sensitivity_sweep", MethodStatus.SKIPPED, reason="no eval sample"))


def _record(
    engine: sa.Engine,
    week: dt.date,
    outcomes: Sequence[MethodOutcome],
    copies: Sequence[ModelImportances] = (),
    frozen: ModelImportances | None = None,
) -> int:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=week, model_path=_facts().path)
    with Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=outcomes,
            eval_source="/registry/eval.npz",
            eval_hash="b" * 64,
            n_eval_samples=64,
            copies=copies,
            frozen=frozen,
        )
    return run_id


def _assess(
    engine: sa.Engine, week: dt.date
) -> tuple[AuditSummary, tuple[MethodComparison, ...], DriftAssessment]:
    """What the flow's compare step does: load, compare, assess against the history, store."""
    with Session(engine) as session, session.begin():
        current = reads.load_audit(session, "m", week)
        previous = reads.previous_audit(session, "m", week)
        assert current is not None and previous is not None
        history = reads.recent_audits(session, "m", previous.week, 8)
        comparisons = compare_audits(current, previous)
        assessment = assess_drift(current, previous, history)
        writes.save_assessment(session, current.run_id, previous.run_id, comparisons, assessment)
    return current, comparisons, assessment


def _copies(seed: int) -> tuple[ModelImportances, ...]:
    return (
        ModelImportances("model_seed1.keras", _importances(seed + 100)),
        ModelImportances("model_seed2.keras", _importances(seed + 200)),
    )


def _fill(engine: sa.Engine) -> dict[dt.date, int]:
    """Four weekly audits; the last one with DEWP ten times as important, reseeded copies and the
    previous model on its data. Every week after the first is assessed and stored."""
    runs = {}
    for index, week in enumerate(WEEKS[:-1]):
        runs[week] = _record(engine, week, _outcomes(index))
    frozen = ModelImportances(WEEKS[-2].isoformat(), _importances(50))
    runs[WEEKS[-1]] = _record(engine, WEEKS[-1], _outcomes(3, {"DEWP": 10.0}), _copies(3), frozen)
    for week in WEEKS[1:]:
        _assess(engine, week)
    return runs


def _counts(engine: sa.Engine, run_id: int | None = None) -> dict[str, int]:
    where = "" if run_id is None else " WHERE run_id = :run_id"
    with engine.connect() as connection:
        return {
            name: connection.execute(
                sa.text(f"SELECT COUNT(*) FROM {name}{where}"), {"run_id": run_id}
            ).scalar_one()
            for name in (*ASSESSMENT_TABLES, "model_importances", "model_profiles")
        }


def _assert_same(loaded: Importance, stored: Importance) -> None:
    assert loaded.method == stored.method and loaded.feature_names == stored.feature_names
    assert loaded.signed == stored.signed and loaded.profile_labels == stored.profile_labels
    np.testing.assert_allclose(loaded.values, stored.values)
    if stored.std is None:
        assert loaded.std is None
    else:
        assert loaded.std is not None
        np.testing.assert_allclose(loaded.std, stored.std)
    if stored.profile is None:
        assert loaded.profile is None
    else:
        assert loaded.profile is not None
        np.testing.assert_allclose(loaded.profile, stored.profile)


def _assert_same_models(loaded: ModelImportances | None, stored: ModelImportances) -> None:
    assert loaded is not None and loaded.label == stored.label
    assert [i.method for i in loaded.importances] == [i.method for i in stored.importances]
    for got, expected in zip(loaded.importances, stored.importances, strict=True):
        _assert_same(got, expected)


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    upgrade_database(engine)
    return engine


def test_copies_and_frozen_model_read_back_equal(engine: sa.Engine) -> None:
    copies = _copies(0)
    frozen = ModelImportances("2014-10-06", _importances(7))
    _record(engine, WEEKS[0], _outcomes(0), copies, frozen)
    _record(engine, WEEKS[1], _outcomes(1))
    with Session(engine) as session:
        summary = reads.load_audit(session, "m", WEEKS[0])
        previous = reads.previous_audit(session, "m", WEEKS[1])
        plain = reads.load_audit(session, "m", WEEKS[1])
    assert summary is not None and previous is not None and plain is not None
    assert [copy.label for copy in summary.copies] == ["model_seed1.keras", "model_seed2.keras"]
    for got, expected in zip(summary.copies, copies, strict=True):
        _assert_same_models(got, expected)
    _assert_same_models(summary.frozen, frozen)
    assert previous.frozen is not None and len(previous.copies) == 2
    assert plain.copies == () and plain.frozen is None
    cam = summary.copies[0].importance("grad_cam")
    assert cam is not None and not cam.has_values and cam.profile_labels == ("*",)
    assert _counts(engine)["model_importances"] == 3 * 5 * len(NAMES)  # 3 models x 5 methods with values


def test_copies_need_distinct_labels(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEKS[0], model_path=_facts().path)
    twice = (ModelImportances("a.keras", _importances(1)), ModelImportances("a.keras", _importances(2)))
    with pytest.raises(ValueError, match="distinct labels"), Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(0),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
            copies=twice,
        )


def test_assessment_is_stored_and_replaced_not_duplicated(engine: sa.Engine) -> None:
    runs = _fill(engine)
    last = runs[WEEKS[-1]]
    counts = _counts(engine, last)
    current, comparisons, assessment = _assess(engine, WEEKS[-1])  # the same call again
    assert _counts(engine, last) == counts
    assert counts["comparisons"] == len(comparisons)
    assert counts["feature_drifts"] == len(assessment.drifts) == 5 * len(NAMES)
    assert counts["feature_verdicts"] == len(assessment.features) == len(NAMES)
    assert counts["method_agreement"] == len(assessment.agreement) == 10
    assert counts["drop_verdicts"] == 1
    assert assessment.verdict is DropVerdict.ALERT and assessment.features[0].feature == "DEWP"
    with Session(engine) as session:
        assert reads.load_assessment(session, current.run_id) == (assessment.verdict, assessment.reason)
        assert reads.load_assessment(session, runs[WEEKS[0]]) is None
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT verdict, methods_flagged, n_flagged, n_methods, direction, reason "
                "FROM feature_verdicts WHERE run_id = :run_id AND feature = 'DEWP'"
            ),
            {"run_id": last},
        ).one()
        rows = connection.execute(
            sa.text("SELECT method, kendall, ndcg, profile_distance FROM comparisons WHERE run_id = :run_id"),
            {"run_id": last},
        ).all()
    dewp = assessment.features[0]
    assert stored.verdict == "changed" and stored.methods_flagged == ",".join(dewp.methods_flagged)
    assert (stored.n_flagged, stored.n_methods, stored.direction) == (dewp.agreement, dewp.n_methods, "up")
    assert stored.reason == dewp.reason
    by_method = {comparison.method: comparison for comparison in comparisons}
    for row in rows:
        expected = by_method[row.method]
        for name in ("kendall", "ndcg", "profile_distance"):
            assert getattr(row, name) == pytest.approx(getattr(expected, name))
    assert any(row.profile_distance is not None for row in rows)


def test_a_new_comparison_without_drift_call_clears_the_old_one(engine: sa.Engine) -> None:
    runs = _fill(engine)
    last, before = runs[WEEKS[-1]], runs[WEEKS[-2]]
    _, _, assessment = _assess(engine, WEEKS[-1])
    extra_models = {name: _counts(engine, last)[name] for name in ("model_importances", "model_profiles")}
    with Session(engine) as session, session.begin():
        writes.save_comparisons(session, last, before, ())
    assert _counts(engine, last) == {**dict.fromkeys(ASSESSMENT_TABLES, 0), **extra_models}
    with Session(engine) as session, session.begin():
        writes.save_assessment(session, last, before, (), assessment)
        assert reads.load_assessment(session, last) == (assessment.verdict, assessment.reason)
        writes.save_assessment(session, last, None, (), None)  # e.g. the previous drop is gone
        assert reads.load_assessment(session, last) is None
    with pytest.raises(ValueError, match="previous drop"), Session(engine) as session:
        writes.save_assessment(session, last, None, (), assessment)


def test_reaudit_deletes_the_superseded_runs_drift_rows(engine: sa.Engine) -> None:
    runs = _fill(engine)
    old = runs[WEEKS[-1]]
    assert all(_counts(engine, old).values())
    new = _record(engine, WEEKS[-1], _outcomes(9))
    assert set(_counts(engine, old).values()) == {0}
    with Session(engine) as session:
        assert session.get_one(AuditRun, old).status == RunStatus.SUPERSEDED
        summary = reads.load_audit(session, "m", WEEKS[-1])
        assert reads.load_assessment(session, new) is None
    assert summary is not None and summary.run_id == new and summary.copies == () and summary.frozen is None
    with engine.connect() as connection:
        weeks = connection.execute(sa.text("SELECT DISTINCT week FROM importance_changes")).scalars().all()
        verdicts = connection.execute(sa.text("SELECT week FROM audit_verdicts")).scalars().all()
    assert sorted(str(week) for week in weeks) == [w.isoformat() for w in WEEKS[1:-1]]
    assert sorted(str(week) for week in verdicts) == [w.isoformat() for w in WEEKS[1:-1]]


def test_views_return_what_was_stored(engine: sa.Engine) -> None:
    _fill(engine)
    # a later drop adds a feature: "new" rows carry no previous value, delta or band
    names = (*NAMES, "Iws")
    extra = tuple(
        MethodOutcome(
            method,
            MethodStatus.OK,
            importance=Importance(method, names, np.array([0.9, 0.4, 0.3, 0.2, 0.5]), std=np.full(5, 0.01)),
        )
        for method in ("permutation", "perturbation")
    )
    week = dt.date(2014, 11, 17)
    _record(engine, week, extra)
    _, _, assessment = _assess(engine, week)
    with engine.connect() as connection:
        changes = connection.execute(
            sa.text(
                "SELECT * FROM importance_changes WHERE week = :week ORDER BY method, feature"
            ).bindparams(sa.bindparam("week", week, type_=sa.Date))
        ).all()
        verdict = connection.execute(
            sa.text("SELECT * FROM audit_verdicts WHERE week = :week").bindparams(
                sa.bindparam("week", week, type_=sa.Date)
            )
        ).one()
    assert list(verdict._fields) == ["model", "week", "previous_week", "verdict", "reason", "n_history"]
    assert (verdict.model, str(verdict.week), str(verdict.previous_week)) == ("m", "2014-11-17", "2014-11-03")
    assert (verdict.verdict, verdict.reason) == (assessment.verdict.value, assessment.reason)
    assert verdict.n_history == assessment.n_history == 3
    assert assessment.verdict is DropVerdict.ALERT and "Iws" in assessment.reason
    assert list(changes[0]._fields) == [
        "model",
        "week",
        "previous_week",
        "method",
        "feature",
        "value",
        "previous_value",
        "delta",
        "rank_change",
        "verdict",
        "relative_change",
        "noise_band_percent",
        "band_source",
        "z",
        "profile_distance",
        "cause",
        "plain_change",
        "plain_band_low",
        "plain_band_high",
        "min_detectable_rise",
        "min_detectable_fall",
    ]
    assert len(changes) == len(assessment.drifts) == 2 * len(names)
    for row in changes:
        drift = assessment.drift(row.method, row.feature)
        assert drift is not None and row.verdict == drift.verdict.value
        assert str(row.previous_week) == "2014-11-03"
        assert row.rank_change == drift.rank_change
        for column, expected in (
            ("value", drift.value),
            ("previous_value", drift.previous_value),
            ("delta", drift.delta),
            ("relative_change", drift.relative),
            ("z", drift.z),
            ("noise_band_percent", None if drift.band is None else drift.band.percent),
        ):
            assert getattr(row, column) == (None if expected is None else pytest.approx(expected)), column
        assert row.band_source == (None if drift.band is None else drift.band.source.value)
    new = [row for row in changes if row.feature == "Iws"]
    assert {row.verdict for row in new} == {FeatureVerdict.NEW.value}
    assert all(row.previous_value is None and row.delta is None for row in new)


def test_recent_audits_are_the_latest_before_a_week_oldest_first(engine: sa.Engine) -> None:
    runs = {week: _record(engine, week, _outcomes(i)) for i, week in enumerate(WEEKS)}
    rerun = _record(engine, WEEKS[1], _outcomes(8))  # re-audit: its new run is the current one
    with Session(engine, expire_on_commit=False) as session, session.begin():
        writes.start_run(session, model_name="m", week=dt.date(2014, 10, 6), model_path=_facts().path)
        recent = reads.recent_audits(session, "m", WEEKS[3], 2)
        everything = reads.recent_audits(session, "m", WEEKS[3], 10)
        assert reads.recent_audits(session, "m", WEEKS[3], 0) == []
        assert reads.recent_audits(session, "m", WEEKS[0], 5) == []
        assert reads.recent_audits(session, "other", WEEKS[3], 5) == []
        with pytest.raises(ValueError, match="limit"):
            reads.recent_audits(session, "m", WEEKS[3], -1)
    assert [a.week for a in recent] == WEEKS[1:3]
    assert [a.week for a in everything] == WEEKS[:3]  # the running drop of 2014-10-06 has no audit
    assert [a.run_id for a in everything] == [runs[WEEKS[0]], rerun, runs[WEEKS[2]]]
    assert everything[0].importance("permutation") is not None


def test_drift_migration_downgrades_and_upgrades_again(engine: sa.Engine) -> None:
    _fill(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        assert not set(DRIFT_TABLES) & set(inspector.get_table_names())
        assert not {"importance_changes", "audit_verdicts"} & set(inspector.get_view_names())
        assert "importance_history" in inspector.get_view_names()
        assert "kendall" not in {column["name"] for column in inspector.get_columns("comparisons")}
        assert connection.execute(sa.text("SELECT COUNT(*) FROM importance_history")).scalar_one() > 0
    upgrade_database(engine)
    with Session(engine) as session:
        summary = reads.load_audit(session, "m", WEEKS[-1])
    assert summary is not None and summary.copies == () and summary.frozen is None
    _assess(engine, WEEKS[-1])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    upgrade_database(engine)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM audit_verdicts")).scalar_one() == 0


def test_sensitivity_is_stored_per_method_and_per_feature(engine: sa.Engine) -> None:
    """Migration 0008: each (method, feature)'s plain change, plain band and detectable rise and fall
    in importance_changes, and each feature's agreed ones in feature_sensitivity."""
    _fill(engine)
    _, _, assessment = _assess(engine, WEEKS[-1])
    week = sa.bindparam("week", WEEKS[-1], type_=sa.Date)
    with engine.connect() as connection:
        changes = connection.execute(
            sa.text("SELECT * FROM importance_changes WHERE week = :week").bindparams(week)
        ).all()
        sensitivity = connection.execute(
            sa.text("SELECT * FROM feature_sensitivity WHERE week = :week").bindparams(week)
        ).all()
    judged = 0
    for row in changes:
        drift = assessment.drift(row.method, row.feature)
        assert drift is not None
        assert row.plain_change == (None if drift.plain_change is None else pytest.approx(drift.plain_change))
        band, detectable = drift.plain_band, drift.detectable
        if band is None or detectable is None:
            assert (row.plain_band_low, row.min_detectable_rise, row.min_detectable_fall) == (
                None,
                None,
                None,
            )
            continue
        judged += 1
        for column, expected in (
            ("plain_band_low", band.low),
            ("plain_band_high", band.high),
            ("min_detectable_rise", detectable.rise),
            ("min_detectable_fall", detectable.fall),
        ):
            assert getattr(row, column) == (None if expected is None else pytest.approx(expected)), column
    assert judged >= 3 * len(NAMES)  # the three unsigned data methods and weight_sum judge all four
    assert list(sensitivity[0]._fields) == [
        "model",
        "week",
        "feature",
        "min_detectable_rise",
        "min_detectable_fall",
        "methods",
    ]
    assert {row.feature for row in sensitivity} == set(NAMES)
    for row in sensitivity:
        feature = next(f for f in assessment.features if f.feature == row.feature)
        assert feature.detectable is not None
        assert row.methods == ",".join(feature.judged_methods) and row.methods
        for column, expected in (
            ("min_detectable_rise", feature.detectable.rise),
            ("min_detectable_fall", feature.detectable.fall),
        ):
            assert getattr(row, column) == (None if expected is None else pytest.approx(expected)), column


def test_sensitivity_migration_downgrades_keeping_the_figures(engine: sa.Engine) -> None:
    _fill(engine)
    before = _counts(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        assert "feature_sensitivity" not in inspector.get_view_names()
        assert "plain_change" not in {c["name"] for c in inspector.get_columns("feature_drifts")}
        old = connection.execute(sa.text("SELECT * FROM importance_changes")).first()
        assert old is not None and list(old._fields)[-1] == "cause"
    assert _counts(engine) == before  # no table rebuild: nothing cascades away
    upgrade_database(engine)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT COUNT(*) FROM feature_sensitivity")).scalar_one()
    assert stored == before["feature_verdicts"]  # rows of earlier calls, their new columns NULL


def _documented_queries() -> list[str]:
    text = (ROOT / "docs" / "sql.md").read_text(encoding="utf-8")
    return [block.strip().rstrip(";") for block in re.findall(r"```sql\n(.*?)```", text, re.S)]


def test_documented_queries_return_the_drift_rows(engine: sa.Engine) -> None:
    """tests/test_sql_docs.py runs them on a real audit; here on a planted change with copies."""
    _fill(engine)
    drift_names = (
        "importance_changes",
        "audit_verdicts",
        "feature_verdicts",
        "method_agreement",
        "model_importances",
        "model_profiles",
    )
    # the input and performance views need eval-sample summaries, which _fill does not store
    # (tests/test_storage_input_drift.py and tests/test_sql_docs.py run those queries)
    other_views = ("input_drift", "performance_drift")
    queries = [
        query
        for query in _documented_queries()
        if any(name in query for name in drift_names) and not any(name in query for name in other_views)
    ]
    assert len(queries) >= 5
    with engine.connect() as connection:
        for query in queries:
            assert connection.execute(sa.text(query)).all(), f"no rows from:\n{query}"


def test_a_drop_with_copies_stores_the_mean_of_its_models_as_the_judged_value(engine: sa.Engine) -> None:
    """importance_changes.value of a drop with reseeded copies is the mean over its three models (the
    figure the verdict judged); the primary model's own figure stays in importances."""
    _fill(engine)
    week = WEEKS[-1]
    primary = {i.method: i for i in _importances(3, {"DEWP": 10.0})}["permutation"]
    copies = [{i.method: i for i in models.importances}["permutation"] for models in _copies(3)]
    mean = np.mean([primary.values, *(c.values for c in copies)], axis=0)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT feature, value FROM importance_changes WHERE week = :week AND method = :method"
            ).bindparams(sa.bindparam("week", week, type_=sa.Date), method="permutation")
        ).all()
        stored = connection.execute(
            sa.text(
                "SELECT feature, value FROM importance_history WHERE week = :week AND method = :method"
            ).bindparams(sa.bindparam("week", week, type_=sa.Date), method="permutation")
        ).all()
    by_name = dict(rows)
    np.testing.assert_allclose([by_name[name] for name in NAMES], mean, rtol=1e-12)
    assert not np.allclose(mean, primary.values)
    np.testing.assert_allclose([dict(stored)[name] for name in NAMES], primary.values, rtol=1e-12)
