"""The report e-mail, received by a real SMTP server (aiosmtpd) on 127.0.0.1.

Each test sends through smtplib to the server and parses what it received: the MIME tree, the
``cid:`` references against the image parts, the size bound of the HTML part, the subject and the
text part. TLS uses a self-signed certificate made here with `cryptography` and trusted through the
CA-file setting. Delivery tests log to ``report_deliveries`` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

import flows.delivery
from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.types import ReportInput
from flows.delivery import (
    BlockSettings,
    EmailDelivery,
    EmailOptions,
    deliver_report,
    resolve_delivery,
)
from reports.context import build_context
from reports.email import (
    HTML_SIZE_LIMIT,
    EmailError,
    Password,
    SmtpSecurity,
    SmtpSettings,
    build_email,
    email_subject,
    inline_css,
    send_email,
)
from reports.render import render_outputs
from reports.rendered import RenderedReport
from storage import delivery_log, writes
from storage.models import Base, ReportDeliveryRow
from storage.session import make_engine, upgrade_database
from tests.helpers import free_port
from tests.test_report import (
    METHODS,
    NASTY,
    PREVIOUS_WEEK,
    WEEK,
    feature_names,
    make_importance,
    make_summary,
)

SENDER = "Drift Audit <drift@example.com>"
RECIPIENTS = ("ml-team@example.com", "oncall@example.org")
PASSWORD = "pa55-w0rd-never-shown"
USERNAME = "drift-bot"
UNICODE_NAME = "PM₂.₅ µg/m³ (Zürich)"


# --- an SMTP server that keeps what it receives ---------------------------------------------------


class Inbox:
    """aiosmtpd handler: keeps every accepted message; answers 451 to the first `fail_first` ones."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[tuple[str, ...], EmailMessage]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 mailbox busy, try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((tuple(envelope.rcpt_tos), message))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = (bytes(part, "utf-8") if isinstance(part, str) else part for part in data)
        self.logins.append((login, password))
        # handled=False: aiosmtpd answers (235 or 535) itself
        ok = login == USERNAME.encode() and password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


class Logs(logging.Handler):
    """Every record of the root and Prefect loggers, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("mail.log"):  # the test server's own line-by-line log
            self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[Logs]:
    handler = Logs()
    loggers = [logging.getLogger(name) for name in ("", "prefect", "prefect.task_runs", "prefect.flow_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def smtp_server(inbox: Inbox, **options: Any) -> Iterator[int]:
    """A real SMTP server on 127.0.0.1 for the duration of the block; yields its port."""
    with smtp_server_on(inbox, free_port(), **options) as port:
        yield port


@contextmanager
def smtp_server_on(inbox: Inbox, port: int, **options: Any) -> Iterator[int]:
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclasses.dataclass(frozen=True)
class Certificate:
    cert_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost / 127.0.0.1 (its own CA), and a server context."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drift-audit test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return Certificate(cert_file, context)


# --- reports to send ------------------------------------------------------------------------------


def drift_input(names: Sequence[str], collapsed: str, *, model_name: str = "churn-weekly") -> ReportInput:
    """Two weeks of the same importances except `collapsed`, which falls 98% in every method: ALERT."""
    previous = [make_importance(m, names, seed=i) for i, m in enumerate(METHODS)]
    current = []
    for importance in previous:
        values = importance.values.copy()
        values[list(names).index(collapsed)] *= 0.02
        current.append(dataclasses.replace(importance, values=values, std=0.1 * values))
    now = dataclasses.replace(make_summary(WEEK, current), model_name=model_name)
    before = dataclasses.replace(make_summary(PREVIOUS_WEEK, previous, run_id=6), model_name=model_name)
    return ReportInput(
        current=now,
        previous=before,
        comparisons=compare_audits(now, before),
        assessment=assess_drift(now, before),
    )


def rendered_report(
    names: Sequence[str] = (NASTY, UNICODE_NAME, *feature_names(6)), **kwargs: Any
) -> RenderedReport:
    """The real rendering (`render_outputs`) of a report whose first feature collapsed."""
    return render_outputs(drift_input(names, collapsed=names[0], **kwargs))


def plain_settings(port: int, **overrides: Any) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security=SmtpSecurity.NONE, timeout=30, **overrides)


def parts(message: EmailMessage) -> tuple[EmailMessage, EmailMessage, list[EmailMessage]]:
    """(text part, html part, image parts), asserting the tree alternative(text, related(html, png...)),
    inside mixed(alternative, report.html) when the full report is attached."""
    if message.get_content_type() == "multipart/mixed":
        alternative, attachment = list(message.iter_parts())
        assert attachment.get_content_type() == "text/html"
        assert (
            attachment.get_filename() == "report.html"
            and attachment.get_content_disposition() == "attachment"
        )
        message = alternative  # type: ignore[assignment]
    assert message.get_content_type() == "multipart/alternative"
    text, related = list(message.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, *images = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert all(image.get_content_type() == "image/png" for image in images)
    return text, html, images


def _attachment(message: EmailMessage) -> str:
    """The attached report.html as text."""
    assert message.get_content_type() == "multipart/mixed"
    attachment = list(message.iter_parts())[1]
    content = attachment.get_content()
    assert isinstance(content, str)
    return content


# --- the message ----------------------------------------------------------------------------------


def test_mime_tree_cids_size_and_verdict_as_received() -> None:
    rendered = rendered_report()
    inbox = Inbox()
    with smtp_server(inbox) as port:
        built = build_email(
            rendered, sender=SENDER, recipients=RECIPIENTS, report_path="/out/2024-05-13/report.html"
        )
        result = send_email(built, plain_settings(port))

    assert result.refused == {} and result.accepted == RECIPIENTS
    [(envelope_to, message)] = inbox.received
    assert envelope_to == RECIPIENTS
    text, html_part, images = parts(message)
    html = html_part.get_content()
    # the body is a summary: the cards of the most-changed features; every chart is in the attachment
    assert 1 <= len(images) == len(rendered.images) == len(rendered.context.cards) <= 3
    attached = _attachment(message)
    assert attached.replace("\r\n", "\n") == rendered.html
    assert attached.count("<img") == len(rendered.context.charts)
    assert "cid:" not in attached and attached.count("data:image/png;base64,") == len(rendered.context.charts)
    referenced = re.findall(r'src="cid:([^"]+)"', html)
    content_ids = [image["Content-ID"].strip("<>") for image in images]
    assert sorted(referenced) == sorted(content_ids) == sorted(i.cid for i in rendered.images)
    for image in images:
        payload = image.get_content()
        assert payload.startswith(b"\x89PNG\r\n\x1a\n")
        assert image.get_content_disposition() == "inline"
    assert "data:image" not in html  # Gmail drops data: images
    assert len(html.encode("utf-8")) < HTML_SIZE_LIMIT
    # CSS is inlined: the main column carries its own width, no class-only styling is left.
    assert re.search(r'<div class="wrap" style="[^"]*max-width: 700px', html)
    # What is left in <style> after inlining is only media queries (they cannot be inlined).
    for style in re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.S):
        assert re.fullmatch(r"\s*(@media[^{]*\{(?:[^{}]*\{[^{}]*\})*\s*\}\s*)*", style), style
    # The verdict leads the subject and the text part.
    assert message["Subject"].startswith("[drift-audit] ALERT: churn-weekly, week of 2024-05-13")
    body = text.get_content()
    assert "Verdict: ALERT" in body
    assert "/out/2024-05-13/report.html" in body
    assert message["Message-ID"] == built.message_id
    assert message["Auto-Submitted"] == "auto-generated"


def test_feature_names_are_escaped_in_html_alt_text_subject_and_text() -> None:
    rendered = rendered_report(model_name="Modèle β")
    inbox = Inbox()
    with smtp_server(inbox) as port:
        send_email(build_email(rendered, sender=SENDER, recipients=RECIPIENTS[:1]), plain_settings(port))
    [(_, message)] = inbox.received
    text, html_part, _ = parts(message)
    html = html_part.get_content()

    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(" in html
    alts = re.findall(r'<img[^>]*\salt="([^"]*)"', html)
    assert alts and all("<" not in alt and ">" not in alt for alt in alts)
    assert any("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in alt for alt in alts)
    attached = _attachment(message)
    assert "<script" not in attached.lower() and "&lt;script&gt;alert(" in attached
    assert UNICODE_NAME in html
    # The verdict's reason names the collapsed feature: in the subject it is plain text, one line.
    subject = message["Subject"]
    assert NASTY in subject and "\n" not in subject and "\r" not in subject
    # Plain text is not HTML: the name appears as it is, not as entities.
    assert NASTY in text.get_content() and "&lt;" not in text.get_content()
    assert "Modèle β" in subject and "Modèle β" in text.get_content()


def test_header_injection_through_names_is_neutralised() -> None:
    evil_model = "churn\r\nBcc: attacker@evil.example\r\nX-Injected: 1"
    evil_feature = "f\r\nBcc: attacker@evil.example\u202e"
    names = (evil_feature, *feature_names(6))
    rendered = render_outputs(drift_input(names, collapsed=evil_feature, model_name=evil_model))
    inbox = Inbox()
    with smtp_server(inbox) as port:
        send_email(build_email(rendered, sender=SENDER, recipients=RECIPIENTS[:1]), plain_settings(port))

    [(envelope_to, message)] = inbox.received
    assert envelope_to == RECIPIENTS[:1]
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert message["Subject"].startswith(
        "[drift-audit] ALERT: churn Bcc: attacker@evil.example X-Injected: 1"
    )
    assert "\u202e" not in message["Subject"]
    text = parts(message)[0].get_content()
    assert "\nBcc:" not in text and "\u202e" not in text


def test_subject_names_every_verdict_state() -> None:
    names = feature_names(5)
    alert = build_context(drift_input(names, collapsed=names[0]))
    first = build_context(
        ReportInput(make_summary(WEEK, [make_importance("permutation", names, 0)]), None, ())
    )
    assert email_subject(alert).startswith("[drift-audit] ALERT: churn-weekly, week of 2024-05-13 - ")
    assert email_subject(first) == "[drift-audit] FIRST AUDIT: churn-weekly, week of 2024-05-13"
    ok = dataclasses.replace(alert, verdict="ok", verdict_reason="nothing moved beyond noise")
    assert (
        email_subject(ok) == "[drift-audit] OK: churn-weekly, week of 2024-05-13 - nothing moved beyond noise"
    )
    long = dataclasses.replace(alert, verdict_reason="x" * 500)
    assert len(email_subject(long)) <= 160 and email_subject(long).endswith("…")


def test_sequence_model_with_90_features_end_to_end_stays_under_gmail_clipping() -> None:
    """render_outputs of a sequence model (90 features x 24 steps, 8 methods, history) through SMTP."""
    from tests.test_report_outputs import sequence_input

    report_input = sequence_input(n_features=90, n_steps=24, specials=(NASTY, UNICODE_NAME))
    rendered = render_outputs(report_input)
    inbox = Inbox()
    with smtp_server(inbox) as port:
        built = build_email(rendered, sender=SENDER, recipients=RECIPIENTS[:1])
        send_email(built, plain_settings(port))
    [(_, message)] = inbox.received
    _, html_part, images = parts(message)
    html = html_part.get_content()
    print(f"e-mail HTML of a 90-feature sequence report: {len(html.encode()):,} bytes, {len(images)} images")
    assert len(html.encode("utf-8")) == built.html_bytes < HTML_SIZE_LIMIT
    assert sorted(set(re.findall(r'src="cid:([^"]+)"', html))) == sorted(
        image["Content-ID"].strip("<>") for image in images
    )
    assert len(images) == len(rendered.images) == 3  # the cards; the attachment holds every chart
    assert "<script" not in html.lower() and UNICODE_NAME in html
    assert _attachment(message).count("<img") == len(rendered.context.charts) > 8
    assert message["Subject"].startswith(
        f"[drift-audit] {report_input.assessment.verdict.value.upper()}: pm25-seq"
    )


def test_inlining_keeps_escaping_and_never_fetches() -> None:
    html = (
        '<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css"><style>p { color: red }</style>'
        '</head><body><p title="a &lt;b&gt; &quot;c&quot; &amp;">&lt;i&gt; &amp; x</p></body></html>'
    )
    inlined = inline_css(html)
    assert '<p title="a &lt;b&gt; &quot;c&quot; &amp;" style="color: red;">&lt;i&gt; &amp; x</p>' in inlined


def test_a_cid_without_an_image_part_is_refused() -> None:
    rendered = rendered_report(feature_names(4))
    broken = dataclasses.replace(rendered, images=rendered.images[1:])
    with pytest.raises(EmailError, match=re.escape(rendered.images[0].cid)):
        build_email(broken, sender=SENDER, recipients=RECIPIENTS)


@pytest.mark.parametrize(
    ("sender", "recipients", "match"),
    [
        ("not-an-address", RECIPIENTS, "sender .*'not-an-address'"),
        (SENDER, ("a@example.com, b@example.com",), "one e-mail address"),
        (SENDER, ("a@example.com\r\nBcc: x@evil.example",), "one e-mail address"),
        (SENDER, (), "no recipients"),
    ],
)
def test_bad_addresses_are_one_line_errors(sender: str, recipients: tuple[str, ...], match: str) -> None:
    with pytest.raises(EmailError, match=match):
        build_email(rendered_report(feature_names(3)), sender=sender, recipients=recipients)


def test_message_id_is_fixed_by_run_and_content() -> None:
    # Two renderings of the same report are the same bytes, so the Message-ID is the same.
    first = build_email(rendered_report(feature_names(4)), sender=SENDER, recipients=RECIPIENTS)
    again = build_email(rendered_report(feature_names(4)), sender=SENDER, recipients=RECIPIENTS[:1])
    other = build_email(rendered_report(feature_names(5)), sender=SENDER, recipients=RECIPIENTS)
    assert first.message_id == again.message_id
    assert first.message_id != other.message_id
    assert re.fullmatch(r"<drift-audit\.run7\.[0-9a-f]{24}@example\.com>", first.message_id)


# --- transports -----------------------------------------------------------------------------------


def test_starttls_with_a_self_signed_certificate_and_auth(certificate: Certificate) -> None:
    inbox = Inbox()
    server = {"tls_context": certificate.server_context, "require_starttls": True}
    with smtp_server(inbox, **server, authenticator=inbox.authenticate, auth_require_tls=True) as port:
        settings = SmtpSettings(
            host="localhost",
            port=port,
            security=SmtpSecurity.STARTTLS,
            username=USERNAME,
            password=Password(PASSWORD),
            cafile=certificate.cert_file,
            timeout=30,
        )
        send_email(build_email(rendered_report(), sender=SENDER, recipients=RECIPIENTS), settings)
        # Without trusting the self-signed CA the handshake fails, and nothing is sent.
        untrusted = dataclasses.replace(settings, cafile=None)
        with pytest.raises(EmailError, match="CERTIFICATE_VERIFY_FAILED") as failure:
            send_email(build_email(rendered_report(), sender=SENDER, recipients=RECIPIENTS), untrusted)
        assert not failure.value.transient
        wrong = dataclasses.replace(settings, password=Password("wrong"))
        with pytest.raises(EmailError, match=f"refused the login of '{USERNAME}': 535"):
            send_email(build_email(rendered_report(), sender=SENDER, recipients=RECIPIENTS), wrong)
    assert len(inbox.received) == 1
    assert inbox.logins[0] == (USERNAME.encode(), PASSWORD.encode())


def test_starttls_is_required_not_attempted(certificate: Certificate) -> None:
    with smtp_server(Inbox()) as port:  # a server that offers no STARTTLS
        settings = SmtpSettings(host="127.0.0.1", port=port, security=SmtpSecurity.STARTTLS, timeout=30)
        with pytest.raises(EmailError, match="STARTTLS extension not supported"):
            send_email(build_email(rendered_report(), sender=SENDER, recipients=RECIPIENTS), settings)


def test_implicit_ssl(certificate: Certificate) -> None:
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=certificate.server_context) as port:
        settings = SmtpSettings(
            host="127.0.0.1", port=port, security=SmtpSecurity.SSL, cafile=certificate.cert_file, timeout=30
        )
        send_email(build_email(rendered_report(), sender=SENDER, recipients=RECIPIENTS), settings)
    [(_, message)] = inbox.received
    assert message["Subject"].startswith("[drift-audit] ALERT")


def test_password_is_never_shown_nor_sent_in_clear() -> None:
    password = Password(PASSWORD)
    settings = SmtpSettings(host="smtp.example.com", port=587, username=USERNAME, password=password)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(password) and PASSWORD not in f"{password}"
    with pytest.raises(TypeError, match="not picklable"):
        import pickle

        pickle.dumps(password)
    with pytest.raises(EmailError, match="refusing to send the SMTP password unencrypted"):
        SmtpSettings(host="relay", port=25, security=SmtpSecurity.NONE, username=USERNAME, password=password)


# --- settings -------------------------------------------------------------------------------------


def test_settings_come_from_options_then_environment_then_block() -> None:
    block = BlockSettings(
        host="smtp.block.example",
        port=2525,
        security=SmtpSecurity.SSL,
        username="blockuser",
        password=Password("b"),
    )
    env = {
        "DRIFT_AUDIT_EMAIL_TO": "a@example.com, b@example.com",
        "DRIFT_AUDIT_EMAIL_FROM": "env@example.com",
        "DRIFT_AUDIT_SMTP_HOST": "smtp.env.example",
        "DRIFT_AUDIT_SMTP_BLOCK": "team-smtp",
    }
    loaded: list[str] = []

    def load(name: str) -> BlockSettings:
        loaded.append(name)
        return block

    # The block's login goes to the block's server only: another host in the environment is refused.
    with pytest.raises(
        EmailError, match=r"SMTP host 'smtp\.env\.example' differs .* block 'team-smtp'"
    ) as error:
        resolve_delivery(EmailOptions(), env, load)
    assert "\n" not in str(error.value)
    assert loaded == ["team-smtp"]
    from_block = resolve_delivery(
        EmailOptions(), {**env, "DRIFT_AUDIT_SMTP_HOST": "SMTP.block.example"}, load
    )
    assert from_block is not None
    assert (
        from_block.recipients == ("a@example.com", "b@example.com") and from_block.sender == "env@example.com"
    )
    assert (from_block.smtp.host, from_block.smtp.port, from_block.smtp.security) == (
        "SMTP.block.example",
        2525,
        "ssl",
    )
    assert from_block.smtp.username == "blockuser" and from_block.smtp.password == Password("b")

    # The environment's login goes to DRIFT_AUDIT_SMTP_HOST only; options set the rest.
    options = EmailOptions(
        to=("cli@example.com",),
        sender="cli-from@example.com",
        smtp_port=587,
        smtp_security="starttls",
    )
    env_password = {**env, "DRIFT_AUDIT_SMTP_USERNAME": "envuser", "DRIFT_AUDIT_SMTP_PASSWORD": PASSWORD}
    from_env = resolve_delivery(options, env_password, load)
    assert from_env is not None
    assert from_env.recipients == ("cli@example.com",) and from_env.sender == "cli-from@example.com"
    assert (from_env.smtp.host, from_env.smtp.port, from_env.smtp.security) == (
        "smtp.env.example",
        587,
        "starttls",
    )
    assert from_env.smtp.username == "envuser" and from_env.smtp.password == Password(PASSWORD)
    # The same host as a parameter is allowed; without a password any parameter host is.
    same = resolve_delivery(dataclasses.replace(options, smtp_host="smtp.env.example"), env_password, load)
    assert same is not None and same.smtp.password == Password(PASSWORD)
    no_password = resolve_delivery(
        dataclasses.replace(options, smtp_host="relay.example"), {**env, "DRIFT_AUDIT_SMTP_BLOCK": ""}
    )
    assert no_password is not None and no_password.smtp.host == "relay.example"
    assert no_password.smtp.password is None


@pytest.mark.parametrize(
    ("env_host", "match"),
    [
        (
            "smtp.env.example",
            "flow parameter smtp_host 'smtp.attacker.example' differs from DRIFT_AUDIT_SMTP_HOST",
        ),
        (None, "DRIFT_AUDIT_SMTP_PASSWORD is set but DRIFT_AUDIT_SMTP_HOST is not"),
    ],
)
def test_a_parameter_host_never_gets_the_environments_password(env_host: str | None, match: str) -> None:
    env = {
        "DRIFT_AUDIT_EMAIL_TO": "a@example.com",
        "DRIFT_AUDIT_EMAIL_FROM": "d@example.com",
        "DRIFT_AUDIT_SMTP_USERNAME": USERNAME,
        "DRIFT_AUDIT_SMTP_PASSWORD": PASSWORD,
    }
    if env_host is not None:
        env["DRIFT_AUDIT_SMTP_HOST"] = env_host
    with pytest.raises(EmailError, match=match) as error:
        resolve_delivery(EmailOptions(smtp_host="smtp.attacker.example"), env)
    message = str(error.value)
    assert "\n" not in message and PASSWORD not in message


def test_the_cli_gives_its_smtp_server_through_the_environment_not_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from flows.cli import _flow_environment, _parser, _request
    from flows.settings import DropScope

    monkeypatch.setenv("DRIFT_AUDIT_SMTP_PORT", "2525")
    monkeypatch.delenv("DRIFT_AUDIT_SMTP_HOST", raising=False)
    for command in ("run", "backfill"):
        args = _parser().parse_args(
            [command, "--registry", "r", "--email-to", "a@example.com", "--smtp-host", "smtp.cli.example",
             "--smtp-port", "587", "--task-runner", "dask", "--dask-address", "tcp://s:8786"]
        )  # fmt: skip
        assert (args.task_runner, args.dask_address) == ("dask", "tcp://s:8786")
        parameters = _request(args, DropScope()).flow_parameters()
        assert parameters["email_to"] == ["a@example.com"]
        assert not {"smtp_host", "smtp_port", "smtp_security"} & set(parameters)
        with _flow_environment(args):
            assert os.environ["DRIFT_AUDIT_SMTP_HOST"] == "smtp.cli.example"
            assert os.environ["DRIFT_AUDIT_SMTP_PORT"] == "587"
        assert "DRIFT_AUDIT_SMTP_HOST" not in os.environ and os.environ["DRIFT_AUDIT_SMTP_PORT"] == "2525"


def test_no_recipients_or_no_email_sends_nothing_and_bad_settings_name_the_fix() -> None:
    assert resolve_delivery(EmailOptions(), {}) is None
    assert resolve_delivery(EmailOptions(enabled=False), {"DRIFT_AUDIT_EMAIL_TO": "a@example.com"}) is None
    with_to = {"DRIFT_AUDIT_EMAIL_TO": "a@example.com", "DRIFT_AUDIT_EMAIL_FROM": "d@example.com"}
    with pytest.raises(EmailError, match="--smtp-host"):
        resolve_delivery(EmailOptions(), with_to)
    with pytest.raises(EmailError, match="'tls' is not one of starttls, ssl, none"):
        resolve_delivery(EmailOptions(smtp_security="tls"), {**with_to, "DRIFT_AUDIT_SMTP_HOST": "h"})
    with pytest.raises(EmailError, match="port 'abc' is not a number"):
        resolve_delivery(
            EmailOptions(), {**with_to, "DRIFT_AUDIT_SMTP_HOST": "h", "DRIFT_AUDIT_SMTP_PORT": "abc"}
        )
    defaults = resolve_delivery(EmailOptions(smtp_security="ssl"), {**with_to, "DRIFT_AUDIT_SMTP_HOST": "h"})
    assert defaults is not None and defaults.smtp.port == 465


# --- delivery log and idempotency -----------------------------------------------------------------


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    engine = make_engine(db_url)
    upgrade_database(engine)
    return engine


def stored_input(engine: sa.Engine, names: Sequence[str] = (NASTY, *feature_names(5))) -> ReportInput:
    """A report input whose run exists in `engine`'s database."""
    with Session(engine) as session, session.begin():
        run_id = writes.start_run(session, model_name="churn-weekly", week=WEEK, model_path=Path("/m.keras"))
    report_input = drift_input(names, collapsed=names[0])
    return dataclasses.replace(report_input, current=dataclasses.replace(report_input.current, run_id=run_id))


def deliveries(engine: sa.Engine) -> list[ReportDeliveryRow]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(ReportDeliveryRow).order_by(ReportDeliveryRow.id)))


def everything_stored(engine: sa.Engine) -> str:
    """Every value of every table, as text (to look for a leaked secret)."""
    with engine.connect() as connection:
        return repr([list(connection.execute(sa.select(table))) for table in Base.metadata.sorted_tables])


def test_smtp_down_is_logged_then_one_copy_is_sent_whatever_the_retries(
    engine: sa.Engine, tmp_path: Path, logs: Logs
) -> None:
    rendered = render_outputs(stored_input(engine))
    report_path = tmp_path / "report.html"
    report_path.write_text(rendered.html, encoding="utf-8")
    port = free_port()  # nothing listens yet
    settings = SmtpSettings(host="127.0.0.1", port=port, security=SmtpSecurity.NONE, timeout=30)
    delivery = EmailDelivery(sender=SENDER, recipients=RECIPIENTS, smtp=settings)
    logger = logging.getLogger("test-email")

    with pytest.raises(
        EmailError, match=rf"cannot send via 127.0.0.1:{port} \(none\): ConnectionRefused"
    ) as down:
        deliver_report(engine, rendered, report_path, delivery, logger)
    assert down.value.transient
    assert report_path.is_file()
    [failed] = deliveries(engine)
    assert (failed.status, failed.run_id) == ("failed", rendered.context.run_id)
    assert "ConnectionRefusedError" in (failed.error or "") and failed.emailed_to == ",".join(RECIPIENTS)

    inbox = Inbox()
    with smtp_server_on(inbox, port):
        message_id = deliver_report(engine, rendered, report_path, delivery, logger)
        again = deliver_report(engine, rendered, report_path, delivery, logger)  # a retry / re-run
    assert again == message_id
    assert len(inbox.received) == 1
    assert [(row.status, row.message_id) for row in deliveries(engine)] == [
        ("failed", message_id),
        ("sent", message_id),
    ]
    assert "already e-mailed" in logs.text


@pytest.mark.parametrize(
    "quit_error",
    [smtplib.SMTPResponseException(421, b"4.4.2 closing, bye"), ConnectionResetError(104, "reset by peer")],
)
def test_a_failing_quit_after_acceptance_is_one_delivery_not_an_error(
    engine: sa.Engine, tmp_path: Path, logs: Logs, monkeypatch: pytest.MonkeyPatch, quit_error: Exception
) -> None:
    def failing_quit(self: smtplib.SMTP) -> None:
        raise quit_error

    monkeypatch.setattr(smtplib.SMTP, "quit", failing_quit)
    rendered = render_outputs(stored_input(engine))
    report_path = tmp_path / "report.html"
    inbox = Inbox()
    with smtp_server(inbox) as port:
        delivery = EmailDelivery(sender=SENDER, recipients=RECIPIENTS, smtp=plain_settings(port))
        message_id = deliver_report(engine, rendered, report_path, delivery, logging.getLogger("test-email"))
        # what a retry or a re-run would do: nothing, the row says sent
        assert deliver_report(engine, rendered, report_path, delivery, logging.getLogger("t")) == message_id
    assert len(inbox.received) == 1
    [row] = deliveries(engine)
    assert (row.status, row.message_id, row.emailed_to) == ("sent", message_id, ",".join(RECIPIENTS))
    assert "failed at QUIT" in logs.text and "the message is delivered" in logs.text


def test_a_failing_delivery_row_update_after_sending_does_not_raise(
    engine: sa.Engine, tmp_path: Path, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render_outputs(stored_input(engine))
    report_path = tmp_path / "report.html"
    seen_during_send: list[list[tuple[str, str | None]]] = []
    original_send = send_email

    def spying_send(*args: Any) -> Any:
        seen_during_send.append([(row.status, row.error) for row in deliveries(engine)])
        return original_send(*args)

    def broken_update(*args: Any, **kwargs: Any) -> None:
        raise sa.exc.OperationalError("UPDATE report_deliveries", {}, Exception("database is locked"))

    monkeypatch.setattr(flows.delivery, "send_email", spying_send)
    monkeypatch.setattr(delivery_log, "update_delivery", broken_update)
    inbox = Inbox()
    with smtp_server(inbox) as port:
        delivery = EmailDelivery(sender=SENDER, recipients=RECIPIENTS, smtp=plain_settings(port))
        message_id = deliver_report(engine, rendered, report_path, delivery, logging.getLogger("test-email"))
    assert len(inbox.received) == 1 and inbox.received[0][1]["Message-ID"] == message_id
    # the row was written before sending; the update that failed would have marked it sent
    assert seen_during_send == [[("failed", "sending: not confirmed")]]
    assert [(row.status, row.error) for row in deliveries(engine)] == [("failed", "sending: not confirmed")]
    assert "could not be marked sent" in logs.text and "database is locked" in logs.text


def test_text_part_names_profile_only_changes_and_missing_weeks() -> None:
    from reports.context_types import VerdictRow
    from reports.email import plain_text_summary

    names = feature_names(5)
    context = build_context(drift_input(names, collapsed=names[0]))
    lag_row = VerdictRow(
        feature="lagged\u202e",
        verdict="changed",
        agreement=2,
        n_methods=3,
        method="integrated_gradients",
        relative_change=None,
        band=None,
        profile_distance=2.5,
        profile_band=0.75,
        cause=None,
        reason="lags moved",
    )
    context = dataclasses.replace(
        context, verdict_rows=(lag_row,), missing_weeks=(dt.date(2024, 5, 6), dt.date(2024, 4, 29))
    )
    text = plain_text_summary(context)
    assert "- lagged: changed (2 of 3 methods), lags moved 2.50 steps (noise band 0.750 steps)" in text
    assert "No drop for 2024-05-06, 2024-04-29: compared with the latest earlier drop." in text


def test_markdown_escaping_drops_c1_and_bidi_controls_like_the_email() -> None:
    from flows.artifacts import escape_markdown

    escaped = escape_markdown("evil\u202efdp.exe\x85next\u2066x\nline")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]", escaped)
    assert escaped == "evil fdp\\.exe next x line"


def test_transient_smtp_reply_is_retried_by_prefect_and_delivers_once(
    engine: sa.Engine,
    db_url: str,
    tmp_path: Path,
    logs: Logs,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    certificate: Certificate,
    prefect_harness: str,
) -> None:
    from prefect import flow

    from flows.delivery import email_task

    rendered = render_outputs(stored_input(engine))
    report_path = tmp_path / "report.html"
    report_path.write_text("<html>the report</html>", encoding="utf-8")
    inbox = Inbox(fail_first=1)  # the first DATA gets "451 try again later"
    server = {"tls_context": certificate.server_context, "require_starttls": True}
    with smtp_server(inbox, **server, authenticator=inbox.authenticate) as port:
        monkeypatch.setenv("DRIFT_AUDIT_SMTP_USERNAME", USERNAME)
        monkeypatch.setenv("DRIFT_AUDIT_SMTP_PASSWORD", PASSWORD)
        monkeypatch.setenv("DRIFT_AUDIT_SMTP_CAFILE", str(certificate.cert_file))
        monkeypatch.setenv("DRIFT_AUDIT_SMTP_HOST", "localhost")  # the password goes to this host only
        options = EmailOptions(to=RECIPIENTS, sender=SENDER, smtp_port=port, smtp_security="starttls")
        quick = email_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

        @flow
        def send_twice() -> tuple[str | None, str | None]:
            first = quick(db_url, rendered, report_path, options)
            return first, quick(db_url, rendered, report_path, options)  # a re-run: not sent again

        first, second = send_twice()

    assert first is not None and first == second
    assert len(inbox.received) == 1
    assert [row.status for row in deliveries(engine)] == ["failed", "sent"]
    assert "451 4.3.0 mailbox busy" in (deliveries(engine)[0].error or "")
    assert inbox.logins[-1] == (USERNAME.encode(), PASSWORD.encode())
    # the logs hold the failed attempt and the delivery, and nowhere the password
    assert "451 4.3.0 mailbox busy" in logs.text and "report e-mailed to" in logs.text
    captured = capsys.readouterr()
    seen = logs.text + captured.out + captured.err + report_path.read_text(encoding="utf-8")
    assert PASSWORD not in seen + everything_stored(engine)


@pytest.mark.slow
def test_cli_exit_code_when_the_email_fails_then_a_rerun_sends_one_copy(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: str,
) -> None:
    import flows.weekly_audit
    from flows.cli import main
    from flows.delivery import email_task
    from tests.helpers import small_registry

    # the task's own backoff is 10 s, 20 s, 40 s; the test does not wait for it
    monkeypatch.setattr(flows.weekly_audit, "email_task", email_task.with_options(retry_delay_seconds=0))
    for name in ("DRIFT_AUDIT_EMAIL_TO", "DRIFT_AUDIT_SMTP_HOST", "DRIFT_AUDIT_SMTP_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    registry = small_registry(tmp_path, [dt.date(2024, 5, 6), WEEK])
    out = tmp_path / "out"
    port = free_port()
    argv = [
        "run", "--registry", str(registry), "--out", str(out), "--methods", "weight_sum", "--quiet",
        "--email-to", RECIPIENTS[0], "--email-to", RECIPIENTS[1], "--email-from", SENDER,
        "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-security", "none",
    ]  # fmt: skip
    report = out / WEEK.isoformat() / "report.html"

    assert main(argv) == 1  # nothing listens on the port
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(
        f"drift-audit: error: report written to {report} but not e-mailed: cannot send via"
    )
    assert "ConnectionRefusedError" in error
    assert report.is_file()
    engine = make_engine(f"sqlite:///{out.resolve() / 'drift-audit.db'}")
    statuses = [row.status for row in deliveries(engine)]
    assert statuses[-1] == "failed" and "written" in statuses and "sent" not in statuses

    inbox = Inbox()
    with smtp_server_on(inbox, port):
        assert main(argv) == 0
        assert main(argv) == 0  # the same report again: not sent a second time
        assert main([*argv, "--no-email"]) == 0
    assert len(inbox.received) == 1
    [(envelope_to, message)] = inbox.received
    assert envelope_to == RECIPIENTS and message["Subject"].startswith("[drift-audit] ")
    assert [row.status for row in deliveries(engine)].count("sent") == 1


def test_settings_from_a_prefect_email_server_credentials_block(prefect_harness: str) -> None:
    from prefect_email import EmailServerCredentials

    EmailServerCredentials(
        username="bot@example.com",
        password=PASSWORD,
        smtp_server="smtp.block.example",
        smtp_type="SSL",
        smtp_port=2465,
    ).save("drift-audit-test-smtp", overwrite=True)

    delivery = resolve_delivery(EmailOptions(to=RECIPIENTS, smtp_block="drift-audit-test-smtp"), {})
    assert delivery is not None
    smtp = delivery.smtp
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.block.example", 2465, SmtpSecurity.SSL)
    assert smtp.username == "bot@example.com" and smtp.password == Password(PASSWORD)
    assert delivery.sender == "bot@example.com"  # the block's user name, as no sender was given
    assert PASSWORD not in repr(delivery)
    # The block's password is only sent to the block's server: another port or security is refused.
    env = {"DRIFT_AUDIT_SMTP_BLOCK": "drift-audit-test-smtp", "DRIFT_AUDIT_SMTP_PORT": "587"}
    with pytest.raises(EmailError, match="SMTP port '587' differs from the port '2465'"):
        resolve_delivery(EmailOptions(to=RECIPIENTS), env)
    with pytest.raises(
        EmailError, match="cannot load the Prefect block EmailServerCredentials 'no-such-block'"
    ):
        resolve_delivery(EmailOptions(to=RECIPIENTS, smtp_block="no-such-block"), {})
