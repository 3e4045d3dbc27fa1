"""The charts of the report's sections: drawn once from the gathered figures, numbered, described.

`reports.charts` draws a matplotlib figure into PNG bytes; this module decides what each section's
chart says in words (its alt text, read out by screen readers and shown when images are blocked)
and gives it a Content-ID in the order the charts are made (`ChartNumbers`), so the same report
always has the same Content-IDs. `reports.sections` chooses the features and figures to draw.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from audit.types import FloatArray, Importance
from reports.charts import (
    feature_card,
    history_sparklines,
    importance_bars,
    lag_profiles,
    png_size,
    profile_heatmaps,
    rank_slopes,
)
from reports.context_types import Chart, RankChange

#: Features named in a chart's alt text (read out by screen readers, shown when images are blocked).
ALT_TOP_FEATURES = 5
#: Content-ID of the n-th chart (1-based) of run `run_id`, with the first 12 hex digits of the PNG's
#: SHA-256: unique across weeks too (RFC 2392; mail clients cache inline parts by Content-ID), the same
#: for the same report, and safe in a URL and a MIME header.
CID_TEMPLATE = "chart-{n}.run{run_id}.{digest}@drift-audit"
#: How Grad-CAM's single profile column "*" (all features at once) is labelled in charts.
ALL_FEATURES_LABEL = "all features"
#: Legend labels of the two drops in the time-profile charts.
CURRENT_PROFILE_LABEL = "this week"
PREVIOUS_PROFILE_LABEL = "previous week"


class ChartNumbers:
    """Numbers charts in the order they are made, so Content-IDs are deterministic."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.charts: list[Chart] = []

    def add(self, png: bytes, alt: str) -> Chart:
        width, height = png_size(png)
        cid = chart_cid(len(self.charts) + 1, self.run_id, png)
        chart = Chart(cid, png, alt, width, height)
        self.charts.append(chart)
        return chart


def chart_cid(n: int, run_id: int, png: bytes) -> str:
    """The Content-ID of the `n`-th chart (1-based) of run `run_id`, whose bytes are `png`."""
    return CID_TEMPLATE.format(n=n, run_id=run_id, digest=hashlib.sha256(png).hexdigest()[:12])


def importance_chart(
    numbers: ChartNumbers,
    importance: Importance,
    previous: Importance | None,
    *,
    top_n: int,
    charted_names: list[str],
    current_week: dt.date,
    previous_week: dt.date | None,
) -> Chart:
    """Bars of the method's top `top_n` features (`charted_names`), beside last week's when given."""
    return numbers.add(
        importance_bars(
            importance,
            previous,
            top_n=top_n,
            current_label=_week_label("this week", current_week),
            previous_label=_week_label("previous", previous_week),
        ),
        _importance_alt(
            importance.method,
            charted_names,
            len(importance.feature_names),
            current_week=current_week,
            previous_week=previous_week,
        ),
    )


def slope_chart(
    numbers: ChartNumbers,
    method: str,
    changes: Sequence[RankChange],
    *,
    top: int,
    previous_week: dt.date,
) -> Chart:
    """Lines from last week's rank to this week's of the features in either week's top `top`."""
    png = rank_slopes(
        [c.feature for c in changes],
        [c.previous_rank for c in changes],
        [c.rank for c in changes],
        [c.beyond_noise for c in changes],
        previous_label=_week_label("previous", previous_week),
        current_label="this week",
        max_rank=2 * top,
    )
    moved = [c.feature for c in changes if c.beyond_noise]
    alt = (
        f"Slope chart of {method} ranks, previous week to this week, for the top "
        f"{top} features of either week. "
        + (
            f"Beyond noise: {', '.join(moved[:ALT_TOP_FEATURES])}."
            if moved
            else "No feature moved beyond noise."
        )
    )
    return numbers.add(png, alt)


def heatmap_chart(
    numbers: ChartNumbers,
    method: str,
    shown: list[str],
    current: FloatArray,
    previous: FloatArray | None,
) -> Chart:
    """Heat maps (step x feature) of the `shown` features' profile columns, and their difference."""
    return numbers.add(
        profile_heatmaps(
            shown,
            current,
            previous,
            current_label=CURRENT_PROFILE_LABEL,
            previous_label=PREVIOUS_PROFILE_LABEL,
        ),
        f"Heat maps of {method} attribution by step and feature ({len(shown)} most important features: "
        f"{', '.join(shown[:ALT_TOP_FEATURES])})"
        + (", this week, previous week and their difference." if previous is not None else ", this week."),
    )


def lag_chart(
    numbers: ChartNumbers,
    method: str,
    features: list[str],
    current: FloatArray,
    previous: FloatArray | None,
    *,
    whole_input: bool,
) -> Chart:
    """One line per feature of its attribution at each step; `whole_input`: Grad-CAM's one column."""
    # Grad-CAM's map covers every feature at once: its one column is named for that
    drawn = [ALL_FEATURES_LABEL] * len(features) if whole_input else features
    n_steps = int(current.shape[0])
    return numbers.add(
        lag_profiles(
            drawn,
            current,
            previous,
            current_label=CURRENT_PROFILE_LABEL,
            previous_label=PREVIOUS_PROFILE_LABEL,
        ),
        f"Line charts of {method} attribution at each of {n_steps} steps for "
        f"{', '.join(drawn)}" + (", this week against the previous week." if previous is not None else "."),
    )


def history_chart(
    numbers: ChartNumbers, method: str, names: list[str], weeks: Sequence[dt.date], values: FloatArray
) -> Chart:
    """Small multiples of each named feature's importance over `weeks` (`values`: weeks x features)."""
    return numbers.add(
        history_sparklines(names, weeks, values, method=method),
        f"Small line charts of {method} importance over {len(weeks)} weeks "
        f"({weeks[0].isoformat()} to {weeks[-1].isoformat()}) for {', '.join(names[:ALT_TOP_FEATURES])}"
        + (f" and {len(names) - ALT_TOP_FEATURES} more." if len(names) > ALT_TOP_FEATURES else "."),
    )


def _week_label(word: str, week: dt.date | None) -> str:
    return word if week is None else f"{word} ({week.isoformat()})"


def _importance_alt(
    method: str,
    charted_names: list[str],
    n_features: int,
    *,
    current_week: dt.date,
    previous_week: dt.date | None,
) -> str:
    """Plain-text description of a chart (the template escapes it into the alt attribute)."""
    shown = (
        f"all {n_features} features"
        if len(charted_names) == n_features
        else f"the top {len(charted_names)} of {n_features} features"
    )
    weeks = f"week of {current_week.isoformat()}"
    if previous_week is not None:
        weeks += f" against {previous_week.isoformat()}"
    top = ", ".join(charted_names[:ALT_TOP_FEATURES])
    return f"Bar chart of {method} importance with error bars, {shown}, {weeks}. Most important: {top}."


def card_chart(
    numbers: ChartNumbers,
    feature: str,
    verdict: str,
    labels: Sequence[str],
    units: Sequence[float | None],
    *,
    current_values: FloatArray | None,
    previous_values: FloatArray | None,
    input_note: str,
) -> Chart:
    """A feature card (`reports.charts.feature_card`): its change per method and its inputs."""
    moved = [f"{label} {unit:+.1f}" for label, unit in zip(labels, units, strict=True) if unit is not None]
    return numbers.add(
        feature_card(
            f"{feature}: {verdict}",
            labels,
            units,
            current_values=current_values,
            previous_values=previous_values,
            input_note=input_note,
        ),
        f"{feature}, {verdict}. Change per method in noise bands (beyond noise past 1): "
        f"{', '.join(moved) or 'none'}. Inputs: {input_note}.",
    )
