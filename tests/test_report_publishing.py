"""--report-url: where reports are published, checked before any drop is audited, and the link the
e-mail gives first; the e-mail attaches report.html without it or with --attach-report."""

from __future__ import annotations

import datetime as dt

import pytest

from audit.types import AuditError
from flows.cli import _parser as build_parser
from flows.settings import ReportPublishing, check_report_url


def test_the_link_is_the_weeks_report_under_the_base() -> None:
    publishing = ReportPublishing("https://reports.example.com/drift/", attach=False)
    assert publishing.link(dt.date(2026, 3, 23)) == "https://reports.example.com/drift/2026-03-23/report.html"
    assert ReportPublishing().link(dt.date(2026, 3, 23)) is None and ReportPublishing().attach


@pytest.mark.parametrize(
    "bad", ["ftp://x/y", "reports/drift", "https://", "javascript:alert(1)", "http://a b"]
)
def test_a_url_that_is_not_http_is_refused_with_the_fix(bad: str) -> None:
    with pytest.raises(AuditError, match=r"is not an http\(s\) URL; pass where the reports are published"):
        check_report_url(bad)
    check_report_url("http://127.0.0.1:8000/reports")


def test_run_and_backfill_take_the_options() -> None:
    parser = build_parser()
    for command in ("run", "backfill"):
        args = parser.parse_args(
            [command, "--registry", "r", "--report-url", "https://x/r", "--attach-report"]
        )
        assert (args.report_url, args.attach_report) == ("https://x/r", True)
        args = parser.parse_args([command, "--registry", "r"])
        assert (args.report_url, args.attach_report) == (None, False)
