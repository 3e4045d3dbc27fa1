"""The weekly HTML report: escaping, layout with many features, first drop, skipped methods,
self-contained images, atomic writes, and no pyplot.

Inputs are built by hand (no Keras, no database): importances from a seeded generator
(tests.report_builders), and comparisons computed here from the ranks of both weeks.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html as html_lib
import re
import struct
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.types import (
    AuditSummary,
    FeatureChange,
    Importance,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
    ReportInput,
    ranks_of,
)
from reports.charts import MAX_LABEL_CHARS, chart_label, importance_bars, profile_heatmaps
from reports.context import build_context
from reports.render import (
    format_correlation,
    format_number,
    format_percent,
    format_seconds,
    format_signed,
    format_steps,
    render_context,
    render_report,
    write_report,
)
from tests.report_builders import feature_names, make_importance, make_summary

# Re-exported for tests/test_email.py, which imports these builders (and the constants below) from here.
__all__ = ["METHODS", "NASTY", "PREVIOUS_WEEK", "WEEK", "feature_names", "make_importance", "make_summary"]

WEEK = dt.date(2024, 5, 13)
PREVIOUS_WEEK = dt.date(2024, 5, 6)
METHODS = ("permutation", "integrated_gradients")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NASTY = "<script>alert(\"x\")</script> & 'q'"
SKIP_REASON = "no eval sample in the drop (add eval.npz or eval.csv)"


def compare(current: Importance, previous: Importance, top_k: int = 5) -> MethodComparison:
    """What audit/compare.py is expected to produce, computed by hand for the test."""
    now = dict(
        zip(current.feature_names, zip(current.values, ranks_of(current.values), strict=True), strict=True)
    )
    before = dict(
        zip(previous.feature_names, zip(previous.values, ranks_of(previous.values), strict=True), strict=True)
    )
    changes = []
    for name in dict.fromkeys([*current.feature_names, *previous.feature_names]):
        value, rank = now.get(name, (None, None))
        previous_value, previous_rank = before.get(name, (None, None))
        changes.append(
            FeatureChange(
                feature=name,
                value=None if value is None else float(value),
                previous_value=None if previous_value is None else float(previous_value),
                rank=None if rank is None else int(rank),
                previous_rank=None if previous_rank is None else int(previous_rank),
            )
        )
    common = [name for name in now if name in before]
    spearman = float(np.corrcoef([now[n][1] for n in common], [before[n][1] for n in common])[0, 1])
    top_now = {n for n, (_, r) in now.items() if r <= top_k}
    top_before = {n for n, (_, r) in before.items() if r <= top_k}
    return MethodComparison(
        method=current.method,
        spearman=spearman,
        top_k=top_k,
        top_k_overlap=len(top_now & top_before) / top_k,
        changes=tuple(changes),
    )


def make_input(
    names: Sequence[str],
    *,
    first_drop: bool = False,
    not_run: Sequence[MethodOutcome] = (),
    methods: Sequence[str] = METHODS,
    top: str | None = None,
) -> ReportInput:
    current = [make_importance(m, names, seed=i, top=top) for i, m in enumerate(methods)]
    current_summary = make_summary(WEEK, current, not_run=not_run)
    if first_drop:
        return ReportInput(current=current_summary, previous=None, comparisons=())
    previous = [make_importance(m, names, seed=100 + i) for i, m in enumerate(methods)]
    return ReportInput(
        current=current_summary,
        previous=make_summary(PREVIOUS_WEEK, previous, run_id=6),
        comparisons=tuple(compare(c, p) for c, p in zip(current, previous, strict=True)),
    )


def visible_text(document: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, spaces collapsed."""
    without_style = re.sub(r"<style.*?</style>", " ", document, flags=re.S)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", without_style))
    return " ".join(text.split())


def img_sources(document: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', document)


def png_size(image: str | bytes) -> tuple[int, int]:
    """Size of a PNG given as bytes or as a data URI, read from its header by hand."""
    data = (
        image
        if isinstance(image, bytes)
        else base64.b64decode(image.removeprefix("data:image/png;base64,"), validate=True)
    )
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
    return width, height


# (a) ------------------------------------------------------------------------------------------


def test_feature_names_are_escaped_everywhere() -> None:
    names = (NASTY, "PM₂.₅ µg/m³", "price in $", *feature_names(5))
    # The nasty name is the most important one, so it is also in the charts' alt text.
    document = render_report(make_input(names, top=NASTY))

    assert "<script" not in document.lower()
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;q&#39;"
    assert escaped in document
    alts = re.findall(r'<img[^>]*\salt="([^"]*)"', document)
    # a bar chart and a rank-change chart per method, both naming the top feature
    assert len(alts) == 2 * len(METHODS)
    assert sum(escaped in alt for alt in alts) >= len(METHODS)
    assert "PM₂.₅ µg/m³" in document
    assert NASTY in visible_text(document)


def test_model_name_is_escaped_in_title_and_heading() -> None:
    report_input = make_input(feature_names(4))
    current = report_input.current
    renamed = AuditSummary(
        model_name="<b>bold</b> & co",
        week=current.week,
        run_id=current.run_id,
        model=current.model,
        n_eval_samples=current.n_eval_samples,
        eval_source=current.eval_source,
        outcomes=current.outcomes,
    )
    document = render_report(ReportInput(renamed, report_input.previous, report_input.comparisons))
    assert "<b>bold" not in document
    title = re.search(r"<title>(.*?)</title>", document, flags=re.S)
    assert title is not None
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in title.group(1)
    assert "<h1>&lt;b&gt;bold&lt;/b&gt; &amp; co</h1>" in document


def test_chart_labels_are_drawn_literally() -> None:
    # Parsed as mathtext, this label would raise (an unfinished \frac); escaped, it is drawn.
    assert chart_label(r"$\frac{$") == r"\$\frac{\$"
    assert chart_label("a\nb\tc") == "a b c"
    long_label = chart_label("warehouse_feature_" + "x" * 60 + "_v2")
    assert len(long_label) == MAX_LABEL_CHARS
    assert long_label.startswith("warehouse_feature_")
    assert "…" in long_label
    assert long_label.endswith("_v2")
    importance = Importance(
        method="weights",
        feature_names=(r"$\frac{$", "cost $ per $ unit", "PM₂.₅ µg/m³"),
        values=np.array([3.0, 2.0, 1.0]),
    )
    assert png_size(importance_bars(importance, top_n=30))[0] == 700


# (b) ------------------------------------------------------------------------------------------


def test_many_features_chart_the_top_n_and_table_the_rest() -> None:
    context = build_context(make_input(feature_names(85)), top_n=30)
    document = render_context(context)

    assert len(img_sources(document)) == 2 * len(METHODS)  # bars and rank changes
    assert "55 more in the table below" in visible_text(document)
    folded = re.findall(r"<summary>55 more features</summary>(.*?)</details>", document, flags=re.S)
    assert len(folded) == len(METHODS)
    for section, block in zip(context.sections, folded, strict=True):
        listed = re.findall(r'<td class="n">(feat_\d{3})</td>', block)
        assert len(listed) == 55
        charted = {c.feature for c in section.rest}
        assert set(listed) == charted
        # The table holds exactly the features the chart leaves out: ranks 31 to 85.
        assert [row.rank for row in section.rest] == list(range(31, 86))


def test_heatmap_of_weeks_with_no_feature_in_common_draws_without_warnings() -> None:
    # Every feature is new or removed: the difference panel is all NaN (its colour limit falls back).
    current = np.array([[1.0, np.nan], [2.0, np.nan]])
    previous = np.array([[np.nan, 3.0], [np.nan, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = profile_heatmaps(("new", "gone"), current, previous, current_label="now", previous_label="then")
    assert png.startswith(PNG_MAGIC)


def test_chart_height_grows_with_the_number_of_bars() -> None:
    importance = make_importance("weights", feature_names(40), seed=1)
    previous = make_importance("weights", feature_names(40), seed=2)
    small = png_size(importance_bars(importance, previous, top_n=8))
    large = png_size(importance_bars(importance, previous, top_n=32))
    assert small[0] == large[0] == 700
    # At least 25 px per feature row: 11 pt labels are about 15 px high at 100 dpi.
    assert large[1] - small[1] >= 24 * 25


def test_headline_has_one_line_per_method() -> None:
    report_input = make_input(feature_names(20))
    text = visible_text(render_report(report_input))
    for comparison in report_input.comparisons:
        shared = round((comparison.top_k_overlap or 0) * comparison.top_k)
        line = (
            f"{comparison.method}: Spearman {comparison.spearman:.2f}, "
            f"Kendall {format_correlation(comparison.kendall)}, nDCG {format_correlation(comparison.ndcg)}, "
            f"top-{comparison.top_k} overlap {shared}/{comparison.top_k}"
        )
        assert line in text
    assert f"week {WEEK.isoformat()}, compared with the drop of week {PREVIOUS_WEEK}" in text


def test_movers_table_lists_the_biggest_relative_changes() -> None:
    report_input = make_input(feature_names(20))
    context = build_context(report_input, movers=4)
    comparison = report_input.comparisons[0]
    section = context.sections[0]
    expected = [c.feature for c in comparison.biggest_movers[:4]]
    assert [row.feature for row in section.movers] == expected
    document = render_context(context)
    assert document.count("Biggest movers") == len(METHODS)
    first = comparison.biggest_movers[0]
    assert first.relative_change is not None
    assert format_percent(first.relative_change) in document


# (c) ------------------------------------------------------------------------------------------


def test_first_drop_has_nothing_to_compare() -> None:
    report_input = make_input(feature_names(12), first_drop=True)
    document = render_report(report_input)
    text = visible_text(document)

    assert "First audited drop: nothing to compare yet." in text
    assert "Biggest movers" not in document
    assert "Spearman" not in text
    assert len(img_sources(document)) == len(METHODS)
    context = build_context(report_input)
    assert context.previous_week is None
    assert all(not s.has_previous and not s.movers for s in context.sections)
    assert all("against" not in s.chart.alt and s.slope is None for s in context.sections)


# (d) ------------------------------------------------------------------------------------------


def test_skipped_and_failed_methods_are_listed_with_reasons() -> None:
    not_run = (
        MethodOutcome("permutation", MethodStatus.SKIPPED, reason=SKIP_REASON, seconds=0.0),
        MethodOutcome("integrated_gradients", MethodStatus.FAILED, reason="NaN gradients & <inf>"),
    )
    report_input = make_input(feature_names(6), methods=("weights",), not_run=not_run)
    document = render_report(report_input)
    text = visible_text(document)

    assert f"permutation skipped: {SKIP_REASON}" in text
    assert "integrated_gradients failed: NaN gradients & <inf>" in text
    assert "NaN gradients &amp; &lt;inf&gt;" in document
    assert len(img_sources(document)) == 2  # the one method's bars and rank changes


# (e) ------------------------------------------------------------------------------------------


def test_images_are_inline_pngs_and_nothing_is_fetched() -> None:
    document = render_report(make_input(feature_names(40)), top_n=30)

    sources = img_sources(document)
    assert len(sources) == 2 * len(METHODS)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert png_size(src)[0] == 700
    # the bar charts (first of each method) hold 30 features
    assert all(png_size(src)[1] > 30 * 25 for src in sources[::2])
    assert "http://" not in document
    assert "https://" not in document
    assert "<script" not in document
    assert "<link" not in document


# (f) ------------------------------------------------------------------------------------------


def test_write_report_is_atomic_and_dated(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    path = write_report("<p>first</p>", out, WEEK)
    assert path == out / "2024-05-13" / "report.html"
    assert path.read_text(encoding="utf-8") == "<p>first</p>"

    again = write_report("<p>second ✓</p>", out, WEEK)
    assert again == path
    assert path.read_text(encoding="utf-8") == "<p>second ✓</p>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


# (g) ------------------------------------------------------------------------------------------


def test_rendering_never_imports_pyplot() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_report import feature_names, make_input
        from reports.render import render_report
        document = render_report(make_input(feature_names(35)))
        assert "<img" in document
        loaded = sorted(m for m in sys.modules if m.startswith("matplotlib.pyplot"))
        print("pyplot modules:", loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pyplot modules: []" in result.stdout


# Filters and arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (0.93456, "0.935"),
        (12.345, "12.3"),
        (4567.8, "4,568"),
        (-0.0012345, "-0.00123"),
        (1.5e-7, "1.50e-07"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_format_number(value: float | None, expected: str) -> None:
    assert format_number(value) == expected


def test_profile_shift_in_steps_reads_rounding_as_zero() -> None:
    assert format_steps(2.54e-17) == "0"
    assert format_steps(2.5417) == "2.54"
    assert format_steps(None) == "—"


def test_signed_percent_and_seconds() -> None:
    assert format_signed(0.0123) == "+0.0123"
    assert format_signed(-4.56) == "-4.56"
    assert format_percent(0.123) == "+12.3%"
    assert format_percent(None) == "—"
    assert format_seconds(0.42) == "0.42 s"
    assert format_seconds(125) == "2 min 05 s"


def test_bad_arguments_name_the_value() -> None:
    report_input = make_input(feature_names(3))
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        build_context(report_input, top_n=0)
    with pytest.raises(ValueError, match="movers must be 0 or more"):
        build_context(report_input, movers=-1)


# (d) drift verdicts --------------------------------------------------------------------------


def _with_drift(names: Sequence[str], collapsed: str | None) -> ReportInput:
    """Both weeks from the same importances; `collapsed` falls 98% this week in every method."""
    previous = [make_importance(m, names, seed=i) for i, m in enumerate(METHODS)]
    current = []
    for importance in previous:
        values = importance.values.copy()
        if collapsed is not None:
            values[list(names).index(collapsed)] *= 0.02
        current.append(dataclasses.replace(importance, values=values, std=0.1 * values))
    now, before = make_summary(WEEK, current), make_summary(PREVIOUS_WEEK, previous, run_id=6)
    return ReportInput(
        current=now,
        previous=before,
        comparisons=compare_audits(now, before),
        assessment=assess_drift(now, before),
    )


def test_alert_banner_and_what_changed_table_name_the_feature_escaped() -> None:
    names = (NASTY, *feature_names(6))
    document = render_report(_with_drift(names, collapsed=NASTY))
    text = visible_text(document)
    assert "<script" not in document.lower()
    assert 'class="verdict verdict-alert"' in document
    assert f"ALERT: 1 feature changed beyond noise: {NASTY}: " in text
    # 98% of the raw value, about 94% relative to the method's median change
    assert re.search(r"importance fell 9\d% \(noise band -\d\d% to \+\d\d\d%\), 2 of 2 methods agree", text)
    assert "Overview" in text
    table = text.split("Overview")[1]
    # the collapsed feature leads the overview, beyond its band in both methods, and is "changed"
    assert re.search(re.escape(NASTY) + r" perm −\d+\.\d IG −\d+\.\d \d+ \(\d+\) changed", table), table[:300]
    assert "no history yet: default noise bands" in text
    assert "; * beyond the band." in text


def test_a_value_that_doubled_reads_plus_100_percent_with_its_band_moved_too() -> None:
    """Every feature doubled: the rule sees no change (its centred change is 0), and the movers
    table says what happened to each value, +100%, with the band said on that change (centred near
    a doubling), not -0.9%."""
    names = feature_names(6)
    previous = [make_importance(m, names, seed=i) for i, m in enumerate(METHODS)]
    current = [dataclasses.replace(i, values=2 * i.values, std=0.1 * i.values) for i in previous]
    now, before = make_summary(WEEK, current), make_summary(PREVIOUS_WEEK, previous, run_id=6)
    report_input = ReportInput(now, before, compare_audits(now, before), assess_drift(now, before))
    context = build_context(report_input)
    rows = [row for section in context.sections for row in section.movers]
    assert rows and all(row.relative_change == pytest.approx(1.0) for row in rows)
    judged = [row for row in rows if row.band is not None]
    assert judged and not any(row.beyond_noise for row in rows)
    for row in judged:
        low, high = (float(edge.rstrip("%")) / 100 for edge in row.band.split(" to "))
        assert low < 1.0 < high  # the band holds the doubling it was moved by
    text = visible_text(render_context(context))
    assert "+100%" in text and "Change %: this week's value against last week's" in text


def test_an_ok_report_says_what_the_audit_would_have_seen_and_gives_copies_advice() -> None:
    document = render_report(_with_drift(feature_names(6), collapsed=None))
    text = visible_text(document)
    assert "this week the audit would have seen" in text
    assert "of a method's importance are not judged" in text
    # no history and no copies: the noise cannot be split yet
    assert "Copies advice: not estimable yet" in text
    # advice for whoever owns the retraining: in the report, not in the weekly e-mail's summary
    context = build_context(_with_drift(feature_names(6), collapsed=None))
    email_text = visible_text(render_context(context, email=True))
    assert "this week the audit would have seen" in email_text
    assert "Copies advice" not in email_text


def test_no_change_is_an_ok_banner_without_a_table() -> None:
    document = render_report(_with_drift(feature_names(6), collapsed=None))
    text = visible_text(document)
    assert 'class="verdict verdict-ok"' in document
    assert "OK: no feature moved beyond its noise band in 2 methods" in text
    assert "What changed" not in text


def test_clarify_compatible_ndcg_beside_the_verdict_and_saliency_directions_as_signs() -> None:
    """Issue 18: gradient_shap's nDCG is labelled Clarify-compatible, with Clarify's own call (alert
    below 0.90) beside this tool's verdict; saliency's magnitudes carry their direction's sign."""
    names = feature_names(12)
    current = [make_importance(m, names, seed=i) for i, m in enumerate(("permutation", "gradient_shap"))]
    previous = [
        make_importance(m, names, seed=50 + i) for i, m in enumerate(("permutation", "gradient_shap"))
    ]
    directions = np.where(np.arange(12) % 2 == 0, 1.0, -1.0) * current[0].values
    saliency = dataclasses.replace(make_importance("saliency", names, seed=9), direction=directions)
    now = make_summary(WEEK, [*current, saliency])
    before = make_summary(PREVIOUS_WEEK, [*previous, make_importance("saliency", names, seed=59)], run_id=6)
    comparisons = compare_audits(now, before)
    report_input = ReportInput(now, before, comparisons, assessment=assess_drift(now, before))
    ndcg = next(c.ndcg for c in comparisons if c.method == "gradient_shap")
    assert ndcg is not None
    text = visible_text(render_report(report_input))
    rule = "alert" if ndcg < 0.90 else "ok"
    assert (
        f"Clarify-compatible nDCG (GradientSHAP ranking against last week's, SageMaker Clarify's formula): "
        f"{format_correlation(ndcg)}: Clarify's rule would say {rule} (it alerts below 0.90)"
    ) in text
    assert f"nDCG (Clarify-compatible) {format_correlation(ndcg)}" in text
    assert (
        "permutation: Spearman" in text
        and "nDCG (Clarify-compatible)" not in text.split("permutation:")[1][:80]
    )
    context = build_context(report_input, top_n=4)
    section = next(s for s in context.sections if s.method == "saliency")
    signs = {row.feature: row.sign for row in (*section.movers, *section.rest)}
    assert section.has_direction and signs
    assert all(signs[name] == ("+" if i % 2 == 0 else "−") for i, name in enumerate(names) if name in signs)
    assert context.clarify is not None and context.clarify.alert == (ndcg < 0.90)
