"""The delivery log of the reports (`report_deliveries`): each report written, e-mailed or not.

A retry of the e-mail asks `was_emailed` first, so a report goes out once. Every function takes an
open `Session`; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import MAX_ERROR_CHARS, AuditRun, ReportDeliveryRow


class DeliveryStatus(StrEnum):
    """`report_deliveries.status`."""

    #: The report file was written (`path`).
    WRITTEN = "written"
    #: The report was e-mailed (`emailed_to`, `message_id`).
    SENT = "sent"
    #: Sending failed (`error`).
    FAILED = "failed"


def set_report_path(session: Session, run_id: int, path: Path) -> None:
    """Record where the report of `run_id` was written (``audit_runs.report_path``)."""
    session.get_one(AuditRun, run_id).report_path = str(path)


def record_delivery(
    session: Session,
    run_id: int,
    path: Path | str,
    *,
    status: DeliveryStatus | str,
    emailed_to: Sequence[str] | str | None = None,
    message_id: str | None = None,
    error: str | None = None,
) -> int:
    """Log a delivery of the report of `run_id` (the file at `path`, maybe e-mailed); returns its id."""
    session.get_one(AuditRun, run_id)  # a clear error for an unknown run, before the FK's
    row = ReportDeliveryRow(
        run_id=run_id,
        path=str(path),
        status=DeliveryStatus(status).value,
        emailed_to=_recipients(emailed_to),
        message_id=message_id,
        error=None if error is None else error[:MAX_ERROR_CHARS],
    )
    session.add(row)
    session.flush()
    return row.id


def update_delivery(
    session: Session,
    delivery_id: int,
    *,
    status: DeliveryStatus | str,
    emailed_to: Sequence[str] | str | None = None,
    message_id: str | None = None,
    error: str | None = None,
) -> None:
    """Set the outcome of a delivery (e.g. ``sent`` with its message id); None leaves a field as it was
    and an empty `error` clears it (a delivery first logged as "sending" that then went out)."""
    row = session.get_one(ReportDeliveryRow, delivery_id)
    row.status = DeliveryStatus(status).value
    if emailed_to is not None:
        row.emailed_to = _recipients(emailed_to)
    if message_id is not None:
        row.message_id = message_id
    if error is not None:
        row.error = error[:MAX_ERROR_CHARS] or None


def was_emailed(session: Session, run_id: int, message_id: str) -> bool:
    """Whether the report of `run_id` with this Message-ID was already sent (a retry must not resend)."""
    query = select(ReportDeliveryRow.id).where(
        ReportDeliveryRow.run_id == run_id,
        ReportDeliveryRow.message_id == message_id,
        ReportDeliveryRow.status == DeliveryStatus.SENT.value,
    )
    return session.scalars(query.limit(1)).first() is not None


def _recipients(emailed_to: Sequence[str] | str | None) -> str | None:
    """Recipients as stored: comma-separated (a string is taken as one address)."""
    if emailed_to is None:
        return None
    addresses = [emailed_to] if isinstance(emailed_to, str) else list(emailed_to)
    bad = [address for address in addresses if "," in address or not address.strip()]
    if bad:
        raise ValueError(f"e-mail addresses must be non-empty and hold no comma, got {bad}")
    return ",".join(address.strip() for address in addresses)
