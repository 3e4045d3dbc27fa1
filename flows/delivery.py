"""E-mail delivery of the weekly report: where the settings come from, and the `email_task`.

Each setting is taken from, in order: the CLI option / flow parameter, its environment variable,
then the Prefect `EmailServerCredentials` block named by ``--smtp-block`` / ``DRIFT_AUDIT_SMTP_BLOCK``
(server, port, security, user name and password only; recipients and sender are never in a block).
The password is only read from the environment or the block, inside the task, so it is never a flow
parameter (Prefect stores those) and never logged: it lives in a `reports.email.Password`.

Retries and re-runs do not send a second copy, as far as the delivery log knows: the Message-ID is
fixed by the run and the report's content, and a ``sent`` row in ``report_deliveries`` with that
Message-ID means nothing is sent again. Each attempt writes its row (``failed``, "sending: not
confirmed") before sending and sets the outcome after. Once the server accepted the message, no
error raises (a failing QUIT or a failing row update is logged), so the task does not retry into a
second copy; but a process killed between acceptance and the update leaves the row ``failed`` and a
re-run sends again (mail clients that deduplicate by Message-ID show one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit.types import AuditError
from flows.tasks import engine_for
from reports.email import (
    DEFAULT_PORTS,
    EmailError,
    Password,
    SmtpSecurity,
    SmtpSettings,
    build_email,
    send_email,
)
from reports.rendered import RenderedReport
from storage import delivery_log

ENV_TO = "DRIFT_AUDIT_EMAIL_TO"
ENV_FROM = "DRIFT_AUDIT_EMAIL_FROM"
ENV_HOST = "DRIFT_AUDIT_SMTP_HOST"
ENV_PORT = "DRIFT_AUDIT_SMTP_PORT"
ENV_SECURITY = "DRIFT_AUDIT_SMTP_SECURITY"
ENV_USERNAME = "DRIFT_AUDIT_SMTP_USERNAME"
ENV_PASSWORD = "DRIFT_AUDIT_SMTP_PASSWORD"
ENV_CAFILE = "DRIFT_AUDIT_SMTP_CAFILE"
ENV_BLOCK = "DRIFT_AUDIT_SMTP_BLOCK"
#: The error of a delivery row written before sending, until the send's outcome replaces it.
SENDING_NOT_CONFIRMED = "sending: not confirmed"
#: Tries after the first failed send, and the base of their exponential backoff (10 s, 20 s, 40 s).
EMAIL_RETRIES = 3
EMAIL_BACKOFF_SECONDS = 10.0
#: `EmailServerCredentials.smtp_type` -> our security names.
_BLOCK_SECURITY = {"SSL": SmtpSecurity.SSL, "STARTTLS": SmtpSecurity.STARTTLS, "INSECURE": SmtpSecurity.NONE}


@dataclass(frozen=True)
class EmailOptions:
    """E-mail settings given on the command line or as flow parameters; None = not given.

    No secrets here: these are flow parameters, which Prefect stores and shows.
    """

    to: tuple[str, ...] | None = None
    sender: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str | None = None
    smtp_block: str | None = None
    #: False (``--no-email``) never sends, whatever is configured.
    enabled: bool = True


@dataclass(frozen=True)
class BlockSettings:
    """What an `EmailServerCredentials` block holds (each field may be unset)."""

    host: str | None = None
    port: int | None = None
    security: SmtpSecurity | None = None
    username: str | None = None
    password: Password | None = None
    verify: bool = True


@dataclass(frozen=True)
class EmailDelivery:
    """Resolved settings of one delivery: who sends, to whom, through which server."""

    sender: str
    recipients: tuple[str, ...]
    smtp: SmtpSettings


BlockLoader = Callable[[str], BlockSettings]


def resolve_delivery(
    options: EmailOptions,
    environ: Mapping[str, str] | None = None,
    load_block: BlockLoader | None = None,
) -> EmailDelivery | None:
    """The delivery `options` ask for, completed from `environ` and the Prefect block.

    None when e-mail is off (``--no-email``) or no recipient is configured anywhere; an
    `EmailError` naming the missing or bad setting when recipients are set but the rest is not.

    A password only goes to the server configured next to it, so that whoever can set a flow
    parameter cannot point the worker's password at a server of theirs: the block's login is only
    sent to the block's host, port and security, and the environment's login
    (``DRIFT_AUDIT_SMTP_USERNAME``/``PASSWORD``) only to ``DRIFT_AUDIT_SMTP_HOST``. A different
    server is an error, not a silent override.
    """
    env = os.environ if environ is None else environ
    recipients = options.to if options.to is not None else _split_addresses(env.get(ENV_TO, ""))
    if not options.enabled or not recipients:
        return None
    block_name = options.smtp_block or env.get(ENV_BLOCK) or None
    block = BlockSettings() if block_name is None else (load_block or load_credentials_block)(block_name)
    given_security = _security(options.smtp_security or env.get(ENV_SECURITY))
    given_host = options.smtp_host or env.get(ENV_HOST) or None
    given_port = options.smtp_port or _port(env.get(ENV_PORT))
    if env.get(ENV_PASSWORD):
        username, password = env.get(ENV_USERNAME) or None, Password(env[ENV_PASSWORD])
        _check_env_server(options.smtp_host, env.get(ENV_HOST) or None)
    elif block.password is not None:
        username, password = block.username, block.password
        _check_block_server(block_name or "", block, given_host, given_port, given_security)
    else:
        username, password = env.get(ENV_USERNAME) or block.username, None
    security = given_security or block.security or SmtpSecurity.STARTTLS
    host = given_host or block.host
    if not host:
        raise EmailError(f"e-mail recipients are set but no SMTP server: pass --smtp-host or set {ENV_HOST}")
    port = given_port or block.port or DEFAULT_PORTS[security]
    sender = options.sender or env.get(ENV_FROM) or (username if username and "@" in username else None)
    if not sender:
        raise EmailError(f"no sender address: pass --email-from ADDR or set {ENV_FROM}")
    cafile = env.get(ENV_CAFILE) or None
    smtp = SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username or None,
        password=password,
        cafile=None if cafile is None else Path(cafile),
        verify=block.verify,
    )
    return EmailDelivery(sender=sender, recipients=tuple(recipients), smtp=smtp)


def _check_env_server(parameter_host: str | None, env_host: str | None) -> None:
    """The environment's password goes to the environment's server only (see `resolve_delivery`)."""
    if env_host is None:
        raise EmailError(
            f"{ENV_PASSWORD} is set but {ENV_HOST} is not: the environment's password is only sent to "
            f"the environment's server; set {ENV_HOST} (`drift-audit run --smtp-host` does)"
        )
    if parameter_host is not None and parameter_host.lower() != env_host.lower():
        raise EmailError(
            f"the flow parameter smtp_host {parameter_host!r} differs from {ENV_HOST} {env_host!r}, and "
            f"{ENV_PASSWORD} is only sent to {ENV_HOST}: drop the parameter or change {ENV_HOST}"
        )


def _check_block_server(
    name: str,
    block: BlockSettings,
    host: str | None,
    port: int | None,
    security: SmtpSecurity | None,
) -> None:
    """The block's password goes to the block's server only (see `resolve_delivery`)."""
    given = {"host": None if host is None else host.lower(), "port": port, "security": security}
    own = {
        "host": None if block.host is None else block.host.lower(),
        "port": block.port,
        "security": block.security,
    }
    for what, value in given.items():
        mine = own[what]
        # a block without a host has no server its password belongs to: any given host is refused
        if value is not None and value != mine and (mine is not None or what == "host"):
            theirs = "no host" if mine is None else f"{what} '{mine}'"
            raise EmailError(
                f"SMTP {what} '{value}' differs from the {theirs} of the block {name!r}, whose password "
                f"is only sent to its own server: unset --smtp-{what} / DRIFT_AUDIT_SMTP_{what.upper()} "
                "(and the flow parameter) or change the block"
            )


def load_credentials_block(name: str) -> BlockSettings:
    """The settings of the `EmailServerCredentials` block `name` (from prefect-email)."""
    from prefect_email import EmailServerCredentials

    try:
        block = EmailServerCredentials.load(name)
    except (ValueError, OSError) as error:
        raise EmailError(
            f"cannot load the Prefect block EmailServerCredentials {name!r}: {' '.join(str(error).split())}; "
            f"create it (see README) or fix --smtp-block / {ENV_BLOCK}"
        ) from None
    server = block.smtp_server
    smtp_type = block.smtp_type
    secret = block.password.get_secret_value()
    return BlockSettings(
        host=str(getattr(server, "value", server)) or None,
        port=block.smtp_port,
        security=_BLOCK_SECURITY.get(str(getattr(smtp_type, "name", smtp_type)).upper()),
        username=block.username or None,
        password=Password(secret) if secret else None,
        verify=block.verify is not False,
    )


def deliver_report(
    engine: Engine,
    rendered: RenderedReport,
    report_path: Path,
    delivery: EmailDelivery,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> str:
    """E-mail `rendered` and log the attempt in ``report_deliveries``; returns the Message-ID.

    Nothing is sent when a ``sent`` delivery of the same run and Message-ID exists. The attempt's
    row is written (``failed``, "sending: not confirmed") before sending; a send failure sets its
    error and raises the `EmailError`; a send that the server accepted marks it ``sent``, and if
    that update fails it is only logged (the message is out; raising would retry into a copy).
    """
    run_id = rendered.context.run_id
    try:
        email = build_email(
            rendered, sender=delivery.sender, recipients=delivery.recipients, report_path=report_path
        )
    except EmailError as error:  # a bad address or a broken rendering: logged, not retried
        _log_delivery(engine, run_id, report_path, (), None, error=str(error))
        raise
    if email.clipped_by_gmail:
        logger.warning(
            "the e-mail HTML is %d bytes: Gmail clips bodies over about 102 KB (the full report is at %s)",
            email.html_bytes,
            report_path,
        )
    with Session(engine) as session:
        if delivery_log.was_emailed(session, run_id, email.message_id):
            logger.info("report of run %d already e-mailed as %s: not sent again", run_id, email.message_id)
            return email.message_id
    # The row exists before anything is sent: an attempt that dies mid-send leaves a trace.
    delivery_id = _log_delivery(
        engine, run_id, report_path, email.recipients, email.message_id, error=SENDING_NOT_CONFIRMED
    )
    try:
        result = send_email(email, delivery.smtp)
    except EmailError as error:
        _update_delivery(engine, delivery_id, status=delivery_log.DeliveryStatus.FAILED, error=str(error))
        raise
    refused = "; ".join(f"{address}: {reply}" for address, reply in result.refused.items())
    logger.info("report e-mailed to %s via %s", ", ".join(result.accepted), delivery.smtp.address)
    if refused:
        logger.warning("some recipients were refused: %s", refused)
    try:
        _update_delivery(
            engine,
            delivery_id,
            status=delivery_log.DeliveryStatus.SENT,
            emailed_to=result.accepted,
            error=f"refused: {refused}" if refused else "",
        )
    except SQLAlchemyError as error:
        # Sent is sent: raising here would make the task retry into a second copy.
        logger.warning(
            "report e-mailed as %s but its delivery row %d could not be marked sent: %s",
            email.message_id,
            delivery_id,
            " ".join(str(getattr(error, "orig", None) or error).split()),
        )
    return email.message_id


def _log_delivery(
    engine: Engine,
    run_id: int,
    report_path: Path,
    recipients: Sequence[str],
    message_id: str | None,
    *,
    error: str | None,
) -> int:
    """A new ``failed`` row of `run_id` in ``report_deliveries``; returns its id."""
    with Session(engine) as session, session.begin():
        return delivery_log.record_delivery(
            session,
            run_id,
            report_path,
            status=delivery_log.DeliveryStatus.FAILED,
            emailed_to=list(recipients) or None,
            message_id=message_id,
            error=error,
        )


def _update_delivery(
    engine: Engine,
    delivery_id: int,
    *,
    status: delivery_log.DeliveryStatus,
    emailed_to: Sequence[str] | None = None,
    error: str | None = None,
) -> None:
    """Set the outcome of the delivery row `delivery_id` (``error=""`` clears the error)."""
    with Session(engine) as session, session.begin():
        delivery_log.update_delivery(
            session,
            delivery_id,
            status=status,
            emailed_to=list(emailed_to) if emailed_to else None,
            error=error,
        )


def _is_transient(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry connection trouble and SMTP 4xx replies; not a bad setting or a refused login."""
    error = state.data
    if isinstance(error, EmailError):
        return error.transient
    return not isinstance(error, AuditError)


@task(
    name="email-report",
    retries=EMAIL_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=EMAIL_BACKOFF_SECONDS),
    retry_jitter_factor=0.2,
    retry_condition_fn=_is_transient,
    cache_policy=NO_CACHE,
)
def email_task(db_url: str, rendered: RenderedReport, report_path: Path, options: EmailOptions) -> str | None:
    """E-mail the report if recipients are configured; returns the Message-ID (None when not e-mailed).

    `rendered` is what the render task wrote to `report_path`: its charts are drawn once for both.
    """
    logger = get_run_logger()
    run_id = rendered.context.run_id
    try:
        delivery = resolve_delivery(options)
    except AuditError as error:
        _log_delivery(engine_for(db_url), run_id, report_path, (), None, error=str(error))
        raise
    if delivery is None:
        reason = "--no-email" if not options.enabled else f"no recipients (--email-to or {ENV_TO})"
        logger.info("report not e-mailed: %s", reason)
        return None
    if not delivery.smtp.verify:
        logger.warning("the SMTP server's certificate is not checked (the block sets verify = False)")
    return deliver_report(engine_for(db_url), rendered, report_path, delivery, logger)


def _split_addresses(text: str) -> tuple[str, ...]:
    return tuple(address.strip() for address in text.split(",") if address.strip())


def _security(text: str | None) -> SmtpSecurity | None:
    if not text:
        return None
    try:
        return SmtpSecurity(text.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in SmtpSecurity)
        raise EmailError(f"SMTP security {text!r} is not one of {choices}; fix --smtp-security") from None


def _port(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise EmailError(f"SMTP port {text!r} is not a number; fix {ENV_PORT} (e.g. 587)") from None
