"""The weekly report as an e-mail: subject, plain-text summary, CSS inlining, MIME tree, SMTP.

An e-mail is not a web page. Gmail drops ``data:`` images and most ``<style>`` rules and clips HTML
bodies over about 102 KB, so the message is::

    multipart/mixed
      multipart/alternative
        text/plain          the summary (verdict first), from templates/report.txt
        multipart/related
          text/html         `RenderedReport.email_html` (a summary: verdict, overview, the cards of
                            the most-changed features) with its CSS inlined into style attributes
          image/png ...     one inline part per `InlineImage`, referenced as ``cid:<cid>``
      text/html             report.html, the full self-contained report, attached unless a link to
                            the published report replaces it (``--report-url`` without
                            ``--attach-report``); without it the message is the multipart/alternative

Everything user-controlled (model and feature names, the verdict's reason) is escaped in the HTML
(the report template does it; inlining keeps it), stripped of control characters in the text part,
and reduced to one line in the subject, so a name holding CR/LF cannot inject a header.

Sending uses `smtplib` with implicit TLS (``ssl``), ``starttls`` or no encryption (``none``); the
password is a `Password`, whose repr and str never show it, and it is never sent unencrypted.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from enum import StrEnum
from pathlib import Path

import css_inline
import jinja2

from audit.types import AuditError
from reports.context_types import ReportContext
from reports.render import make_environment
from reports.rendered import RenderedReport

#: Gmail clips an HTML body larger than about 102 KB ("[Message clipped] View entire message").
HTML_SIZE_LIMIT = 102_000
SUBJECT_PREFIX = "[drift-audit]"
#: Longer subjects are cut with an ellipsis (mail clients show about 60-80 characters anyway).
MAX_SUBJECT_CHARS = 160
TEXT_TEMPLATE = "report.txt"
#: File name of the attached full report.
ATTACHMENT_NAME = "report.html"
DEFAULT_TIMEOUT_SECONDS = 30.0
#: Used in the Message-ID when the sender's domain cannot be used.
FALLBACK_DOMAIN = "drift-audit.invalid"

_LOG = logging.getLogger(__name__)


class EmailError(AuditError):
    """The report e-mail could not be built or sent; the message is one line naming what to fix.

    `transient` is True for failures worth retrying (connection refused or dropped, timeouts, SMTP
    4xx replies) and False for ones a retry cannot fix (bad address, authentication refused, 5xx).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class SmtpSecurity(StrEnum):
    """How the connection to the SMTP server is encrypted."""

    #: Plain connection upgraded with STARTTLS (port 587); refuses to go on without it.
    STARTTLS = "starttls"
    #: TLS from the first byte ("SMTPS", port 465).
    SSL = "ssl"
    #: No encryption (a local relay on port 25); no password is ever sent over it.
    NONE = "none"


DEFAULT_PORTS = {SmtpSecurity.STARTTLS: 587, SmtpSecurity.SSL: 465, SmtpSecurity.NONE: 25}


class Password:
    """An SMTP password whose repr and str never show it: it may sit in settings that get logged."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("an SMTP password must not be empty; leave it unset for no AUTH")
        self._value = value

    def reveal(self) -> str:
        """The password itself, for `smtplib.SMTP.login` only."""
        return self._value

    def __repr__(self) -> str:
        return "Password('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Password) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: a pickled task input or result would store the password in clear.
        raise TypeError("a Password is not picklable; pass the name of its environment variable or block")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send (no recipients: those belong to the message)."""

    host: str
    port: int
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: Password | None = None
    #: A CA bundle to trust instead of the system's (a company CA, a test server's self-signed cert).
    cafile: Path | None = None
    #: False turns off certificate checks (only from an `EmailServerCredentials` block that says so).
    verify: bool = True
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not self.host or any(char.isspace() for char in self.host):
            raise EmailError(f"SMTP host {self.host!r} is not a host name; set --smtp-host")
        if not 0 < self.port < 65536:
            raise EmailError(f"SMTP port {self.port} is out of range; use 1-65535 (e.g. 587 or 465)")
        if self.password is not None and not self.username:
            raise EmailError("an SMTP password is set without a user name; set DRIFT_AUDIT_SMTP_USERNAME")
        if self.password is not None and self.security is SmtpSecurity.NONE:
            raise EmailError(
                f"refusing to send the SMTP password unencrypted to {self.host}:{self.port}; "
                "use --smtp-security starttls or ssl"
            )
        if self.timeout <= 0:
            raise EmailError(f"SMTP timeout must be positive seconds, got {self.timeout}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port} ({self.security.value})"


@dataclass(frozen=True)
class ReportEmail:
    """A built message and what the delivery log stores about it."""

    message: EmailMessage
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    #: Size of the HTML part (UTF-8, CRLF line ends, before transfer encoding), vs `HTML_SIZE_LIMIT`.
    html_bytes: int

    @property
    def clipped_by_gmail(self) -> bool:
        return self.html_bytes >= HTML_SIZE_LIMIT


@dataclass(frozen=True)
class SendResult:
    """What the server accepted: every recipient but `refused` (address -> the server's reply)."""

    message_id: str
    accepted: tuple[str, ...]
    refused: dict[str, str]


# --- building ------------------------------------------------------------------------------------


def build_email(
    rendered: RenderedReport,
    *,
    sender: str,
    recipients: Sequence[str],
    report_path: Path | str | None = None,
) -> ReportEmail:
    """The MIME message of `rendered`, from `sender` to `recipients`.

    The Message-ID is derived from the run id and the content (see `message_id_for`), so building
    the same report twice gives the same Message-ID: the delivery log uses it to never send a copy.
    """
    from_address = parse_address(sender, what="sender (--email-from)")
    to_addresses = [parse_address(address, what="recipient (--email-to)") for address in recipients]
    if not to_addresses:
        raise EmailError("no recipients; pass --email-to ADDR or set DRIFT_AUDIT_EMAIL_TO")
    text = plain_text_summary(rendered.context, report_path)
    html = inline_css(rendered.email_html)
    check_cids(html, rendered)
    subject = email_subject(rendered.context)
    message_id = message_id_for(rendered, domain=from_address.domain)

    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = subject
    message["From"] = from_address
    message["To"] = to_addresses
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    # RFC 3834: sent by a program; vacation responders and ticket systems should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    html_part = next(part for part in message.iter_parts() if part.get_content_type() == "text/html")
    for image in rendered.images:
        html_part.add_related(
            image.png,
            maintype="image",
            subtype="png",
            cid=f"<{image.cid}>",
            disposition="inline",
            filename=f"{_file_stem(image.cid)}.png",
        )
    if rendered.context.report_attached:
        # the whole report, self-contained (its images are data: URIs): the e-mail body is a summary
        message.add_attachment(rendered.html, subtype="html", charset="utf-8", filename=ATTACHMENT_NAME)
    return ReportEmail(
        message=message,
        message_id=message_id,
        sender=from_address.addr_spec,
        recipients=tuple(address.addr_spec for address in to_addresses),
        subject=subject,
        html_bytes=_wire_size(html),
    )


def parse_address(text: str, *, what: str) -> Address:
    """One e-mail address ("Name <a@b.org>" or "a@b.org"); an `EmailError` naming it otherwise."""
    cleaned = text.strip()
    if not cleaned or _CONTROL.search(cleaned) or "," in cleaned:
        raise EmailError(f"{what} {text!r} is not one e-mail address; give one address per option")
    name, _, rest = cleaned.rpartition("<")
    spec = rest.removesuffix(">").strip() if rest.endswith(">") and "<" in cleaned else cleaned
    local, at, domain = spec.rpartition("@")
    if not at or not local or "." not in domain or any(char.isspace() for char in spec):
        raise EmailError(f"{what} {text!r} is not an e-mail address like team@example.com")
    try:
        return Address(display_name=name.strip().strip('"') if "<" in cleaned else "", addr_spec=spec)
    except (ValueError, IndexError) as error:
        raise EmailError(f"{what} {text!r} is not an e-mail address like team@example.com") from error


def email_subject(context: ReportContext) -> str:
    """One line: the verdict first, then model and week, then the verdict's reason, cut to fit."""
    if context.verdict is not None:
        verdict = context.verdict.upper()
    else:
        verdict = "FIRST AUDIT" if context.previous_week is None else "NO VERDICT"
    subject = (
        f"{SUBJECT_PREFIX} {verdict}: {one_line(context.model_name)}, week of {context.week.isoformat()}"
    )
    if context.verdict_reason:
        subject += f" - {one_line(context.verdict_reason)}"
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1].rstrip() + "…"
    return subject


def plain_text_summary(context: ReportContext, report_path: Path | str | None = None) -> str:
    """The text/plain alternative: verdict, what changed, rankings, skipped methods, where the report is."""
    variables = {name: getattr(context, name) for name in context.__dataclass_fields__}
    variables["report_path"] = None if report_path is None else str(report_path)
    return _text_environment().get_template(TEXT_TEMPLATE).render(**variables)


def inline_css(html: str) -> str:
    """`html` with its <style> rules moved into style attributes (media queries kept in <head>).

    No remote stylesheet is ever fetched. The serializer leaves '<' and '>' raw inside attribute
    values (valid HTML); they are re-escaped so no markup-like text from a name survives anywhere.
    """
    return _escape_brackets_in_attributes(_inliner().inline(html))


def check_cids(html: str, rendered: RenderedReport) -> None:
    """Every ``cid:`` the HTML refers to has an image part (else the client shows a broken image)."""
    referenced = set(re.findall(r"""cid:([^"'\s)>]+)""", html))
    missing = referenced - {image.cid for image in rendered.images}
    if missing:
        raise EmailError(f"the e-mail HTML refers to images that were not rendered: {sorted(missing)}")


def message_id_for(rendered: RenderedReport, *, domain: str) -> str:
    """A Message-ID fixed by the run and the report's content (HTML, images; not the send time)."""
    digest = hashlib.sha256()
    digest.update(rendered.email_html.encode("utf-8"))
    for image in rendered.images:
        digest.update(image.cid.encode("utf-8"))
        digest.update(hashlib.sha256(image.png).digest())
    safe_domain = domain if re.fullmatch(r"[A-Za-z0-9.-]+", domain or "") else FALLBACK_DOMAIN
    return f"<drift-audit.run{rendered.context.run_id}.{digest.hexdigest()[:24]}@{safe_domain}>"


def one_line(text: str) -> str:
    """`text` without control or format characters (CR, LF, bidi overrides), spaces collapsed."""
    return " ".join(_CONTROL.sub(" ", text).split())


# --- sending -------------------------------------------------------------------------------------


def send_email(email: ReportEmail, settings: SmtpSettings) -> SendResult:
    """Send `email` through the server of `settings`; an `EmailError` (one line) when it failed.

    A server that accepts some recipients and refuses others has delivered the message: that is a
    `SendResult` with `refused`, not an error, so a retry does not send the others a second copy.
    Likewise a failure after the server accepted the message (at QUIT) is only logged. An error
    raised while the server is answering DATA cannot tell whether the message was accepted.
    """
    secret = None if settings.password is None else settings.password.reveal()
    try:
        client = _connect(settings)
        try:
            if settings.username and settings.password is not None:
                client.login(settings.username, settings.password.reveal())
            refused = client.send_message(
                email.message, from_addr=email.sender, to_addrs=list(email.recipients)
            )
        except BaseException:
            client.close()
            raise
    except smtplib.SMTPRecipientsRefused as error:
        replies = "; ".join(f"{address}: {_reply(*reply)}" for address, reply in error.recipients.items())
        raise EmailError(f"{settings.address} refused every recipient ({replies})") from None
    except smtplib.SMTPAuthenticationError as error:
        raise EmailError(
            f"{settings.address} refused the login of {settings.username!r}: "
            f"{_reply(error.smtp_code, error.smtp_error)}; check DRIFT_AUDIT_SMTP_USERNAME/PASSWORD"
        ) from None
    except smtplib.SMTPNotSupportedError as error:
        raise EmailError(f"{settings.address}: {_scrub(str(error), secret)}") from None
    except smtplib.SMTPResponseException as error:
        transient = 400 <= error.smtp_code < 500
        reply = _scrub(_reply(error.smtp_code, error.smtp_error), secret)
        raise EmailError(
            f"{settings.address} refused the message: {reply}",
            transient=transient,
        ) from None
    except (smtplib.SMTPException, OSError) as error:  # refused, reset, timeout, TLS handshake
        text = _scrub(" ".join(str(error).split()) or "no reason given", secret)
        transient = not isinstance(error, ssl.SSLCertVerificationError)
        raise EmailError(
            f"cannot send via {settings.address}: {type(error).__name__}: {text}", transient=transient
        ) from None
    _quit(client, settings, secret)
    accepted = tuple(address for address in email.recipients if address not in refused)
    return SendResult(
        message_id=email.message_id,
        accepted=accepted,
        refused={address: _reply(*reply) for address, reply in refused.items()},
    )


def _quit(client: smtplib.SMTP, settings: SmtpSettings, secret: str | None) -> None:
    """Say QUIT after the server accepted the message; a failure here is logged, not raised.

    The message is delivered once the server answered the DATA: a 421 or a dropped connection at
    QUIT must not become a (transient, retried) error, or the retry would send a second copy.
    """
    try:
        client.quit()
    except (smtplib.SMTPException, OSError) as error:
        reason = _scrub(" ".join(str(error).split()) or "no reason given", secret)
        _LOG.warning(
            "%s accepted the message but failed at QUIT (%s: %s); the message is delivered",
            settings.address,
            type(error).__name__,
            reason,
        )
    finally:
        client.close()


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    """An open connection, encrypted as `settings.security` says (STARTTLS is required, not tried)."""
    context = _tls_context(settings)
    if settings.security is SmtpSecurity.SSL:
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        if settings.security is SmtpSecurity.STARTTLS:
            client.starttls(context=context)  # SMTPNotSupportedError when the server does not offer it
    except BaseException:
        client.close()
        raise
    return client


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    if settings.cafile is not None and not Path(settings.cafile).is_file():
        raise EmailError(f"SMTP CA file {settings.cafile} does not exist; fix DRIFT_AUDIT_SMTP_CAFILE")
    context = ssl.create_default_context(cafile=None if settings.cafile is None else str(settings.cafile))
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(message.split())}"


def _scrub(text: str, secret: str | None) -> str:
    return text if not secret else text.replace(secret, "**********")


# --- helpers -------------------------------------------------------------------------------------

#: C0/C1 controls (CR, LF, TAB, NUL, ...), line/paragraph separators and format characters such as
#: bidi overrides (U+202E), which could make a name read differently from what it is.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


_TAG = re.compile(r"""<[A-Za-z][^\s/>]*(?:\s+[^\s"'>/=]+(?:="[^"]*")?)*\s*/?>""")
_QUOTED = re.compile(r'="([^"]*)"')


def _escape_brackets_in_attributes(html: str) -> str:
    """Escape '<' and '>' inside double-quoted attribute values of the serialized `html`.

    css-inline's serializer always double-quotes values and escapes '"' and '&' in them, and escapes
    '<' and '>' in text, so a tag is exactly what `_TAG` matches, even with '>' inside a value.
    """

    def escape_values(tag: re.Match[str]) -> str:
        return _QUOTED.sub(
            lambda value: '="' + value.group(1).replace("<", "&lt;").replace(">", "&gt;") + '"', tag.group(0)
        )

    return _TAG.sub(escape_values, html)


def _wire_size(text: str) -> int:
    """UTF-8 bytes of a text part as sent and received: lines end in CRLF, the last one too."""
    return len("".join(f"{line}\r\n" for line in text.splitlines()).encode("utf-8"))


def _file_stem(cid: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", cid.partition("@")[0]) or "chart"


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def _clean(value: object) -> str:
    """Jinja filter of the text template: any value as one line without control characters."""
    return one_line(str(value))


@functools.cache
def _text_environment() -> jinja2.Environment:
    # Plain text is not HTML: no autoescape (it would show "&lt;"), control characters stripped instead.
    environment = make_environment(autoescape=False)
    environment.filters["clean"] = _clean
    return environment
