"""Alerts: a model's verdict of the week sent where the team looks, and a Prefect event per model.

A target (``--notify``, flow parameter ``notify``, or ``DRIFT_AUDIT_NOTIFY``) holding ``://`` is an
Apprise URL (``slack://``, ``msteams://``, ``json://host:port/path``, ...); anything else is the
name of a Prefect notification block (SlackWebhook, MicrosoftTeamsWebhook,
CustomWebhookNotificationBlock, ...: ``<name>`` or ``<block-type-slug>/<name>``). ``notify_on``
says which verdicts go out: ``alert``, ``warn`` (warn or alert; the default) or ``always``; a
failed model always does.

An Apprise URL usually carries a token, so it is never logged, never stored and never a flow
parameter when the command line gives it (`flows.cli` moves ``--notify URL`` into
``DRIFT_AUDIT_NOTIFY``): messages and rows name it by scheme and position ("json:// URL #1"), and
the delivery log keeps only its SHA-256. Error texts are scrubbed of anything that looks like a URL.

At most one message is recorded as sent per (model, week, verdict, target) in ``notifications``: a
retry or a re-run asks the log first. Each attempt writes its row (``failed``, "sending: not
confirmed") before it sends and sets the outcome after; a POST whose reply was lost (the receiver
took it, the connection died before its answer) stays ``failed`` and is sent again by the next
try, so the receiver may see it twice. That is the one known gap, as for the e-mail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.events import emit_event
from prefect.tasks import exponential_backoff
from sqlalchemy.orm import Session

from audit.types import AuditError
from flows.database import check_block_name
from flows.settings import NOTIFY_ENV
from flows.tasks import engine_for
from reports.digest import DigestEntry, alert_message
from storage import notification_log

#: Choices of ``--notify-on``: which verdicts are sent (a failed model always is).
NOTIFY_ON = ("alert", "warn", "always")
DEFAULT_NOTIFY_ON = "warn"
#: Prefect event emitted per model and week.
VERDICT_EVENT = "drift-audit.verdict"
#: Tries after a failed send, and the base of their exponential backoff (2 s, 4 s).
NOTIFY_RETRIES = 2
NOTIFY_BACKOFF_SECONDS = 2.0
SENDING_NOT_CONFIRMED = "sending: not confirmed"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
#: Apprise logs URLs (tokens included) when it cannot parse one: its records are kept out of every
#: log while it runs (`_quiet_apprise`), one call at a time.
_APPRISE_LOCK = threading.Lock()


class NotifyError(AuditError):
    """A target did not take the message (one line, scrubbed of URLs)."""


@dataclass(frozen=True)
class AlertTarget:
    """One place alerts go: an Apprise URL or a Prefect notification block's name."""

    #: The URL or the block's name; kept out of repr (a URL holds its token).
    text: str = field(repr=False)
    #: How it is named in logs, errors and rows: "json:// URL #1", "block team-slack".
    label: str
    #: `notifications.target_kind`: the URL's scheme, or "block".
    kind: str

    @property
    def is_url(self) -> bool:
        return "://" in self.text

    @property
    def hashed(self) -> str:
        return notification_log.target_hash(self.text)


@dataclass(frozen=True)
class AlertMessage:
    """One model's week as it is sent: the dedup key and the text."""

    model_name: str
    week: dt.date
    #: ``ok``, ``warn``, ``alert``, ``failed`` or ``first`` (nothing to compare with).
    verdict: str
    run_id: int | None
    title: str
    body: str


def parse_targets(
    notify: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> tuple[AlertTarget, ...]:
    """The targets of the flow parameter `notify` and of ``DRIFT_AUDIT_NOTIFY``, each checked (an
    `AuditError` that names the bad one by scheme or name, never by its URL)."""
    env = os.environ if environ is None else environ
    given = [*(notify or ()), *env.get(NOTIFY_ENV, "").split()]
    targets: list[AlertTarget] = []
    seen: set[str] = set()
    n_urls = 0
    for text in given:
        text = text.strip()
        if not text or text in seen:
            continue
        seen.add(text)
        if "://" in text:
            n_urls += 1
            targets.append(_url_target(text, n_urls))
        else:
            for part in text.split("/"):
                check_block_name(part, "--notify")
            targets.append(AlertTarget(text, f"block {text}", "block"))
    return tuple(targets)


def _url_target(text: str, index: int) -> AlertTarget:
    import apprise

    scheme = text.split("://", 1)[0].lower()
    label = f"{scheme}:// URL #{index}"
    with _quiet_apprise():
        plugin = apprise.Apprise.instantiate(text)
    if plugin is None:
        raise AuditError(
            f"--notify / {NOTIFY_ENV}: {label} is not an Apprise URL Apprise can use (unknown scheme or "
            "malformed); see https://github.com/caronc/apprise/wiki for the form of each service"
        )
    return AlertTarget(text, label, scheme[:32])


def check_notify_on(notify_on: str) -> None:
    if notify_on not in NOTIFY_ON:
        raise AuditError(f"notify_on {notify_on!r} is not one of {', '.join(NOTIFY_ON)}; fix --notify-on")


def should_notify(verdict: str, notify_on: str) -> bool:
    """Whether a model's `verdict` is sent under `notify_on` (a failure always is)."""
    if verdict == "failed" or notify_on == "always":
        return True
    if notify_on == "warn":
        return verdict in ("warn", "alert")
    return verdict == "alert"


def alert_for(entry: DigestEntry, week: dt.date, run_id: int | None) -> AlertMessage:
    title, body = alert_message(entry)
    return AlertMessage(entry.model_name, week, entry.status, run_id, title, body)


def emit_verdict_event(entry: DigestEntry, week: dt.date) -> None:
    """The Prefect event ``drift-audit.verdict`` of a model's week: resource the model, payload the
    verdict and the features that moved (for Prefect automations)."""
    emit_event(
        event=VERDICT_EVENT,
        resource={
            "prefect.resource.id": f"drift-audit.model.{entry.model_name}",
            "prefect.resource.name": entry.model_name,
        },
        payload={
            "model": entry.model_name,
            "week": week.isoformat(),
            "verdict": entry.status,
            "reason": entry.reason or entry.error or "",
            "changed_features": [
                {"feature": f.feature, "change": f.change, "band": f.band, "verdict": f.verdict}
                for f in entry.moved
            ],
            "report": entry.link,
        },
    )


def scrub(text: str) -> str:
    """`text` on one line with every URL replaced by ``<url>`` (a URL may carry a token)."""
    return " ".join(_URL.sub("<url>", text).split())


def _retry(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry a target that did not take the message; not a bad target (unknown block)."""
    return isinstance(state.data, NotifyError)


@task(
    name="notify",
    retries=NOTIFY_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=NOTIFY_BACKOFF_SECONDS),
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry,
    cache_policy=NO_CACHE,
    log_prints=False,
)
def notify_task(db_url: str, message: AlertMessage, target: AlertTarget) -> bool:
    """Send `message` to `target` unless the log says it was sent; True when it was sent now."""
    logger = get_run_logger()
    key = (message.model_name, message.week, message.verdict, target.hashed)
    engine = engine_for(db_url)
    with Session(engine) as session, session.begin():
        if notification_log.was_sent(session, *key):
            logger.info(
                "%s of %s already sent to %s: not sent again", message.verdict, message.week, target.label
            )
            return False
        attempt = notification_log.record_attempt(
            session,
            model_name=message.model_name,
            week=message.week,
            verdict=message.verdict,
            hashed_target=target.hashed,
            target_kind=target.kind,
            run_id=message.run_id,
            error=SENDING_NOT_CONFIRMED,
        )
    try:
        _send(target, message.title, message.body)
    except NotifyError as error:
        with Session(engine) as session, session.begin():
            notification_log.set_outcome(session, attempt, sent=False, error=str(error))
        raise
    with Session(engine) as session, session.begin():
        notification_log.set_outcome(session, attempt, sent=True)
    logger.info("%s: %s of %s sent to %s", message.model_name, message.verdict, message.week, target.label)
    return True


def _send(target: AlertTarget, title: str, body: str) -> None:
    if target.is_url:
        _send_apprise(target, title, body)
    else:
        _send_block(target, title, body)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _quiet_apprise() -> Iterator[_Collect]:
    """Apprise's records (which may hold a URL's token) go to a collector only, not to any log."""
    apprise_logger = logging.getLogger("apprise")
    collect = _Collect()
    with _APPRISE_LOCK:
        propagate, handlers = apprise_logger.propagate, list(apprise_logger.handlers)
        apprise_logger.propagate = False
        apprise_logger.handlers = [collect]
        try:
            yield collect
        finally:
            apprise_logger.propagate, apprise_logger.handlers = propagate, handlers


def _send_apprise(target: AlertTarget, title: str, body: str) -> None:
    import apprise

    with _quiet_apprise() as collect:
        client = apprise.Apprise()
        client.add(target.text)
        ok = client.notify(body=body, title=title)
    if not ok:
        detail = scrub("; ".join(collect.lines[-2:])) or "no reason given"
        raise NotifyError(f"{target.label} did not take the message: {detail}")


def _send_block(target: AlertTarget, title: str, body: str) -> None:
    block = load_notification_block(target.text)
    try:
        with block.raise_on_failure():
            block.notify(body, subject=title)
    except Exception as error:  # httpx errors name the URL: only the status or the kind is kept
        status = getattr(getattr(error, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {scrub(str(error))}"
        raise NotifyError(f"{target.label} did not take the message: {detail}") from None


def load_notification_block(name: str) -> Any:
    """The notification block `name` (``<slug>/<name>``, or a name looked up among the blocks that
    can notify); an `AuditError` naming the fix when there is none."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client

    reference = name
    if "/" not in name:
        with get_client(sync_client=True) as client:
            response = client.request(
                "POST",
                "/block_documents/filter",
                json={
                    "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
                    "block_schemas": {"block_capabilities": {"all_": ["notify"]}},
                    "include_secrets": False,
                },
            )
            found = response.json()
        slugs = sorted({doc["block_type"]["slug"] for doc in found if doc.get("block_type")})
        if len(slugs) != 1:
            what = "no notification block" if not slugs else f"several blocks ({', '.join(slugs)})"
            raise AuditError(
                f"--notify {name}: {what} of that name in the Prefect API; create it (e.g. a SlackWebhook) "
                f"or name it as <block-type-slug>/{name}"
            )
        reference = f"{slugs[0]}/{name}"
    try:
        return Block.load(reference)
    except (ValueError, OSError) as error:
        raise AuditError(f"--notify {name}: cannot load the Prefect block: {scrub(str(error))}") from None
