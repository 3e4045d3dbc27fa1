"""Storage of input and performance drift (migration 0009) on SQLite and PostgreSQL: summaries read
back bit for bit (so a later week's statistics equal those of the raw samples), the frozen set's
evaluation, and the views `input_drift` and `performance_drift`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from scipy import stats
from sqlalchemy.orm import Session

from audit.drift import assess_drift
from audit.input_drift import assess_input_drift, summarize_inputs
from audit.performance import assess_performance
from audit.types import (
    EvalSample,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelEvaluation,
    ModelFacts,
    Task,
)
from audit.verdict import explain
from storage import reads, writes
from storage.session import make_engine, upgrade_database

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
NAMES = ("pm2.5", "DEWP", "TEMP")


def _store(engine: sa.Engine, week: dt.date, X: np.ndarray, loss: float, frozen: float | None) -> None:
    facts = ModelFacts(Path("/r/model.keras"), "a" * 64, (None, 3), (None, 1), 9, Task.REGRESSION)
    values = np.array([0.5, 0.3, 0.2])
    outcomes = (MethodOutcome("permutation", MethodStatus.OK, Importance("permutation", NAMES, values)),)
    sample = EvalSample(X=X, y=None, feature_names=NAMES, source=Path("eval.npz"), content_hash="b")
    n = X.shape[0]
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="m", week=week, model_path=facts.path)
        writes.record_success(
            session,
            run_id,
            facts=facts,
            outcomes=outcomes,
            eval_source="eval.npz",
            eval_hash="b" * 64,
            n_eval_samples=n,
            evaluation=ModelEvaluation("mse", loss, "r2", 0.8, n, loss_se=0.01),
            frozen_evaluation=None if frozen is None else ModelEvaluation("mse", frozen, "r2", 0.7, n, 0.01),
            input_summaries=summarize_inputs(sample),
        )


def test_summaries_and_drifts_round_trip_and_fill_the_views(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade_database(engine)
    rng = np.random.default_rng(0)
    before = rng.normal(size=(300, 3))
    now = rng.normal(size=(3000, 3))
    now[:, 2] += 1.5  # TEMP shifted by 1.5 sd
    _store(engine, WEEKS[0], before, loss=1.0, frozen=None)
    _store(engine, WEEKS[1], now, loss=2.0, frozen=1.05)
    with Session(engine) as session:
        previous = reads.load_audit(session, "m", WEEKS[0])
        current = reads.load_audit(session, "m", WEEKS[1])
    assert previous is not None and current is not None
    assert [s.feature for s in current.input_summaries] == list(NAMES)
    assert previous.input_summaries[1].exact and not current.input_summaries[1].exact
    assert np.array_equal(previous.input_summaries[0].values, np.sort(before[:, 0]))  # every bit
    assert current.frozen_evaluation == ModelEvaluation("mse", 1.05, "r2", 0.7, 3000, 0.01)
    inputs = assess_input_drift(current, previous)
    assert inputs is not None and [d.feature for d in inputs.shifted] == ["TEMP"]
    dewp = inputs.drift("DEWP")
    assert dewp is not None
    # one side exact, one sketched: within 0.5 / 1000 of scipy on the raw samples
    assert abs(dewp.ks_statistic - stats.ks_2samp(now[:, 1], before[:, 1]).statistic) <= 0.0005
    performance = assess_performance(current, previous)
    assert performance is not None and performance.worse
    assessment = explain(assess_drift(current, previous), inputs, performance)
    with Session(engine) as session, session.begin():
        writes.save_assessment(session, current.run_id, previous.run_id, (), assessment, inputs, performance)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT model, week, previous_week, feature, psi, ks_statistic, ks_pvalue, "
                "wasserstein, verdict FROM input_drift ORDER BY feature"
            )
        ).all()
        perf = connection.execute(
            sa.text("SELECT loss, previous_loss, frozen_loss, verdict, cause, reason FROM performance_drift")
        ).one()
    assert [(r.feature, r.verdict) for r in rows] == [
        ("DEWP", "stable"),
        ("TEMP", "shifted"),
        ("pm2.5", "stable"),
    ]
    assert all(str(r.week) == "2014-11-03" and str(r.previous_week) == "2014-10-27" for r in rows)
    temp = next(r for r in rows if r.feature == "TEMP")
    assert temp.psi > 1 and abs(temp.wasserstein - 1.5) < 0.2
    assert (perf.loss, perf.previous_loss, perf.frozen_loss, perf.verdict, perf.cause) == (
        2.0,
        1.0,
        1.05,
        "worse",
        "model",
    )
    assert perf.reason.endswith("the model got worse")
