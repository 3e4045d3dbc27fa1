"""The two documents of the report (standalone file and email body) from one context, on a sequence
model with many features and methods: content, image sources, the email size bound, escaping,
speed and memory.

The input is tests.report_builders.sequence_input (synthetic, no Keras): 90 features, 24 steps,
8 methods, with time profiles, a drift call, a frozen-set scoring, reseeded copies, history and
skipped weeks.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import html as html_lib
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.types import Importance
from reports.charts import png_size
from reports.context import build_context
from reports.email import inline_css
from reports.render import EMAIL_OVERVIEW_ROWS, render_context, render_outputs, render_report
from reports.rendered import RenderedReport
from reports.sections import rank_changes
from tests.report_builders import (
    COLLAPSED,
    METHODS,
    PROFILE_METHODS,
    WEEK,
    names_with,
    sequence_input,
)

__all__ = ["sequence_input"]  # re-exported: tests/test_email.py imports it from here

NASTY = "<script>alert(\"x\")</script> & 'q' $\\frac{$"
UNICODE = "PM₂.₅ µg/m³ — Δt°"
#: Gmail clips a message whose HTML is larger than about 102 KB.
EMAIL_HTML_LIMIT = 102_000


def img_tags(document: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", document)


def attribute(tag: str, name: str) -> str:
    match = re.search(rf'\s{name}="([^"]*)"', tag)
    assert match is not None, f"{name} missing in {tag[:200]}"
    return match.group(1)


def visible_text(document: str) -> str:
    without_style = re.sub(r"<style.*?</style>", " ", document, flags=re.S)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", without_style))
    return " ".join(text.split())


@pytest.fixture(scope="module")
def rendered() -> RenderedReport:
    report_input = sequence_input(specials=(NASTY, UNICODE))
    wall, cpu = time.perf_counter(), time.process_time()
    result = render_outputs(report_input)
    print(
        f"render_outputs, 90 features x 24 steps x 8 methods, {len(result.images)} charts: "
        f"{time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU"
    )
    return result


# Content --------------------------------------------------------------------------------------


def test_every_part_of_the_report_is_there(rendered: RenderedReport) -> None:
    context = rendered.context
    text = visible_text(rendered.html)
    # 1. headline: skipped weeks, verdict, the collapsed feature named
    assert "No drop for 2026-03-09, 2026-03-16: compared with the latest earlier drop (2026-03-02)." in text
    assert context.verdict == "alert"
    collapsed = names_with(90, (NASTY, UNICODE))[COLLAPSED]
    assert collapsed in context.verdict_reason
    assert [row.feature for row in context.verdict_rows][:1] == [collapsed]
    # 2. per method with values: bars and a slope chart (grad_cam has no per-feature values)
    assert [s.method for s in context.sections] == [m for m in METHODS if m != "grad_cam"]
    assert all(s.slope is not None for s in context.sections)
    assert all(s.n_slope_beyond >= 1 for s in context.sections if s.method != "weight_sum")
    # 3. time profiles: heat maps for per-feature profiles, lag lines for all, grad_cam included
    assert [p.method for p in context.profiles] == [*PROFILE_METHODS, "grad_cam"]
    assert [p.heatmap is not None for p in context.profiles] == [True, True, True, False]
    assert all(p.has_previous and p.n_steps == 24 for p in context.profiles)
    # 4. history: one section per method, the last 12 of 14 weeks
    assert len(context.history) == 7
    assert all(h.n_weeks == 12 and h.last_week == WEEK and h.n_gaps == 2 for h in context.history)
    # 5. frozen set: the collapsed feature first, blamed on the model
    assert context.frozen
    first = context.frozen[0].rows[0]
    assert first.feature == collapsed and first.changed and first.cause == "model"
    assert "Model or data? (frozen set)" in text
    # 6. model facts
    assert "mse 0.0123, r2 0.871 (2,000 rows)" in text
    assert "median |Δ| 0.42%, max 3.1% of F(x) − F(baseline); 64 steps (raised from 32)" in text
    assert "2: model_seed1.keras, model_seed2.keras" in text
    assert "garson skipped: not a plain Dense stack (first layer GRU)" in text


def test_evaluation_not_measured_and_no_missing_weeks_line() -> None:
    report_input = dataclasses.replace(
        sequence_input(n_features=8, n_steps=6, methods=("permutation",)), missing_weeks=()
    )
    report_input = dataclasses.replace(
        report_input, current=dataclasses.replace(report_input.current, evaluation=None)
    )
    text = visible_text(render_report(report_input))
    assert "Fit on the eval sample not measured" in text
    assert "No drop for" not in text


def test_rank_changes_take_either_weeks_top_and_mark_flagged() -> None:
    names = ("a", "b", "c", "d", "e")
    now = Importance("m", names, np.array([5.0, 4.0, 3.0, 2.0, 1.0]))
    before = Importance("m", ("e", "b", "c", "d", "x"), np.array([9.0, 4.0, 3.0, 2.0, 8.0]))
    changes = rank_changes(now, before, top=2, beyond_noise=frozenset({"e"}))
    assert [(c.feature, c.previous_rank, c.rank, c.beyond_noise) for c in changes] == [
        ("a", None, 1, False),
        ("b", 3, 2, False),
        ("e", 1, 5, True),
        ("x", 2, None, False),
    ]
    with pytest.raises(ValueError, match="top must be at least 1"):
        rank_changes(now, before, top=0)


# Two documents, one context --------------------------------------------------------------------


def test_images_are_data_uris_in_the_file_and_cids_in_the_email(rendered: RenderedReport) -> None:
    images = rendered.images
    cids = [image.cid for image in images]
    # n-th chart of run 41, with its PNG's digest: unique across weeks (mail clients cache by CID)
    assert cids == [
        f"chart-{n}.run41.{hashlib.sha256(image.png).hexdigest()[:12]}@drift-audit"
        for n, image in enumerate(images, start=1)
    ]
    assert len(set(cids)) == len(cids)
    assert all(re.fullmatch(r"[A-Za-z0-9.@-]+", cid) for cid in cids)
    # the e-mail shows the 3 feature cards; the file every chart: the cards, 7 bar + 7 slope charts,
    # 3 heat maps + 4 lag charts, 7 history charts
    charts = rendered.context.charts
    assert len(images) == len(rendered.context.cards) == 3
    assert len(charts) == 3 + 7 + 7 + 3 + 4 + 7
    assert [image.cid for image in images] == [chart.cid for chart in charts[:3]]
    file_tags, email_tags = img_tags(rendered.html), img_tags(rendered.email_html)
    assert len(file_tags) == len(charts) and len(email_tags) == len(images)
    for chart, file_tag in zip(charts, file_tags, strict=True):
        assert attribute(file_tag, "src").startswith("data:image/png;base64,")
        assert (attribute(file_tag, "width"), attribute(file_tag, "height")) == (
            str(chart.width),
            str(chart.height),
        )
        assert html_lib.unescape(attribute(file_tag, "alt")) == chart.alt
    for image, email_tag in zip(images, email_tags, strict=True):
        assert attribute(email_tag, "src") == f"cid:{image.cid}"
        width, height = png_size(image.png)
        assert width == 700 and height > 100
        assert (attribute(email_tag, "width"), attribute(email_tag, "height")) == (str(width), str(height))
        assert html_lib.unescape(attribute(email_tag, "alt")) == image.alt
    assert "data:" not in rendered.email_html
    assert "cid:" not in rendered.html


def test_same_input_gives_the_same_bytes() -> None:
    report_input = sequence_input(n_features=12, n_steps=8, methods=("permutation", "integrated_gradients"))
    first, second = render_outputs(report_input), render_outputs(report_input)
    assert first.email_html == second.email_html and first.html == second.html
    assert [i.png for i in first.images] == [i.png for i in second.images]


def test_no_external_resources_scripts_or_layout_the_inliner_cannot_keep(rendered: RenderedReport) -> None:
    for document in (rendered.html, rendered.email_html):
        lowered = document.lower()
        assert "<script" not in lowered and "<link" not in lowered
        assert "http://" not in lowered and "https://" not in lowered
        assert lowered.count("<style") == 1 and lowered.index("<style") < lowered.index("</head>")
        style = re.search(r"<style>(.*?)</style>", document, flags=re.S)
        assert style is not None
        for forbidden in ("var(--", "display: flex", "display: grid", "display:flex", "display:grid"):
            assert forbidden not in style.group(1)
        assert "max-width: 700px" in style.group(1)
        assert "word-break: break-word" in style.group(1)


# Size --------------------------------------------------------------------------------------------


def test_email_html_stays_under_gmails_clipping_size(rendered: RenderedReport) -> None:
    size = len(rendered.email_html.encode("utf-8"))
    print(f"email HTML: {size:,} bytes (file: {len(rendered.html.encode()):,} bytes with images)")
    assert size < EMAIL_HTML_LIMIT
    # The e-mail is a summary: no per-method details, the overview cut; the file folds them.
    assert "<details" not in rendered.email_html
    assert rendered.html.count('<details class="method">') == len(rendered.context.sections)
    assert "more features in the full report" in visible_text(rendered.email_html)


def test_email_html_with_css_inlined_stays_under_the_bound(rendered: RenderedReport) -> None:
    inlined = inline_css(rendered.email_html)
    size = len(inlined.encode("utf-8"))
    print(f"email HTML with CSS inlined: {size:,} bytes")
    assert size < EMAIL_HTML_LIMIT


def test_email_tables_are_cut_with_a_count_of_the_rest() -> None:
    # Every feature collapses or is new: a long "What changed" table.
    report_input = sequence_input(
        n_features=40, n_steps=6, methods=("permutation", "perturbation", "weight_sum")
    )
    current = report_input.current
    renamed = tuple(
        dataclasses.replace(
            o,
            importance=dataclasses.replace(
                o.importance, feature_names=tuple(f"renamed_{n}" for n in o.importance.feature_names)
            ),
        )
        if o.importance is not None
        else o
        for o in current.outcomes
    )
    current = dataclasses.replace(current, outcomes=renamed, frozen=None)
    report_input = dataclasses.replace(
        report_input,
        current=current,
        comparisons=compare_audits(current, report_input.previous),  # type: ignore[arg-type]
        assessment=assess_drift(current, report_input.previous),  # type: ignore[arg-type]
    )
    context = build_context(report_input)
    n_rows = len(context.overview)
    assert n_rows == 80 and {row.verdict for row in context.overview} == {"new", "removed"}
    email = render_context(context, email=True)
    table = email.split(">Overview</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == EMAIL_OVERVIEW_ROWS + 1  # header + rows
    assert f"… and {n_rows - EMAIL_OVERVIEW_ROWS} more features in the full report." in visible_text(email)
    standalone = render_context(context).split(">Overview</h2>")[1].split("</details>")[0]
    assert standalone.count("<tr>") == n_rows + 1  # 20 rows, then the other 60 folded
    assert f"<summary>{n_rows - context.overview_rows} more features</summary>" in standalone
    # The per-method lists of new and removed features are whole in the file (the e-mail has none).
    section = context.sections[0]
    assert len(section.added) == len(section.removed) == 40
    for label, names in (("New this week", section.added), ("No longer in the model", section.removed)):
        assert f"{label}: {', '.join(names)}" in visible_text(render_context(context))
        assert label not in visible_text(email)
    inlined = inline_css(render_outputs(report_input).email_html)
    assert len(inlined.encode("utf-8")) < EMAIL_HTML_LIMIT


# Escaping ----------------------------------------------------------------------------------------


def test_nasty_names_are_escaped_in_text_alt_and_charts(rendered: RenderedReport) -> None:
    escaped = html_lib.escape(NASTY, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")
    for document in (rendered.html, rendered.email_html):
        assert "<script" not in document.lower()
        assert escaped in document
        assert UNICODE in document
        alts = [html_lib.unescape(attribute(tag, "alt")) for tag in img_tags(document)]
        if document is rendered.html:  # the e-mail's cards are of other features
            assert any(NASTY in alt for alt in alts)
            assert any(UNICODE in alt for alt in alts)
        # an attribute value never holds a raw angle bracket from a name (quotes end the regex match)
        for tag in img_tags(document):
            alt = attribute(tag, "alt")
            assert "<" not in alt and ">" not in alt, alt
    model_name = '<img src=x onerror="alert(1)">'
    small = render_outputs(
        sequence_input(
            n_features=6, n_steps=4, specials=(NASTY,), methods=("permutation",), model_name=model_name
        )
    )
    for document in (small.html, small.email_html):
        assert "<img src=x" not in document
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in document


# Speed and memory ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Year:
    """What a worker process saw rendering 52 weekly reports: its RSS after each report, the last
    report's charts, and the CPU time it took."""

    rss: tuple[int, ...]
    n_charts: int
    n_cards: int
    n_images: int
    has_slope: bool
    has_heatmap: bool
    n_history: int
    cpu_seconds: float


def _render_a_year() -> _Year:
    """Render 52 weekly reports in this process, collecting garbage after each (run in a fresh one).

    The cheapest input that still draws each kind of chart once: 5 features (the builder's collapsed
    feature and its shifted neighbour need 5), 4 steps, one profile method.
    """
    report_input = sequence_input(n_features=5, n_steps=4, methods=("integrated_gradients",))
    rss = []
    started = time.process_time()
    for _ in range(52):
        rendered = render_outputs(report_input)
        gc.collect()
        rss.append(_rss_bytes())
    context = rendered.context
    return _Year(
        rss=tuple(rss),
        n_charts=len(context.charts),
        n_cards=len(context.cards),
        n_images=len(rendered.images),
        has_slope=context.sections[0].slope is not None,
        has_heatmap=context.profiles[0].heatmap is not None,
        n_history=len(context.history),
        cpu_seconds=time.process_time() - started,
    )


@pytest.mark.slow
def test_rendering_52_weekly_reports_does_not_grow_memory() -> None:
    """Charts are freed: RSS after report 52 is close to RSS after report 10 (the warm-up).

    A year of weekly reports in one worker process; each has every kind of chart (bars, rank
    changes, heat maps, lag lines, history). The process is a fresh one that only renders, as a
    report worker is: its RSS is the reports' alone, and each `gc.collect()` walks the objects of
    the rendering, not those of the whole test run (TensorFlow, Prefect: several seconds per
    report there).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as worker:
        year = worker.submit(_render_a_year).result(timeout=600)
    # bars, rank changes, heat map, lag lines, history, and the feature cards (the e-mail's images)
    assert year.n_charts == 5 + year.n_cards and year.n_images == year.n_cards
    assert year.has_slope and year.has_heatmap
    assert year.n_history == 1
    print(f"52 reports: {year.cpu_seconds:.1f} s CPU")
    rss = year.rss
    growth = rss[51] - rss[9]
    print(f"RSS after report 10: {rss[9] / 2**20:.1f} MiB, after 52: {rss[51] / 2**20:.1f} MiB")
    assert growth < 10 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB from report 10 to 52"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
