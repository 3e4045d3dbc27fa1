"""The log of alerts (`notifications`): each attempt to send a model's verdict of a week to a target.

A target (an Apprise URL with its token, a block's name, the digest's recipients) is stored only as
`target_hash`, its SHA-256. Before sending, the caller asks `was_sent`; a retry or a re-run of the
same (model, week, verdict, target) sends nothing. Every function takes an open `Session`; the
caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import MAX_ERROR_CHARS, NotificationRow


class NotificationStatus(StrEnum):
    """`notifications.status`."""

    SENT = "sent"
    #: Not sent, or sending not confirmed (`error`).
    FAILED = "failed"


def target_hash(target: str) -> str:
    """The SHA-256 (hex) of a target's text: what the log stores instead of the target."""
    return hashlib.sha256(target.encode("utf-8")).hexdigest()


def was_sent(session: Session, model_name: str, week: dt.date, verdict: str, hashed_target: str) -> bool:
    """Whether this verdict of `model_name` for `week` was already sent to the target."""
    query = select(NotificationRow.id).where(
        NotificationRow.model_name == model_name,
        NotificationRow.week == week,
        NotificationRow.verdict == verdict,
        NotificationRow.target_hash == hashed_target,
        NotificationRow.status == NotificationStatus.SENT.value,
    )
    return session.scalars(query.limit(1)).first() is not None


def record_attempt(
    session: Session,
    *,
    model_name: str,
    week: dt.date,
    verdict: str,
    hashed_target: str,
    target_kind: str,
    run_id: int | None,
    error: str,
) -> int:
    """A new ``failed`` row with `error` (e.g. "sending: not confirmed"), written before sending."""
    row = NotificationRow(
        model_name=model_name,
        week=week,
        verdict=verdict,
        target_hash=hashed_target,
        target_kind=target_kind[:32],
        run_id=run_id,
        status=NotificationStatus.FAILED.value,
        error=error[:MAX_ERROR_CHARS],
    )
    session.add(row)
    session.flush()
    return row.id


def set_outcome(session: Session, notification_id: int, *, sent: bool, error: str | None = None) -> None:
    """Mark the attempt ``sent`` (its error cleared) or ``failed`` with `error`."""
    row = session.get_one(NotificationRow, notification_id)
    row.status = (NotificationStatus.SENT if sent else NotificationStatus.FAILED).value
    row.error = None if sent else (error or "failed")[:MAX_ERROR_CHARS]
