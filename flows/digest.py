"""The fleet digest's tasks: gather every model's row (its verdict history from SQL), write
``<out>/fleet/<week>/index.html``, publish it as a Prefect artifact, and e-mail it once.

The digest's e-mail is logged in ``notifications`` under the model name ``fleet`` (no model of a
fleet may have it) and the verdict ``digest``, with the SHA-256 of its recipients as the target: a
retry or a re-run of the same week sends nothing twice once one was ``sent``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy.orm import Session

from audit.types import ReportInput
from flows.artifacts import escape_markdown
from flows.delivery import EMAIL_BACKOFF_SECONDS, EMAIL_RETRIES, EmailOptions, _is_transient, resolve_delivery
from flows.fleet import DIGEST_DIR
from flows.tasks import IO_RETRIES, engine_for
from reports.digest import (
    DIGEST_HISTORY_WEEKS,
    DigestContext,
    DigestEntry,
    build_digest_email,
    digest_context,
    digest_entry,
    failed_entry,
    render_digest,
)
from reports.email import EmailError, send_email
from reports.render import write_report
from storage import notification_log, reads

#: Prefect artifact key of the digest (one history of versions, one per run).
DIGEST_ARTIFACT_KEY = "drift-audit-fleet-digest"
#: `notifications.verdict` of the digest e-mail.
DIGEST_VERDICT = "digest"


@dataclass(frozen=True)
class DigestSource:
    """What the digest needs of one model: its reported week's input, or the line it failed with."""

    model_name: str
    #: The model's folder under ``<out>`` (`flows.fleet.model_folder`).
    folder: str
    report_input: ReportInput | None = None
    #: Where its report is published (``--report-url``), else None.
    published: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Digest:
    """The digest written: its path and the context (for the e-mail, with published links only)."""

    path: Path
    context: DigestContext
    email_context: DigestContext


def digest_week(sources: Sequence[DigestSource], today: dt.date | None = None) -> dt.date:
    """The digest's week: the newest reported week of its models (today when none has a report)."""
    weeks = [s.report_input.current.week for s in sources if s.report_input is not None]
    return max(weeks) if weeks else (today or dt.date.today())


@task(name="write-digest", cache_policy=NO_CACHE, **IO_RETRIES)
def digest_task(db_url: str, out_dir: Path, sources: Sequence[DigestSource]) -> Digest:
    """Gather the rows (each model's verdicts of the last 12 weeks from SQL) and write the page."""
    week = digest_week(sources)
    with Session(engine_for(db_url)) as session:
        entries = [_entry(session, source, week) for source in sources]
    page = digest_context(week, [dataclasses.replace(e, link=_page_link(e, s)) for e, s in entries])
    mail = digest_context(week, [e for e, _ in entries])
    path = write_report(render_digest(page), out_dir / DIGEST_DIR, week, file_name="index.html")
    get_run_logger().info("fleet digest written to %s", path)
    return Digest(path, page, mail)


def _entry(session: Session, source: DigestSource, week: dt.date) -> tuple[DigestEntry, DigestSource]:
    history = reads.verdict_history(session, source.model_name, weeks=DIGEST_HISTORY_WEEKS)
    if source.error is not None:
        reported = None if source.report_input is None else source.report_input.current.week
        entry = failed_entry(
            source.model_name, source.error, week=reported, link=source.published, history=history
        )
        return entry, source
    if source.report_input is None:  # nothing audited yet and nothing failed: an empty registry
        return failed_entry(source.model_name, "no audited drop yet", history=history), source
    link = source.published
    return digest_entry(source.model_name, source.report_input, link=link, history=history), source


def _page_link(entry: DigestEntry, source: DigestSource) -> str | None:
    """The published report, else the report's path relative to the digest page."""
    if entry.link is not None or entry.week is None:
        return entry.link
    return f"../../{source.folder}/{entry.week.isoformat()}/report.html"


@task(name="digest-artifact", cache_policy=NO_CACHE, **IO_RETRIES)
def digest_artifact_task(digest: Digest) -> None:
    """The digest as a markdown artifact: one line per model, worst first."""
    context = digest.context
    lines = [f"# Fleet digest, week of {context.week.isoformat()}", ""]
    lines.append(", ".join(f"{n} {status}" for status, n in context.counts))
    lines += ["", "| model | verdict | what moved |", "|---|---|---|"]
    for entry in context.entries:
        moved = (
            escape_markdown(entry.error)
            if entry.error
            else "; ".join(
                escape_markdown(f"{f.feature} {'' if f.change is None else format(f.change, '+.0%')}")
                for f in entry.moved
            )
        )
        lines.append(f"| {escape_markdown(entry.model_name)} | {entry.status} | {moved} |")
    lines += ["", f"Digest: {escape_markdown(str(digest.path))}"]
    create_markdown_artifact(
        "\n".join(lines), key=DIGEST_ARTIFACT_KEY, description="drift-audit fleet digest"
    )


@task(
    name="email-digest",
    retries=EMAIL_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=EMAIL_BACKOFF_SECONDS),
    retry_jitter_factor=0.2,
    retry_condition_fn=_is_transient,
    cache_policy=NO_CACHE,
)
def email_digest_task(db_url: str, digest: Digest, options: EmailOptions) -> str | None:
    """E-mail the digest when recipients are configured, once per week and recipients; returns its
    Message-ID (None when not e-mailed)."""
    logger = get_run_logger()
    delivery = resolve_delivery(options)
    if delivery is None:
        logger.info("digest not e-mailed: no recipients, or --no-email")
        return None
    email = build_digest_email(digest.email_context, sender=delivery.sender, recipients=delivery.recipients)
    hashed = notification_log.target_hash("mailto:" + ",".join(sorted(email.recipients)))
    week = digest.context.week
    engine = engine_for(db_url)
    with Session(engine) as session, session.begin():
        if notification_log.was_sent(session, DIGEST_DIR, week, DIGEST_VERDICT, hashed):
            logger.info("digest of %s already e-mailed to these recipients: not sent again", week)
            return email.message_id
        attempt = notification_log.record_attempt(
            session,
            model_name=DIGEST_DIR,
            week=week,
            verdict=DIGEST_VERDICT,
            hashed_target=hashed,
            target_kind="email",
            run_id=None,
            error="sending: not confirmed",
        )
    try:
        send_email(email, delivery.smtp)
    except EmailError as error:
        with Session(engine) as session, session.begin():
            notification_log.set_outcome(session, attempt, sent=False, error=str(error))
        raise
    with Session(engine) as session, session.begin():
        notification_log.set_outcome(session, attempt, sent=True)
    logger.info("digest e-mailed to %s", ", ".join(email.recipients))
    return email.message_id
