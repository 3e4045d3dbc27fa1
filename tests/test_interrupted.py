"""A running audit killed at any moment (``kill -9``) is marked ``interrupted`` once its lease runs out,
and the next run audits its drop: the database stays consistent.

One real `drift-audit run` subprocess (on the shared Prefect test server) is killed while its run
row is ``running``; then a normal run follows in this process. The lease rules themselves (a fresh
lease is kept, each row's own lease decides, a late finisher overwrites ``interrupted``) are tested
on both backends without processes.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.types import RunStatus
from storage import leases, writes
from storage.models import AuditRun
from storage.session import make_engine, upgrade_database

ROOT = Path(__file__).resolve().parents[1]
WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3)]
#: The killed run's lease: short, so the next run may mark it without waiting long.
SHORT_LEASE = 2.0


def _status_rows(db_url: str) -> list[tuple[int, str, str]]:
    engine = make_engine(db_url, create=False)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT r.id, r.status, d.week FROM audit_runs r JOIN model_drops d ON d.id = r.drop_id"
                    " ORDER BY r.id"
                )
            )
            return [(row[0], row[1], str(row[2])) for row in rows]
    finally:
        engine.dispose()


def _wait_for_running(db_url: str, database: Path, process: subprocess.Popen[bytes]) -> int:
    """The id of the first ``running`` row the subprocess writes (polled every 50 ms)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the audit ended (exit {process.returncode}) before it could be killed")
        if database.exists():
            try:
                running = [run_id for run_id, status, _ in _status_rows(db_url) if status == "running"]
            except sa.exc.OperationalError:  # the schema is being created
                running = []
            if running:
                return running[0]
        time.sleep(0.05)
    raise AssertionError("no running audit row within 240 s")


@pytest.mark.slow
def test_a_killed_audit_is_marked_interrupted_and_the_next_run_completes(
    tmp_path: Path, prefect_harness: str
) -> None:
    from flows.cli import main
    from tests.helpers import small_registry

    registry = small_registry(tmp_path, WEEKS)
    database = tmp_path / "audit.db"
    db_url = f"sqlite:///{database}"
    args = ["run", "--registry", str(registry), "--db", db_url, "--out", str(tmp_path / "out"), "--quiet"]
    environment = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args, "--lease", str(SHORT_LEASE)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        engine = make_engine(db_url)
        upgrade_database(engine)  # here, while the subprocess imports TensorFlow (its own then finds it done)
        engine.dispose()
        killed_run = _wait_for_running(db_url, database, process)
        time.sleep(0.2)  # mid-audit: the drop is loading or its methods are running
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert (killed_run, "running") in [(run_id, status) for run_id, status, _ in _status_rows(db_url)]

    time.sleep(SHORT_LEASE + 0.5)  # the killed run's lease runs out (no heartbeat since the kill)
    assert main([*args, "--methods", "weight_sum"]) == 0

    rows = _status_rows(db_url)
    statuses = {run_id: status for run_id, status, _ in rows}
    assert statuses[killed_run] == RunStatus.INTERRUPTED
    assert "running" not in statuses.values()
    succeeded = sorted(week for _, status, week in rows if status == "succeeded")
    assert succeeded == [week.isoformat() for week in WEEKS]  # the final run audited every drop
    engine = make_engine(db_url, create=False)
    with engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA integrity_check")).scalar_one() == "ok"
        assert connection.execute(sa.text("PRAGMA foreign_key_check")).all() == []
        # one figure set per drop: the importances of each drop belong to one run, a succeeded one
        sets = connection.execute(
            sa.text(
                "SELECT r.drop_id, COUNT(DISTINCT i.run_id), MIN(r.status) FROM importances i"
                " JOIN audit_runs r ON r.id = i.run_id GROUP BY r.drop_id"
            )
        ).all()
        error = connection.execute(
            sa.text("SELECT error FROM audit_runs WHERE id = :id"), {"id": killed_run}
        ).scalar_one()
    engine.dispose()
    assert sorted((n, status) for _, n, status in sets) == [(1, "succeeded")] * len(WEEKS)
    assert error.startswith("interrupted: no heartbeat since")
    report = (tmp_path / "out" / WEEKS[-1].isoformat() / "report.html").read_text(encoding="utf-8")
    assert "interrupted" in report


# --- the lease rules, on both backends, without processes ----------------------------------------


def _start(session: Session, week: dt.date, lease: float) -> int:
    return writes.start_run(
        session, model_name="m", week=week, model_path="/r/model.keras", lease_seconds=lease
    )


def test_only_expired_leases_are_interrupted_and_each_row_keeps_its_own(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade_database(engine)
    with Session(engine) as session, session.begin():
        short = _start(session, WEEKS[0], 2.0)
        long = _start(session, WEEKS[1], 600.0)
        legacy = _start(session, dt.date(2014, 11, 10), 2.0)
        session.get_one(AuditRun, legacy).heartbeat_at = None  # a run started before revision 0010
        session.get_one(AuditRun, legacy).lease_seconds = None
        started = session.get_one(AuditRun, short).heartbeat_at
    assert started is not None
    later = started + dt.timedelta(seconds=10)
    with Session(engine) as session, session.begin():
        assert leases.expire_leases(session, now=started + dt.timedelta(seconds=1)) == []
        expired = leases.expire_leases(session, now=later)
    assert [run.run_id for run in expired] == [short]  # the 600 s lease and the legacy 120 s hold
    with Session(engine) as session, session.begin():
        assert not leases.renew_lease(session, short)  # an interrupted run is not renewed
        assert leases.renew_lease(session, long, now=later)
        far = later + dt.timedelta(seconds=leases.DEFAULT_LEASE_SECONDS + 1)
        assert [run.run_id for run in leases.expire_leases(session, now=far)] == [legacy]
    with Session(engine) as session:
        runs = {run.id: run for run in session.scalars(sa.select(AuditRun))}
        assert runs[short].status == RunStatus.INTERRUPTED
        assert runs[short].finished_at == started + dt.timedelta(seconds=2)
        assert runs[long].status == RunStatus.RUNNING
        assert [run.run_id for run in leases.interrupted_runs(session, "m")] == [short, legacy]
    with Session(engine) as session, session.begin():  # a run that was alive after all ends as it would
        writes.record_failure(session, short, "late")
        assert session.get_one(AuditRun, short).status == RunStatus.FAILED
    engine.dispose()


def test_a_lease_under_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        leases.check_lease(0.5)


def test_the_heartbeat_renews_the_lease_while_the_block_runs_and_stops_after(db_url: str) -> None:
    from flows.leases import heartbeat

    engine = make_engine(db_url)
    upgrade_database(engine)
    with Session(engine) as session, session.begin():
        run_id = _start(session, WEEKS[0], 1.0)  # renewed every 0.25 s

    def last_beat() -> dt.datetime:
        with Session(engine) as session:
            beat = session.get_one(AuditRun, run_id).heartbeat_at
        assert beat is not None
        return beat

    started = last_beat()
    with heartbeat(engine, run_id, 1.0):
        time.sleep(1.5)  # longer than the lease: only the renewals keep it
        with Session(engine) as session, session.begin():
            assert leases.expire_leases(session) == []
        renewed = last_beat()
    assert renewed > started
    time.sleep(0.6)
    assert last_beat() - renewed < dt.timedelta(seconds=0.3)  # stopped with the block (one last beat at most)
    engine.dispose()
