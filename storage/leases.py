"""Leases of running audits: a ``running`` run that stops renewing its lease is ``interrupted``.

A run is started with a lease (`writes.start_run`: ``heartbeat_at`` = now, ``lease_seconds``); the
process auditing it renews ``heartbeat_at`` while it works (`renew_lease`, from the heartbeat
thread of flows/leases.py). A process killed at any moment (``kill -9``, the machine lost, an
out-of-memory kill) stops renewing: once ``heartbeat_at + lease_seconds`` has passed, the next run
(of any drop, any model) marks the row ``interrupted`` (`expire_leases`). Each row carries its own
lease, so a run started with a short lease never cuts a concurrent audit's longer one short.

Runs left ``running`` by versions before revision 0010 have no heartbeat: their lease counts from
``started_at`` with `DEFAULT_LEASE_SECONDS`.

An ``interrupted`` run never held figures (they are stored in one transaction with the status
``succeeded``), so marking it changes nothing else. Should its process still be alive after all (a
heartbeat starved for longer than the lease), its `record_success` or `record_failure` overwrites
the status, and the run ends as it would have.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audit.types import InterruptedRun, RunStatus
from storage.models import AuditRun, ModelDrop, utc_now

#: Seconds a running audit's lease holds after each heartbeat, unless the run is given another.
DEFAULT_LEASE_SECONDS = 120.0
#: Heartbeats per lease: the lease survives this many minus one missed or late renewals (a SQLite
#: writer waiting up to its busy timeout, a slow database).
HEARTBEATS_PER_LEASE = 4


def heartbeat_interval(lease_seconds: float) -> float:
    """Seconds between two renewals of a lease of `lease_seconds`."""
    return lease_seconds / HEARTBEATS_PER_LEASE


def check_lease(lease_seconds: float) -> float:
    """`lease_seconds` as a float, or a ValueError naming the value and what is allowed."""
    value = float(lease_seconds)
    if not value >= 1.0:  # also refuses NaN
        raise ValueError(f"lease of {lease_seconds!r} seconds: give at least 1 second (default 120)")
    return value


def renew_lease(session: Session, run_id: int, now: dt.datetime | None = None) -> bool:
    """Move the heartbeat of `run_id` to `now`; False (nothing written) when the run is no longer
    ``running`` (it finished, or was marked interrupted)."""
    result = session.execute(
        update(AuditRun)
        .where(AuditRun.id == run_id, AuditRun.status == RunStatus.RUNNING.value)
        .values(heartbeat_at=now or utc_now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def expire_leases(session: Session, now: dt.datetime | None = None) -> list[InterruptedRun]:
    """Mark every ``running`` run whose lease expired before `now` ``interrupted``; returns them.

    The rows are updated only while still ``running`` (a run that finished meanwhile keeps its
    status), with ``finished_at`` = the end of the lease and the error saying what happened.
    """
    now = now or utc_now()
    rows = session.execute(
        select(AuditRun, ModelDrop.model_name, ModelDrop.week)
        .join(ModelDrop, ModelDrop.id == AuditRun.drop_id)
        .where(AuditRun.status == RunStatus.RUNNING.value)
        .order_by(AuditRun.id)
    ).all()
    expired = []
    for run, model_name, week in rows:
        last = run.heartbeat_at or run.started_at
        lease = dt.timedelta(seconds=run.lease_seconds or DEFAULT_LEASE_SECONDS)
        if last + lease >= now:
            continue
        error = (
            f"interrupted: no heartbeat since {last.isoformat(timespec='seconds')} "
            f"(lease {lease.total_seconds():g} s); the process was killed or lost"
        )
        marked = session.execute(
            update(AuditRun)
            .where(AuditRun.id == run.id, AuditRun.status == RunStatus.RUNNING.value)
            .values(status=RunStatus.INTERRUPTED.value, finished_at=last + lease, error=error)
        )
        if marked.rowcount:  # type: ignore[attr-defined]
            expired.append(InterruptedRun(run.id, model_name, week, run.started_at, run.heartbeat_at))
    return expired


def interrupted_runs(session: Session, model_name: str, since: dt.date | None = None) -> list[InterruptedRun]:
    """The ``interrupted`` runs of `model_name` (of drops dated `since` or later), oldest drop first."""
    query = (
        select(AuditRun.id, ModelDrop.model_name, ModelDrop.week, AuditRun.started_at, AuditRun.heartbeat_at)
        .join(ModelDrop, ModelDrop.id == AuditRun.drop_id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.INTERRUPTED.value)
        .order_by(ModelDrop.week, AuditRun.id)
    )
    if since is not None:
        query = query.where(ModelDrop.week >= since)
    return [InterruptedRun(*row) for row in session.execute(query).all()]
