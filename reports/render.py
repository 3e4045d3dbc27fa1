"""Render the weekly report to a self-contained HTML file and an email body, and write it atomically.

One `ReportContext` (charts drawn once, as PNG bytes) is rendered twice by the same template: the
standalone file carries the images as ``data:`` URIs, the email refers to them as ``cid:`` parts.
The template writes every image source through `image_src`, so the two never differ otherwise
than in how images are referenced and in how long tables are folded (the email must stay under
Gmail's clipping size, about 102 KB, so its tables stop after `EMAIL_TABLE_ROWS` rows).

The Jinja environment escapes everything (`autoescape=True`, not `select_autoescape`): feature
names come from users' data and may hold markup. Number formatting lives in the filters below,
registered on the environment, so the template only says which filter a value needs.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import jinja2

from audit.types import ReportInput
from reports.context import build_context
from reports.context_types import Chart, ReportContext
from reports.rendered import InlineImage, RenderedReport
from reports.sections import HISTORY_WEEKS

TEMPLATE = "report.html"
#: Shown for a figure that does not exist (first drop, feature missing in one week, NaN).
MISSING = "—"
SIGNIFICANT_DIGITS = 3
HASH_CHARS = 12
#: Rows of a long table in the email (the standalone file folds the rest into <details>).
EMAIL_TABLE_ROWS = 10
#: Rows of the overview in the e-mail: with 3 feature cards, about 3 phone screens in all.
EMAIL_OVERVIEW_ROWS = 7


def render_report(report_input: ReportInput, *, top_n: int = 30) -> str:
    """The standalone HTML document of the report of `report_input.current` (images as data URIs)."""
    return render_context(build_context(report_input, top_n=top_n))


def render_outputs(
    report_input: ReportInput,
    *,
    top_n: int = 30,
    movers: int = 10,
    history_weeks: int = HISTORY_WEEKS,
    report_link: str | None = None,
    report_attached: bool = True,
) -> RenderedReport:
    """Both documents of the report, from one context: the standalone file and the email body.

    The charts are drawn once. The e-mail is a summary (verdict, overview, the cards of the
    most-changed features, a link to the full report or a word that it is attached): `images`
    holds the charts it shows, each with the Content-ID its ``cid:`` sources name.
    """
    context = build_context(
        report_input,
        top_n=top_n,
        movers=movers,
        history_weeks=history_weeks,
        report_link=report_link,
        report_attached=report_attached,
    )
    return RenderedReport(
        context=context,
        html=render_context(context),
        email_html=render_context(context, email=True),
        images=tuple(
            InlineImage(cid=card.chart.cid, png=card.chart.png, alt=card.chart.alt) for card in context.cards
        ),
    )


def render_context(context: ReportContext, *, email: bool = False) -> str:
    """Render an already gathered `ReportContext` (the template sees its fields as variables).

    `email=False`: the standalone document, images as data URIs, long tables folded into
    <details>. `email=True`: images as ``cid:`` references, long tables cut after
    `EMAIL_TABLE_ROWS` rows with a line saying how many more the report file holds.
    """
    variables: dict[str, object] = {field.name: getattr(context, field.name) for field in fields(context)}
    variables.update(
        email=email,
        fold=EMAIL_TABLE_ROWS,
        overview_fold=EMAIL_OVERVIEW_ROWS,
        image_src=cid_source if email else data_uri_source,
    )
    return _environment().get_template(TEMPLATE).render(**variables)


def data_uri_source(chart: Chart) -> str:
    """An image source that carries the PNG itself (the standalone file opens offline)."""
    return "data:image/png;base64," + base64.b64encode(chart.png).decode("ascii")


def cid_source(chart: Chart) -> str:
    """An image source naming the email's inline part (Gmail does not show data: images)."""
    return f"cid:{chart.cid}"


def write_report(html: str, out_dir: Path, week: dt.date, *, file_name: str = "report.html") -> Path:
    """Write `html` to `<out_dir>/<YYYY-MM-DD>/<file_name>` and return that path.

    The file is written to a temporary file in the same folder and moved into place with
    `os.replace`, so a reader never sees a half-written report and a failed write leaves the
    previous report (if any) untouched.
    """
    target_dir = Path(out_dir) / week.isoformat()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / file_name
    fd, temp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{target.stem}.", suffix=".html.tmp")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as temp_file:
            temp_file.write(html)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        temp_path.chmod(0o644)  # mkstemp creates 0600; a report is meant to be read by others
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return target


@functools.cache
def _environment() -> jinja2.Environment:
    return make_environment(autoescape=True)


def make_environment(*, autoescape: bool) -> jinja2.Environment:
    """A Jinja environment over reports/templates with the number-formatting filters below.

    The HTML report escapes everything (`autoescape=True`); the e-mail's plain-text part must not
    (it would show "&lt;") and strips control characters with a filter of its own instead.
    """
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        num=format_number,
        signed=format_signed,
        pct=format_percent,
        corr=format_correlation,
        count=format_count,
        seconds=format_seconds,
        shape=format_shape,
        short_hash=format_short_hash,
        rank=format_rank,
        rank_move=format_rank_move,
        overlap=format_overlap,
        dates=format_dates,
        fraction_pct=format_fraction_percent,
        steps=format_steps,
        units=format_units,
        median_rank=format_median_rank,
        psi=format_psi,
    )
    return environment


def format_number(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> str:
    """`value` with `digits` significant digits: 0.00123, 0.457, 12.3, 4,560; 1.23e-05 when tiny."""
    if value is None or math.isnan(value):
        return MISSING
    if value == 0:
        return "0"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = math.floor(math.log10(abs(value)))
    if not -4 <= magnitude < 9:
        return f"{value:.{digits - 1}e}"
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f}"


def format_steps(value: float | None) -> str:
    """A shift of a time profile in steps, to two decimals: an EMD of 2.5e-17 is rounding, shown as 0."""
    if value is None or math.isnan(value):
        return MISSING
    rounded = round(value, 2)
    return "0" if rounded == 0 else f"{rounded:.2f}"


def format_signed(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> str:
    """Like `num`, with an explicit sign: +0.0123, -4.56, 0."""
    if value is None or math.isnan(value):
        return MISSING
    text = format_number(value, digits)
    return text if value <= 0 else f"+{text}"


def format_percent(fraction: float | None) -> str:
    """A relative change as a signed percentage: 0.123 -> +12.3%."""
    if fraction is None or math.isnan(fraction):
        return MISSING
    return f"{format_signed(fraction * 100)}%"


def format_correlation(value: float | None) -> str:
    """A correlation with two decimals (0.93); "n/a" where it could not be computed."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}"


def format_overlap(shared: int | None, k: int) -> str:
    """Features shared by both weeks' top k: "4/5"; "n/a" where it could not be computed."""
    return "n/a" if shared is None else f"{shared}/{k}"


def format_count(value: int | None) -> str:
    """An integer with thousands separators: 1,234,567."""
    return MISSING if value is None else f"{value:,}"


def format_seconds(seconds: float | None) -> str:
    """A duration: 0.42 s, 12.3 s, 2 min 05 s, 1 h 02 min."""
    if seconds is None or math.isnan(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_shape(shape: tuple[int | None, ...]) -> str:
    """A Keras shape, batch dimension included: (None, 82) -> "(batch, 82)"."""
    parts = ["batch" if size is None else str(size) for size in shape]
    return f"({', '.join(parts)})"


def format_short_hash(content_hash: str) -> str:
    """The first characters of a content hash (after an "algorithm:" prefix, if any)."""
    _, _, digest = content_hash.rpartition(":")
    return digest[:HASH_CHARS]


def format_rank(rank: int | None, missing: str = MISSING) -> str:
    """A rank as "#3"; `missing` (e.g. "new", "gone") where the feature has none."""
    return missing if rank is None else f"#{rank}"


def format_rank_move(rank_change: int | None) -> str:
    """Places gained or lost: ▲ 9 (moved up), ▼ 3 (moved down), = (same rank)."""
    if rank_change is None:
        return ""
    if rank_change == 0:
        return "="
    return f"▲ {rank_change}" if rank_change > 0 else f"▼ {-rank_change}"


def format_dates(weeks: tuple[dt.date, ...] | list[dt.date]) -> str:
    """Dates as a list: "2026-03-09, 2026-03-16"."""
    return ", ".join(week.isoformat() for week in weeks)


def format_fraction_percent(fraction: float | None) -> str:
    """A share as an unsigned percentage with 2 significant digits: 0.0123 -> 1.2%."""
    if fraction is None or math.isnan(fraction):
        return MISSING
    return f"{format_number(fraction * 100, 2)}%"


def format_units(units: float | None) -> str:
    """A change in units of its noise band, signed, one decimal: +1.8, −0.3 (a true minus sign)."""
    if units is None or math.isnan(units):
        return MISSING
    return f"{units:+.1f}".replace("-", "\u2212")


def format_median_rank(rank: float | None) -> str:
    """A median rank: "3", or "3.5" between two ranks; the missing mark when unranked."""
    if rank is None or math.isnan(rank):
        return MISSING
    return f"{rank:.0f}" if float(rank).is_integer() else f"{rank:.1f}"


def format_psi(value: float | None) -> str:
    """A population stability index with two decimals (0.41); the missing mark when not measured."""
    if value is None or math.isnan(value):
        return MISSING
    return f"{value:.2f}"
