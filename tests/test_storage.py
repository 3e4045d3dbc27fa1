"""Storage against SQLite and PostgreSQL: migrations, the write protocol, re-audit, the view."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from audit.types import Importance, MethodOutcome, MethodStatus, ModelEvaluation, ModelFacts, RunStatus, Task
from storage import reads, writes
from storage.models import AuditRun, Base
from storage.session import alembic_config, make_engine, upgrade_database
from tests.helpers import table_counts

WEEK = dt.date(2014, 11, 3)
NAMES = ("pm2.5", "DEWP", "TEMP")


def _facts(content_hash: str = "a" * 64) -> ModelFacts:
    return ModelFacts(
        path=Path("/registry/2014-11-03/model.keras"),
        content_hash=content_hash,
        input_shape=(None, 24, 3),
        output_shape=(None, 1),
        n_parameters=1234,
        task=Task.REGRESSION,
    )


def _outcomes(scale: float = 1.0) -> tuple[MethodOutcome, ...]:
    perm = Importance(
        method="permutation",
        feature_names=NAMES,
        values=np.array([0.9, 0.1, 0.3]) * scale,
        std=np.array([0.01, 0.02, 0.03]),
        parameters={"n_repeats": 5, "random_state": 0},
    )
    weights = Importance(method="weight_sum", feature_names=NAMES, values=np.array([3.0, 2.0, 1.0]))
    saliency = Importance(
        method="saliency",
        feature_names=NAMES,
        values=np.array([0.2, -0.9, 0.1]),
        profile=np.arange(12, dtype=float).reshape(4, 3) * scale,
        signed=True,
    )
    cam = Importance(
        method="grad_cam_profile",
        feature_names=(),
        values=np.zeros(0),
        profile=np.array([[0.1], [0.5], [0.2]]),
        profile_features=("*",),
    )
    return (
        MethodOutcome("weight_sum", MethodStatus.OK, importance=weights, seconds=0.1),
        MethodOutcome("permutation", MethodStatus.OK, importance=perm, seconds=1.5),
        MethodOutcome("saliency", MethodStatus.OK, importance=saliency, seconds=0.2),
        MethodOutcome("grad_cam", MethodStatus.SKIPPED, reason="no Conv1D layer"),
        MethodOutcome("grad_cam_profile", MethodStatus.OK, importance=cam, seconds=0.3),
    )


def _audit(engine: sa.Engine, week: dt.date = WEEK, scale: float = 1.0) -> int:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=week, model_path=_facts().path)
    with Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(scale),
            eval_source="/registry/eval.npz",
            eval_hash="b" * 64,
            n_eval_samples=168,
        )
    return run_id


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    upgrade_database(engine)
    return engine


def test_migrations_match_the_orm_models(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_reaches_head(engine: sa.Engine) -> None:
    upgrade_database(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == head


def test_every_migration_downgrades_and_upgrades_again(engine: sa.Engine) -> None:
    _audit(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    with engine.connect() as connection:
        assert "importances" not in sa.inspect(connection).get_table_names()
    upgrade_database(engine)
    assert table_counts(engine)["importances"] == 0


def test_stored_audit_reads_back_and_fills_the_view(engine: sa.Engine) -> None:
    run_id = _audit(engine)
    with Session(engine) as session:
        summary = reads.load_audit(session, "m", WEEK)
    assert summary is not None and summary.run_id == run_id
    assert summary.model.input_shape == (None, 24, 3) and summary.n_eval_samples == 168
    assert [o.method for o in summary.outcomes] == [
        "weight_sum",
        "permutation",
        "saliency",
        "grad_cam",
        "grad_cam_profile",
    ]
    cam = summary.importance("grad_cam_profile")
    assert cam is not None and not cam.has_values and cam.profile_labels == ("*",)
    np.testing.assert_array_equal(cam.profile, [[0.1], [0.5], [0.2]])  # type: ignore[arg-type]
    perm = summary.importance("permutation")
    assert perm is not None and perm.feature_names == NAMES
    np.testing.assert_allclose(perm.values, [0.9, 0.1, 0.3])
    assert perm.std is not None and perm.parameters == {"n_repeats": 5, "random_state": 0}
    assert summary.outcomes[3].status is MethodStatus.SKIPPED
    assert summary.outcomes[3].reason == "no Conv1D layer"
    saliency = summary.importance("saliency")
    assert saliency is not None and saliency.signed and list(saliency.ranks) == [2, 1, 3]
    assert saliency.profile is not None
    np.testing.assert_array_equal(saliency.profile, np.arange(12, dtype=float).reshape(4, 3))
    assert perm.profile is None and not perm.signed
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT week, model, feature, value, rank FROM importance_history "
                "WHERE method = :method ORDER BY rank"
            ),
            {"method": "permutation"},
        ).all()
    assert [(r.feature, r.rank) for r in rows] == [("pm2.5", 1), ("TEMP", 2), ("DEWP", 3)]
    assert {str(r.week) for r in rows} == {"2014-11-03"} and {r.model for r in rows} == {"m"}


def test_reaudit_replaces_figures_without_duplicating(engine: sa.Engine) -> None:
    first = _audit(engine)
    counts = table_counts(engine)
    second = _audit(engine, scale=2.0)
    after = table_counts(engine)
    assert after["importances"] == counts["importances"] == 9
    assert after["profiles"] == counts["profiles"] == 12 + 3
    assert after["method_results"] == counts["method_results"] == 5
    assert after["audit_runs"] == 2 and after["model_drops"] == 1
    with Session(engine) as session:
        assert session.get_one(AuditRun, first).status == RunStatus.SUPERSEDED
        summary = reads.load_audit(session, "m", WEEK)
    assert summary is not None and summary.run_id == second
    np.testing.assert_allclose(summary.importance("permutation").values, [1.8, 0.2, 0.6])  # type: ignore[union-attr]


def test_failure_leaves_earlier_figures_and_a_failed_run(engine: sa.Engine) -> None:
    _audit(engine)
    before = table_counts(engine)
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
    with Session(engine) as session, session.begin():
        writes.record_failure(session, run_id, "model.keras: cannot load the model")
    after = table_counts(engine)
    assert after == {**before, "audit_runs": before["audit_runs"] + 1}
    with Session(engine) as session:
        failed = session.get_one(AuditRun, run_id)
        assert failed.status == RunStatus.FAILED and "cannot load" in (failed.error or "")
        assert failed.finished_at is not None and failed.finished_at.tzinfo is not None
        assert reads.load_audit(session, "m", WEEK) is not None


def test_a_write_that_fails_midway_rolls_back_whole(engine: sa.Engine) -> None:
    _audit(engine)
    before = table_counts(engine)
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
    duplicate = (*_outcomes(), _outcomes()[1])  # the same method twice violates a unique constraint
    with pytest.raises(sa.exc.IntegrityError), Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=duplicate,
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
        )
    assert table_counts(engine) == {**before, "audit_runs": before["audit_runs"] + 1}
    with Session(engine) as session:
        assert reads.load_audit(session, "m", WEEK) is not None  # the old figures survive


def test_previous_audit_skips_gaps_and_weeks_are_listed(engine: sa.Engine) -> None:
    _audit(engine, dt.date(2014, 10, 20))
    _audit(engine, dt.date(2014, 11, 3))  # no drop on 2014-10-27
    with Session(engine) as session:
        previous = reads.previous_audit(session, "m", dt.date(2014, 11, 3))
        assert previous is not None and previous.week == dt.date(2014, 10, 20)
        assert reads.previous_audit(session, "m", dt.date(2014, 10, 20)) is None
        assert reads.audited_weeks(session, "m") == {dt.date(2014, 10, 20), dt.date(2014, 11, 3)}
        assert reads.latest_audited_week(session, "m") == dt.date(2014, 11, 3)
        assert reads.audited_weeks(session, "other") == set()


def test_evaluation_reads_back_and_a_run_without_one_has_none(engine: sa.Engine) -> None:
    evaluation = ModelEvaluation("cross_entropy", 0.42, "accuracy", 0.875, 168)
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(),
            eval_source="/registry/eval.npz",
            eval_hash="b" * 64,
            n_eval_samples=168,
            evaluation=evaluation,
        )
    _audit(engine, dt.date(2014, 11, 10))  # no evaluation
    with Session(engine) as session:
        stored = reads.load_audit(session, "m", WEEK)
        later = reads.load_audit(session, "m", dt.date(2014, 11, 10))
    assert stored is not None and stored.evaluation == evaluation
    assert later is not None and later.evaluation is None
    with engine.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT eval_loss_name, eval_loss, eval_metric_name, eval_metric "
                "FROM audit_runs WHERE id = :id"
            ),
            {"id": run_id},
        ).one()
    assert tuple(row) == ("cross_entropy", 0.42, "accuracy", 0.875)


def test_evaluation_of_another_sample_is_refused(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
    refused = pytest.raises(ValueError, match="evaluation covers 10 samples but the run audited 168")
    with refused, Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=168,
            evaluation=ModelEvaluation("mse", 1.0, "r2", 0.5, 10),
        )


def test_downgrade_of_0006_keeps_the_figures(engine: sa.Engine) -> None:
    _audit(engine)
    before = table_counts(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    with engine.connect() as connection:
        columns = {column["name"] for column in sa.inspect(connection).get_columns("audit_runs")}
    assert "eval_loss" not in columns and "n_eval_rows_in_file" in columns
    assert table_counts(engine) == before  # no table rebuild: nothing cascades away
    upgrade_database(engine)
    with Session(engine) as session:
        summary = reads.load_audit(session, "m", WEEK)
    assert summary is not None and summary.evaluation is None and len(summary.outcomes) == 5
