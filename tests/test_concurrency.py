"""Two audits of the same drop at once, in two real processes, end with exactly one set of figures.

Against PostgreSQL (the drop's row is locked by `record_success`) and a SQLite file (one writer at a
time, the other waits). Each process holds its transaction open for a while right after taking the
lock, so the two overlap for certain. Two cases: a new drop (both processes create its row at once)
and a re-audit with the same model facts (nothing else in the transactions conflicts: without the
lock both sets of figures would be committed).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from audit.types import Importance, MethodOutcome, MethodStatus, ModelFacts, RunStatus, Task
from storage import reads, writes
from storage.models import AuditRun
from storage.session import make_engine, upgrade_database
from tests.databases import BACKENDS, fresh_database

WEEK = dt.date(2014, 11, 3)
NAMES = ("pm2.5", "DEWP", "TEMP")
#: Seconds each process keeps its transaction open after its first write (start_run) or after
#: taking the drop's lock (record_success).
HOLD = 1.5
TIMEOUT = 120


def _hold_after(engine: sa.Engine, statement_start: str, seconds: float) -> None:
    """Sleep after each statement beginning with `statement_start`, inside its transaction."""

    def hold(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().startswith(statement_start):
            time.sleep(seconds)

    event.listen(engine, "after_cursor_execute", hold)


def _outcomes(scale: float) -> tuple[MethodOutcome, ...]:
    perm = Importance(
        "permutation", NAMES, np.array([0.9, 0.1, 0.3]) * scale, std=np.full(3, 0.01), parameters={}
    )
    weights = Importance("weight_sum", NAMES, np.array([3.0, 2.0, 1.0]) * scale)
    saliency = Importance("saliency", NAMES, np.array([0.2, 0.5, 0.1]), profile=np.ones((4, 3)) * scale)
    return tuple(
        MethodOutcome(i.method, MethodStatus.OK, importance=i, seconds=0.1) for i in (perm, weights, saliency)
    )


FACTS = ModelFacts(Path("/r/model.keras"), "a" * 64, (None, 3), (None, 1), 7, Task.REGRESSION)


def _store(engine: sa.Engine, run_id: int, scale: float) -> None:
    with Session(engine) as session, session.begin():
        writes.record_success(
            session,
            run_id,
            facts=FACTS,
            outcomes=_outcomes(scale),
            eval_source=None,
            eval_hash=None,
            n_eval_samples=64,
            feature_names=NAMES,
        )


def _start(engine: sa.Engine) -> int:
    with Session(engine) as session, session.begin():
        return writes.start_run(session, model_name="m", week=WEEK, model_path=FACTS.path)


def _audit_same_drop(url: str, barrier: Any, results: Any, scale: float) -> None:
    """One process: upgrade, start a run of the drop, store figures, in step with the other one."""
    try:
        engine = make_engine(url)
        upgrade_database(engine)
        _hold_after(engine, "INSERT INTO model_drops", HOLD)
        _hold_after(engine, "DELETE FROM importances", HOLD)  # record_success, after the lock
        barrier.wait(TIMEOUT)
        run_id = _start(engine)
        with Session(engine) as session:
            drop_id = session.get_one(AuditRun, run_id).drop_id
        barrier.wait(TIMEOUT)
        started = time.time()
        _store(engine, run_id, scale)
        results.put({"run_id": run_id, "drop_id": drop_id, "started": started, "committed": time.time()})
        engine.dispose()
    except BaseException:
        results.put({"error": traceback.format_exc()})


@pytest.mark.slow
@pytest.mark.parametrize("reaudit", [False, True], ids=["new-drop", "reaudit"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_auditing_one_drop_leave_one_set_of_figures(
    backend: str, reaudit: bool, tmp_path: Path
) -> None:
    from tests.helpers import table_counts  # imports keras: not in the spawned processes

    context = multiprocessing.get_context("spawn")
    with fresh_database(backend, tmp_path) as url:
        earlier = []
        if reaudit:
            engine = make_engine(url)
            upgrade_database(engine)
            earlier = [_start(engine)]
            _store(engine, earlier[0], 0.5)
            engine.dispose()
        barrier, results = context.Barrier(2), context.Queue()
        processes = [
            context.Process(target=_audit_same_drop, args=(url, barrier, results, scale))
            for scale in (1.0, 2.0)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=TIMEOUT) for _ in processes]
        for process in processes:
            process.join(TIMEOUT)
        errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
        assert not errors, "\n".join(errors)
        assert [process.exitcode for process in processes] == [0, 0]

        first, last = sorted(outcomes, key=lambda outcome: outcome["committed"])
        assert first["drop_id"] == last["drop_id"]  # start_run at once: one drop row, two runs
        # both were inside record_success at once, and the second waited for the first to commit
        assert last["started"] < first["committed"]
        assert last["committed"] - first["committed"] >= HOLD * 0.9

        engine = make_engine(url)
        with Session(engine) as session:
            statuses = {run.id: run.status for run in session.scalars(sa.select(AuditRun))}
            summary = reads.load_audit(session, "m", WEEK)
        assert statuses == {
            **{run_id: RunStatus.SUPERSEDED for run_id in earlier},
            first["run_id"]: RunStatus.SUPERSEDED,
            last["run_id"]: RunStatus.SUCCEEDED,
        }
        counts = table_counts(engine)
        assert counts["model_drops"] == 1 and counts["audit_runs"] == 2 + len(earlier)
        assert counts["importances"] == 3 * 3 and counts["method_results"] == 3
        assert counts["profiles"] == 4 * 3 and counts["features"] == 3
        with engine.connect() as connection:
            run_ids = connection.execute(sa.text("SELECT DISTINCT run_id FROM importances")).scalars().all()
        assert run_ids == [last["run_id"]]
        assert summary is not None and summary.run_id == last["run_id"]
        engine.dispose()
