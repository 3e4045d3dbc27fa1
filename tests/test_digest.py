"""The fleet digest's page and e-mail: order, escaping, and the size of 50 models (no Prefect)."""

from __future__ import annotations

import datetime as dt

from reports.digest import (
    DigestEntry,
    MovedFeature,
    build_digest_email,
    digest_context,
    digest_text,
    render_digest,
)
from reports.email import HTML_SIZE_LIMIT

WEEK = dt.date(2026, 11, 30)
HISTORY = tuple((WEEK - dt.timedelta(weeks=11 - i), ("ok", "warn", "alert")[i % 3]) for i in range(12))


def _alerting(index: int) -> DigestEntry:
    moved = tuple(
        MovedFeature(f"feature_with_a_long_name_{index}_{j}", -0.42 + j / 10, "-30% to +35%", "changed")
        for j in range(3)
    )
    return DigestEntry(
        model_name=f"team-model-{index:02d}-weekly-retrain",
        status="alert",
        week=WEEK,
        reason="3 features changed beyond the noise band in 3 of 4 methods (permutation, IG, saliency)",
        moved=moved,
        metric_name="r2",
        metric=0.8123,
        metric_change=-0.0412,
        link=f"https://reports.example.com/drift/team-model-{index:02d}-weekly-retrain/{WEEK}/report.html",
        history=HISTORY,
    )


def test_fifty_alerting_models_stay_under_gmails_clip_as_email_and_page() -> None:
    context = digest_context(WEEK, [_alerting(i) for i in range(50)])
    email = build_digest_email(context, sender="audit@example.com", recipients=["team@example.com"])
    page = render_digest(context).encode("utf-8")
    # measured: worst case (every model alerting, 3 features, 12 weeks of history each)
    assert email.html_bytes < HTML_SIZE_LIMIT, email.html_bytes
    assert len(page) < HTML_SIZE_LIMIT, len(page)
    assert not email.clipped_by_gmail


def test_failed_and_changed_models_come_first_and_ok_ones_are_a_compact_list() -> None:
    entries = [
        DigestEntry("a-ok", "ok", WEEK, history=HISTORY),
        DigestEntry("b-warn", "warn", WEEK),
        DigestEntry("c-broken", "failed", None, error="registry /x does not exist"),
        DigestEntry("d-alert", "alert", WEEK),
        DigestEntry("e-new", "first", WEEK),
    ]
    context = digest_context(WEEK, entries)
    assert [e.model_name for e in context.notable] == ["c-broken", "d-alert", "b-warn"]
    assert [e.model_name for e in context.quiet] == ["a-ok", "e-new"]
    html = render_digest(context)
    assert html.index("c-broken") < html.index("d-alert") < html.index("b-warn") < html.index("a-ok")
    assert "registry /x does not exist" in html
    assert '<span class="h">wAowAowAowAo</span>'.replace("wAowAowAowAo", "owAowAowAowA") in html
    assert digest_text(context).splitlines()[2] == "c-broken: FAILED - registry /x does not exist"


def test_names_are_escaped() -> None:
    nasty = '<script>alert("x")</script>'
    entry = DigestEntry(nasty, "alert", WEEK, moved=(MovedFeature(nasty, 0.5, None, "changed"),))
    context = digest_context(WEEK, [entry])
    for html in (render_digest(context), render_digest(context, email=True)):
        assert "<script>" not in html and "&lt;script&gt;" in html
