"""Migration 0005 against SQLite and PostgreSQL: features per drop, report deliveries, the
top_features view, the top-k index, and drift calls of a superseded run."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.orm import Session

from storage import delivery_log, writes
from storage.models import ReportDeliveryRow
from storage.session import alembic_config, make_engine, upgrade_database
from tests.test_storage import NAMES, WEEK, _audit, _facts, _outcomes
from tests.test_storage_drift import NAMES as DRIFT_NAMES
from tests.test_storage_drift import WEEKS, _assess, _fill


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    upgrade_database(engine)
    return engine


def _features(engine: sa.Engine) -> list[tuple[str, int, str]]:
    with engine.connect() as connection:
        return [
            (str(row.week), row.position, row.name)
            for row in connection.execute(
                sa.text(
                    "SELECT d.week, f.position, f.name FROM features f "
                    "JOIN model_drops d ON d.id = f.drop_id ORDER BY d.week, f.position"
                )
            )
        ]


def test_features_are_stored_per_drop_and_replaced_on_reaudit(engine: sa.Engine) -> None:
    _audit(engine)  # no feature_names given: those of the first method with figures
    assert _features(engine) == [("2014-11-03", i, name) for i, name in enumerate(NAMES)]
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=_outcomes(),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
            feature_names=("TEMP", "pm2.5", "DEWP"),
        )
    assert _features(engine) == [
        ("2014-11-03", 0, "TEMP"),
        ("2014-11-03", 1, "pm2.5"),
        ("2014-11-03", 2, "DEWP"),
    ]


def test_duplicate_feature_names_are_refused(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=WEEK, model_path=_facts().path)
    with pytest.raises(ValueError, match="DEWP more than once"), Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=_facts(),
            outcomes=(),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
            feature_names=("DEWP", "TEMP", "DEWP"),
        )


def test_deliveries_are_logged_updated_and_kept_on_reaudit(engine: sa.Engine) -> None:
    run_id = _audit(engine)
    with Session(engine) as session, session.begin():
        delivery = delivery_log.record_delivery(
            session, run_id, "/out/2014-11-03/report.html", status="written"
        )
    with Session(engine) as session, session.begin():
        delivery_log.update_delivery(
            session,
            delivery,
            status=delivery_log.DeliveryStatus.SENT,
            emailed_to=["a@x.org", "b@x.org"],
            message_id="<1@x>",
        )
        failed = delivery_log.record_delivery(
            session, run_id, "/out/r.html", status="failed", emailed_to="a@x.org", error="SMTP 550"
        )
    _audit(engine)  # supersedes the run: its deliveries stay, a log
    with Session(engine) as session:
        sent = session.get_one(ReportDeliveryRow, delivery)
        assert (sent.status, sent.emailed_to, sent.message_id) == ("sent", "a@x.org,b@x.org", "<1@x>")
        assert sent.created_at.tzinfo is not None and sent.run_id == run_id
        assert session.get_one(ReportDeliveryRow, failed).error == "SMTP 550"
    with pytest.raises(ValueError), Session(engine) as session:
        delivery_log.record_delivery(session, run_id, "/out/r.html", status="emailed")
    with pytest.raises(ValueError, match="comma"), Session(engine) as session:
        delivery_log.record_delivery(
            session, run_id, "/out/r.html", status="sent", emailed_to=["a@x.org,b@x.org"]
        )


def test_top_features_view_holds_the_ten_best_of_current_runs(engine: sa.Engine) -> None:
    _audit(engine, scale=1.0)
    _audit(engine, scale=2.0)  # supersedes the first: only its figures show
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT model, week, method, rank, feature, value, std FROM top_features "
                "WHERE method = :method AND rank <= :k ORDER BY rank"
            ),
            {"method": "permutation", "k": 2},
        ).all()
    assert [(r.rank, r.feature, r.value) for r in rows] == [(1, "pm2.5", 1.8), (2, "TEMP", 0.6)]
    assert {(r.model, str(r.week)) for r in rows} == {("m", "2014-11-03")}


def test_a_superseded_run_gets_no_drift_call(engine: sa.Engine) -> None:
    runs = _fill(engine)
    with Session(engine) as session, session.begin():
        rerun = writes.start_run(session, model_name="m", week=WEEKS[-1], model_path=_facts().path)
    current, comparisons, assessment = _assess(engine, WEEKS[-1])
    with Session(engine) as session, session.begin():  # the re-audit stores its figures meanwhile
        writes.record_success(
            session,
            rerun,
            facts=_facts(),
            outcomes=current.outcomes,
            eval_source=None,
            eval_hash=None,
            n_eval_samples=None,
        )
    previous_run = runs[WEEKS[-2]]
    with Session(engine) as session, session.begin():
        stored = writes.save_assessment(session, runs[WEEKS[-1]], previous_run, comparisons, assessment)
    assert stored is False
    with engine.connect() as connection:
        for table in ("comparisons", "feature_drifts", "drop_verdicts"):
            count = connection.execute(
                sa.text(f"SELECT COUNT(*) FROM {table} WHERE run_id = :run"), {"run": runs[WEEKS[-1]]}
            ).scalar_one()
            assert count == 0, table
    with Session(engine) as session, session.begin():
        assert writes.save_assessment(session, rerun, previous_run, comparisons, assessment) is True


def test_migration_0005_backfills_features_and_downgrades(engine: sa.Engine) -> None:
    _fill(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        assert not {"features", "report_deliveries"} & set(inspector.get_table_names())
        assert "top_features" not in inspector.get_view_names()
        names = {index["name"] for index in inspector.get_indexes("importances")}
        assert "ix_importances_run_method_rank" not in names
    upgrade_database(engine)
    assert _features(engine) == [(str(week), i, name) for week in WEEKS for i, name in enumerate(DRIFT_NAMES)]
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM top_features")).scalar_one() > 0


def test_top_k_and_history_queries_use_the_indexes(engine: sa.Engine) -> None:
    """The planner's choice on a small table is not the point: the indexes must exist and be usable."""
    _fill(engine)
    with engine.connect() as connection:
        names = {index["name"] for index in sa.inspect(connection).get_indexes("importances")}
    assert {"ix_importances_feature_method", "ix_importances_run_method_rank"} <= names
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            plan = " ".join(
                str(row[-1])
                for row in connection.execute(
                    sa.text(
                        "EXPLAIN QUERY PLAN SELECT week, value FROM importance_history WHERE feature = 'DEWP'"
                    )
                )
            )
        assert "ix_importances_feature_method" in plan
