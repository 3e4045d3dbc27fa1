"""The fleet digest: one row per model of a run, as a page (``<out>/fleet/<week>/index.html``), an
e-mail (inline CSS) and the text of a Prefect artifact.

Gathering (`digest_entry`, `failed_entry`, `digest_context`) turns each model's `ReportInput` into
plain rows; the template only renders them. Failed models come first, then ``alert``, then ``warn``,
each with the features that moved (their own change and noise band), the eval metric and its change,
a link to the model's report and the verdicts of the last 12 weeks; ``ok`` models (and first drops)
follow as one compact list, so a digest of 50 models stays well under Gmail's 102 KB clip (measured
in tests/test_digest.py).

Model and feature names are user data: the HTML template escapes them (autoescape), and the markdown
of the artifact escapes them with `flows.artifacts.escape_markdown`'s rule (done by the caller).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

import jinja2

from audit.types import DropVerdict, FeatureVerdict, ReportInput
from reports.email import (
    FALLBACK_DOMAIN,
    ReportEmail,
    inline_css,
    one_line,
    parse_address,
)
from reports.render import make_environment

#: Features listed per model (the most-changed first; the model's report has them all).
DIGEST_FEATURES = 3
#: Weeks of verdict history shown per model.
DIGEST_HISTORY_WEEKS = 12
TEMPLATE = "digest.html"
#: Order of the rows: failed, alert, warn, then the compact list.
_ORDER = {"failed": 0, "alert": 1, "warn": 2, "ok": 3, "first": 4}


@dataclass(frozen=True)
class MovedFeature:
    """A feature that moved: its own change (0.42 = +42%) and the noise band said on it."""

    feature: str
    change: float | None
    band: str | None
    verdict: str


@dataclass(frozen=True)
class DigestEntry:
    """One model's row. `status` is its verdict (``ok``, ``warn``, ``alert``), ``first`` (nothing to
    compare with yet) or ``failed`` (with `error`)."""

    model_name: str
    status: str
    week: dt.date | None
    reason: str = ""
    moved: tuple[MovedFeature, ...] = ()
    metric_name: str | None = None
    metric: float | None = None
    metric_change: float | None = None
    link: str | None = None
    #: (week, verdict) of the last weeks, oldest first.
    history: tuple[tuple[dt.date, str], ...] = ()
    error: str | None = None

    @property
    def notable(self) -> bool:
        """Shown as a full row (failed, alert, warn) rather than in the compact list."""
        return self.status in ("failed", "alert", "warn")


@dataclass(frozen=True)
class DigestContext:
    week: dt.date
    entries: tuple[DigestEntry, ...]
    counts: tuple[tuple[str, int], ...]

    @property
    def notable(self) -> tuple[DigestEntry, ...]:
        return tuple(entry for entry in self.entries if entry.notable)

    @property
    def quiet(self) -> tuple[DigestEntry, ...]:
        return tuple(entry for entry in self.entries if not entry.notable)


def digest_entry(
    model_name: str,
    report_input: ReportInput,
    *,
    link: str | None,
    history: Sequence[tuple[dt.date, DropVerdict]] = (),
) -> DigestEntry:
    """A model's row from the report input of its reported week."""
    assessment = report_input.assessment
    current = report_input.current
    metric_name = metric = metric_change = None
    if report_input.performance is not None:
        performance = report_input.performance
        metric_name, metric = performance.metric_name, performance.metric
        metric_change = performance.metric - performance.previous_metric
    elif current.evaluation is not None:
        metric_name, metric = current.evaluation.metric_name, current.evaluation.metric
    return DigestEntry(
        model_name=model_name,
        status="first" if assessment is None else assessment.verdict.value,
        week=current.week,
        reason="" if assessment is None else one_line(assessment.reason),
        moved=() if assessment is None else _moved(report_input),
        metric_name=metric_name,
        metric=metric,
        metric_change=metric_change,
        link=link,
        history=tuple((week, verdict.value) for week, verdict in history),
    )


def failed_entry(
    model_name: str,
    error: str,
    *,
    week: dt.date | None = None,
    link: str | None = None,
    history: Sequence[tuple[dt.date, DropVerdict]] = (),
) -> DigestEntry:
    """A model whose audit failed, with the one line it failed with."""
    return DigestEntry(
        model_name=model_name,
        status="failed",
        week=week,
        link=link,
        history=tuple((w, verdict.value) for w, verdict in history),
        error=one_line(error),
    )


def digest_context(week: dt.date, entries: Sequence[DigestEntry]) -> DigestContext:
    """The digest of `week`: failed and changed models first, the rest by name."""
    ordered = sorted(entries, key=lambda entry: (_ORDER.get(entry.status, 5), entry.model_name.lower()))
    counts = tuple(
        (status, n) for status in _ORDER if (n := sum(1 for e in entries if e.status == status)) > 0
    )
    return DigestContext(week, tuple(ordered), counts)


def render_digest(context: DigestContext, *, email: bool = False) -> str:
    """The digest page (its CSS in a <style>), or for the e-mail with the CSS inlined."""
    html = _environment().get_template(TEMPLATE).render(context=context, email=email)
    return inline_css(html) if email else html


def digest_subject(context: DigestContext) -> str:
    """One line: the counts, worst first, and the week."""
    counts = ", ".join(f"{n} {status}" for status, n in context.counts)
    return (
        f"[drift-audit] fleet of {len(context.entries)} models, week of {context.week.isoformat()}: {counts}"
    )


def digest_text(context: DigestContext) -> str:
    """The plain-text alternative of the digest e-mail: one line per model, worst first."""
    lines = [digest_subject(context), ""]
    for entry in context.entries:
        line = f"{one_line(entry.model_name)}: {entry.status.upper()}"
        if entry.error:
            line += f" - {entry.error}"
        elif entry.moved:
            line += " - " + ", ".join(_moved_text(feature) for feature in entry.moved)
        if entry.link:
            line += f" ({entry.link})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_digest_email(context: DigestContext, *, sender: str, recipients: Sequence[str]) -> ReportEmail:
    """The digest as one e-mail (CSS inlined, a plain-text alternative). Its Message-ID is fixed by
    the week and the content, so the same digest built again has the same one."""
    from_address = parse_address(sender, what="sender (--email-from)")
    to_addresses = [parse_address(address, what="recipient (--email-to)") for address in recipients]
    html = render_digest(context, email=True)
    digest = hashlib.sha256(html.encode("utf-8")).hexdigest()[:24]
    domain = from_address.domain if re.fullmatch(r"[A-Za-z0-9.-]+", from_address.domain or "") else ""
    message_id = f"<drift-audit.fleet.{context.week.isoformat()}.{digest}@{domain or FALLBACK_DOMAIN}>"
    subject = digest_subject(context)
    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = subject
    message["From"] = from_address
    message["To"] = to_addresses
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(digest_text(context), subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return ReportEmail(
        message=message,
        message_id=message_id,
        sender=from_address.addr_spec,
        recipients=tuple(address.addr_spec for address in to_addresses),
        subject=subject,
        html_bytes=len(html.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")),
    )


def _moved_text(feature: MovedFeature) -> str:
    change = "" if feature.change is None else f" {feature.change:+.0%}"
    band = "" if feature.band is None else f" (noise {feature.band})"
    return f"{one_line(feature.feature)}{change}{band}"


def _moved(report_input: ReportInput) -> tuple[MovedFeature, ...]:
    """The features the verdict rests on (changed, new, removed), most evidence first, each with
    the own change and band of its strongest flagging method."""
    assessment = report_input.assessment
    if assessment is None:
        return ()
    moved = []
    for feature in assessment.features:
        if feature.verdict is FeatureVerdict.STABLE and not feature.methods_flagged:
            continue
        method = feature.methods_flagged[0] if feature.methods_flagged else None
        drift = None if method is None else assessment.drift(method, feature.feature)
        change = band = None
        if drift is not None:
            change = drift.plain_change if drift.plain_change is not None else drift.relative
            if drift.plain_band is not None and drift.plain_change is not None:
                band = drift.plain_band.describe()
            elif drift.band is not None:
                band = drift.band.describe()
        moved.append(MovedFeature(feature.feature, change, band, feature.verdict.value))
        if len(moved) == DIGEST_FEATURES:
            break
    return tuple(moved)


@functools.cache
def _environment() -> jinja2.Environment:
    return make_environment(autoescape=True)  # model and feature names are user data


def alert_message(entry: DigestEntry) -> tuple[str, str]:
    """A chat message of one model's week: (title, body). The body names the verdict and why, the
    features that moved with their change and noise band, the eval metric's change, and the report's
    link when it is published."""
    week = "" if entry.week is None else f", week of {entry.week.isoformat()}"
    title = f"[drift-audit] {entry.status.upper()}: {one_line(entry.model_name)}{week}"
    lines = []
    if entry.error:
        lines.append(f"The audit failed: {entry.error}")
    elif entry.reason:
        lines.append(entry.reason)
    if entry.moved:
        lines.append("Moved: " + "; ".join(_moved_text(feature) for feature in entry.moved))
    if entry.metric_name is not None and entry.metric is not None:
        metric = f"Eval {entry.metric_name}: {entry.metric:.4g}"
        if entry.metric_change is not None:
            metric += f" ({entry.metric_change:+.3g} since the previous drop)"
        lines.append(metric)
    if entry.link:
        lines.append(f"Report: {entry.link}")
    return title, "\n".join(lines)
