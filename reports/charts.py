"""Charts of the weekly report, drawn with matplotlib's object API and returned as PNG bytes.

Only `matplotlib.figure.Figure` is used, never `matplotlib.pyplot`: pyplot keeps every figure in a
global registry until it is closed, which leaks memory in a long-running worker. A `Figure` made
here is an ordinary object, freed when the function returns (`_png` also clears it, so the
artists' reference cycles do not wait for the garbage collector).

The functions take plain arrays and names (the choice of features is `reports.sections`'s job,
the alt text `reports.section_charts`'s) and draw every figure exactly 700 px wide, the width of
the report's column. Texts fall back to Noto Sans CJK where DejaVu Sans has no glyph
(`reports.fonts`), so feature names in any script are drawn.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import unicodedata
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from audit.types import FloatArray, Importance
from reports.fonts import with_chart_fonts

#: The report column is 700 px wide; the figure is drawn at exactly that width.
DPI = 100
FIGURE_WIDTH_IN = 7.0
#: Space for the legend, both x axes and the axis label, whatever the number of bars.
FIXED_HEIGHT_IN = 1.3
#: Height of one feature's row: two bars (this week, previous) or one.
ROW_HEIGHT_PAIR_IN = 0.32
ROW_HEIGHT_SINGLE_IN = 0.24
#: Longer feature names are cut in the chart (the tables below show them in full).
MAX_LABEL_CHARS = 34
LABEL_FONT_SIZE = 11
SMALL_FONT_SIZE = 10

CURRENT_COLOUR = "#1f5fa8"
PREVIOUS_COLOUR = "#b9c0cb"
PREVIOUS_LINE_COLOUR = "#8a93a3"
ERROR_COLOUR = "#3a3a3a"
HIGHLIGHT_COLOUR = "#c2410c"
QUIET_COLOUR = "#9aa3b2"
#: Heat maps: one sequential map for non-negative profiles, a diverging one for signed profiles
#: and for the week-over-week difference (centred on 0, so white means "no change").
SEQUENTIAL_MAP = "viridis"
DIVERGING_MAP = "RdBu_r"

#: Slope chart: vertical space per rank position.
SLOPE_ROW_IN = 0.26
#: Feature names in the rank-change chart are cut to this many characters, so that the longest
#: label plus its rank fits beside the slope lines at 11 pt in a 700 px wide figure.
SLOPE_LABEL_CHARS = 20
#: Heat map: vertical space per feature row, and the fixed part (titles, step axis, colour bars).
HEATMAP_ROW_IN = 0.2
HEATMAP_FIXED_IN = 1.3


@with_chart_fonts
def importance_bars(
    current: Importance,
    previous: Importance | None = None,
    *,
    top_n: int,
    current_label: str = "this week",
    previous_label: str = "previous",
) -> bytes:
    """Horizontal bars of `current` (and `previous`, matched by feature name) as PNG bytes.

    Features are sorted by this week's rank, the most important on top; only the first `top_n`
    are drawn. Error bars come from `Importance.std` where it is present. The figure grows with
    the number of bars so that labels never overlap.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    order = np.argsort(current.ranks, kind="stable")[:top_n]
    names = [current.feature_names[i] for i in order]
    values = current.values[order]
    std = None if current.std is None else current.std[order]
    previous_values, previous_std = _aligned(previous, names)

    figure = _draw_bars(
        names,
        values,
        std,
        previous_values,
        previous_std,
        xlabel=f"{current.method} importance",
        current_label=current_label,
        previous_label=previous_label,
    )
    return _png(figure)


@with_chart_fonts
def rank_slopes(
    names: Sequence[str],
    previous_ranks: Sequence[int | None],
    ranks: Sequence[int | None],
    highlighted: Sequence[bool],
    *,
    previous_label: str,
    current_label: str,
    max_rank: int,
) -> bytes:
    """A slope chart: each feature's rank last week (left) joined to its rank this week (right).

    Rank 1 is at the top. `highlighted` features (moved beyond noise) are drawn thick and coloured,
    the others thin and grey. Ranks beyond `max_rank` are stacked just below it in rank order, so
    that a feature that fell from #3 to #80 does not squash the rest; its label keeps the true
    rank. A feature missing on one side (new, removed) has a dot and a label on its side only.
    """
    if not (len(names) == len(previous_ranks) == len(ranks) == len(highlighted)):
        raise ValueError("rank_slopes: names, previous_ranks, ranks and highlighted differ in length")
    left = _slope_positions(previous_ranks, max_rank)
    right = _slope_positions(ranks, max_rank)
    positions = [p for p in (*left, *right) if p is not None]
    n_rows = int(max(positions, default=1))
    height = 0.6 + SLOPE_ROW_IN * (n_rows + 0.4)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI, facecolor="white")
    # Fixed margins instead of a layout engine: every label is inside the axes (x from -1.35 to
    # 2.35), so there is nothing to fit, and a layout pass would double the drawing time.
    figure.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / height, bottom=0.1 / height)
    ax = figure.add_subplot()
    # draw the quiet lines first, so the highlighted ones are on top
    for index in sorted(range(len(names)), key=lambda i: highlighted[i]):
        colour = HIGHLIGHT_COLOUR if highlighted[index] else QUIET_COLOUR
        width = 2.4 if highlighted[index] else 1.1
        y0, y1 = left[index], right[index]
        ends = [(x, y) for x, y in ((0.0, y0), (1.0, y1)) if y is not None]
        ax.plot(
            [x for x, _ in ends],
            [y for _, y in ends],
            color=colour,
            linewidth=width,
            marker="o",
            markersize=4,
        )
        for x, y, rank, align in ((0, y0, previous_ranks[index], "right"), (1, y1, ranks[index], "left")):
            if y is None:
                continue
            label = _cut(names[index], SLOPE_LABEL_CHARS)
            text = f"{label}  #{rank}" if align == "right" else f"#{rank}  {label}"
            ax.text(
                x - 0.04 if align == "right" else x + 0.04,
                y,
                chart_label(text),
                ha=align,
                va="center",
                fontsize=LABEL_FONT_SIZE,
                color="#1d2330" if highlighted[index] else "#4f596b",
                fontweight="bold" if highlighted[index] else "normal",
            )
    ax.set_xlim(-1.35, 2.35)
    ax.set_ylim(n_rows + 0.7, 0.3)
    ax.set_xticks([0, 1], labels=[chart_label(previous_label), chart_label(current_label)])
    ax.tick_params(
        axis="x",
        labelsize=SMALL_FONT_SIZE,
        length=0,
        top=True,
        labeltop=True,
        bottom=False,
        labelbottom=False,
    )
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    return _png(figure)


def _check_profiles(
    chart: str, labels: Sequence[str], current: FloatArray, previous: FloatArray | None
) -> None:
    """A (n_steps, n_features) profile per week, one label per feature column, both weeks alike."""
    mismatched = current.ndim != 2 or len(labels) != current.shape[1]
    if mismatched or (previous is not None and previous.shape != current.shape):
        raise ValueError(
            f"{chart}: {len(labels)} labels, current {current.shape}, "
            f"previous {None if previous is None else previous.shape}: they must match"
        )


@with_chart_fonts
def profile_heatmaps(
    labels: Sequence[str],
    current: FloatArray,
    previous: FloatArray | None,
    *,
    current_label: str,
    previous_label: str,
) -> bytes:
    """Step x feature heat maps of this week, last week and their difference, side by side.

    `current` and `previous` are (n_steps, n_features) with columns in the order of `labels`
    (NaN for a feature a week does not have). This week and last week share one colour scale
    (sequential from 0, or diverging around 0 when a profile is signed); the difference uses a
    diverging map centred on 0 with symmetric limits. Features are rows, steps are columns.
    """
    _check_profiles("profile_heatmaps", labels, current, previous)
    n_steps, n_features = current.shape
    panels: list[tuple[str, FloatArray]] = [(current_label, current)]
    if previous is not None:
        panels += [(previous_label, previous), ("difference", current - previous)]
    weeks = np.concatenate([p for _, p in panels[:2]]) if previous is not None else current
    week_norm = _week_norm(weeks)
    difference_limit = _finite_max_abs(current - previous) if previous is not None else 0.0
    rows_in = HEATMAP_ROW_IN * n_features
    height = HEATMAP_FIXED_IN + rows_in
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI, facecolor="white")
    # Fixed margins (inches): labels on the left, 0.3 for titles on top, step axis and colour bars
    # below.
    left, right, gap, bottom = 1.75, 0.1, 0.12, HEATMAP_FIXED_IN - 0.3
    panel_width = (FIGURE_WIDTH_IN - left - right - gap * (len(panels) - 1)) / len(panels)
    extent = (-0.5, n_steps - 0.5, n_features - 0.5, -0.5)
    axes: list[Axes] = []
    for index, (title, data) in enumerate(panels):
        x0 = left + index * (panel_width + gap)
        ax = figure.add_axes(
            (x0 / FIGURE_WIDTH_IN, bottom / height, panel_width / FIGURE_WIDTH_IN, rows_in / height),
            sharey=axes[0] if axes else None,
        )
        axes.append(ax)
        is_difference = index == 2
        norm = _centred_norm(difference_limit) if is_difference else week_norm
        cmap = DIVERGING_MAP if is_difference or isinstance(norm, TwoSlopeNorm) else SEQUENTIAL_MAP
        image = ax.imshow(data.T, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest", extent=extent)
        ax.set_title(chart_label(title), fontsize=SMALL_FONT_SIZE)
        ax.set_xticks(_few_ticks(n_steps))
        ax.tick_params(labelsize=SMALL_FONT_SIZE - 1, length=2)
        if index > 0:
            ax.tick_params(axis="y", labelleft=False)
        if index != 1:  # this week and last week share the first colour bar
            span = panel_width * (2 if index == 0 and previous is not None else 1) + (
                gap if index == 0 and previous is not None else 0
            )
            bar_ax = figure.add_axes(
                (x0 / FIGURE_WIDTH_IN, 0.28 / height, span / FIGURE_WIDTH_IN, 0.13 / height)
            )
            bar = figure.colorbar(image, cax=bar_ax, orientation="horizontal")
            bar.ax.tick_params(labelsize=SMALL_FONT_SIZE - 2, length=2)
    figure.text(
        1 - right / FIGURE_WIDTH_IN,
        (bottom - 0.42) / height,
        "step (last = latest)",
        ha="right",
        fontsize=SMALL_FONT_SIZE - 1,
    )
    axes[0].set_yticks(range(n_features), labels=[chart_label(_cut(name, 22)) for name in labels])
    axes[0].tick_params(axis="y", labelsize=SMALL_FONT_SIZE - 1, length=0)
    return _png(figure)


@with_chart_fonts
def lag_profiles(
    labels: Sequence[str],
    current: FloatArray,
    previous: FloatArray | None,
    *,
    current_label: str,
    previous_label: str,
) -> bytes:
    """Stacked sparklines, one row per feature: its importance at each step, this week and last week.

    `current` and `previous` are (n_steps, n_features) in the order of `labels`. Each row has its
    own scale, shared by both weeks (the shape, which lags matter, is what a row shows; the bars
    and heat maps give the level); the row's peak this week is written on the right.
    """
    _check_profiles("lag_profiles", labels, current, previous)
    n_steps = current.shape[0]
    rows = []
    for j, label in enumerate(labels):
        series = [] if previous is None else [(previous[:, j], PREVIOUS_LINE_COLOUR, 1.4)]
        series.append((current[:, j], CURRENT_COLOUR, 1.9))
        peak = current[np.argmax(np.abs(np.nan_to_num(current[:, j]))), j] if n_steps else math.nan
        rows.append((label, series, _compact(float(peak))))
    figure, ax = _stacked_lines(rows, np.arange(n_steps, dtype=np.float64), markers=False)
    ax.set_xticks(_few_ticks(n_steps))
    ax.set_xlabel("step (last = latest)", fontsize=SMALL_FONT_SIZE - 1)
    legend = [(current_label, CURRENT_COLOUR)] + (
        [] if previous is None else [(previous_label, PREVIOUS_LINE_COLOUR)]
    )
    _key(figure, legend, right_note="peak")
    return _png(figure)


@with_chart_fonts
def history_sparklines(
    labels: Sequence[str],
    weeks: Sequence[dt.date],
    values: FloatArray,
    *,
    method: str,
) -> bytes:
    """Stacked sparklines, one row per feature: its importance over `weeks` (NaN = no figure).

    Each row has its own scale; missing weeks break the line, an isolated week still shows as a
    dot. The latest figure is marked and written on the right, so no axis is needed to read it.
    """
    n_weeks, n_features = values.shape
    if len(labels) != n_features or len(weeks) != n_weeks:
        raise ValueError(
            f"history_sparklines: values {values.shape} for {len(weeks)} weeks, {len(labels)} names"
        )
    rows = []
    for j, label in enumerate(labels):
        finite = values[np.isfinite(values[:, j]), j]
        rows.append(
            (label, [(values[:, j], CURRENT_COLOUR, 1.6)], _compact(float(finite[-1])) if finite.size else "")
        )
    figure, ax = _stacked_lines(rows, np.arange(n_weeks, dtype=np.float64), markers=True)
    ticks = _few_ticks(n_weeks, at_most=3)
    ax.set_xticks(ticks, labels=[weeks[int(t)].isoformat() for t in ticks])
    _key(figure, [(f"{method} importance, weekly", CURRENT_COLOUR)], right_note="latest")
    return _png(figure)


def chart_label(name: str) -> str:
    """A feature name as matplotlib must receive it to draw it literally, on one line.

    `$` is escaped so mathtext never parses it (matplotlib turns `\\$` back into `$` when drawing);
    control characters (newlines, tabs) become spaces; long names lose their middle to an
    ellipsis, keeping both ends (names often differ only at the end: `..._v1`, `..._v2`).
    """
    return _cut(name, MAX_LABEL_CHARS).replace("$", r"\$")


def figure_height_in(n_bars: int, *, paired: bool) -> float:
    """Figure height in inches for `n_bars` feature rows."""
    row = ROW_HEIGHT_PAIR_IN if paired else ROW_HEIGHT_SINGLE_IN
    return FIXED_HEIGHT_IN + row * max(n_bars, 1)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG header (IHDR follows the 8-byte signature)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image (bad signature)")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _cut(name: str, limit: int) -> str:
    """One line (control characters become spaces), at most `limit` characters, middle elided."""
    one_line = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in name)
    if len(one_line) > limit:
        tail = limit // 3
        one_line = one_line[: limit - 1 - tail] + "…" + one_line[-tail:]
    return one_line


def _compact(value: float) -> str:
    if not math.isfinite(value):
        return ""
    return f"{value:.3g}"


def _aligned(previous: Importance | None, names: list[str]) -> tuple[FloatArray | None, FloatArray | None]:
    """Previous values and std in the order of `names`; NaN for features it did not have."""
    if previous is None:
        return None, None
    index = {name: i for i, name in enumerate(previous.feature_names)}
    positions = [index.get(name, -1) for name in names]

    def pick(array: FloatArray | None) -> FloatArray | None:
        if array is None:
            return None
        return np.array([array[p] if p >= 0 else np.nan for p in positions], dtype=np.float64)

    return pick(previous.values), pick(previous.std)


def _slope_positions(ranks: Sequence[int | None], max_rank: int) -> list[float | None]:
    """Ranks up to `max_rank` keep their place; larger ones are stacked below it in rank order."""
    beyond = sorted(r for r in ranks if r is not None and r > max_rank)
    below = {rank: max_rank + 1 + i for i, rank in enumerate(beyond)}
    return [None if r is None else float(r if r <= max_rank else below[r]) for r in ranks]


def _week_norm(weeks: FloatArray) -> Normalize:
    """One scale for this week and last week: 0..max, or symmetric around 0 when signed."""
    finite = weeks[np.isfinite(weeks)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    if low < 0:
        return _centred_norm(max(abs(low), abs(high)))
    return Normalize(vmin=0.0, vmax=high if high > 0 else 1.0)


def _finite_max_abs(values: FloatArray) -> float:
    """The largest |value| among the finite ones, 0 when there are none (np.nanmax would warn)."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def _centred_norm(limit: float) -> TwoSlopeNorm:
    limit = limit if math.isfinite(limit) and limit > 0 else 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)


#: Stacked sparklines: height of one row, and the space for the key (top) and the x axis (bottom).
SPARK_ROW_IN = 0.42
SPARK_TOP_IN = 0.4
SPARK_BOTTOM_IN = 0.55
#: Horizontal room (inches) for the names on the left and the figures on the right.
SPARK_LEFT_IN = 2.3
SPARK_RIGHT_IN = 0.75

Series = tuple[FloatArray, str, float]


def _stacked_lines(
    rows: Sequence[tuple[str, Sequence[Series], str]], x: FloatArray, *, markers: bool
) -> tuple[Figure, Axes]:
    """One axes, one band per row (label left, figure right), each row scaled to its own range.

    One axes instead of a grid of small ones: matplotlib spends most of a small chart's time
    building axes and ticks, so this draws several times faster and reads the same.
    """
    height = SPARK_TOP_IN + SPARK_BOTTOM_IN + SPARK_ROW_IN * max(len(rows), 1)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI, facecolor="white")
    ax = figure.add_axes(
        (
            SPARK_LEFT_IN / FIGURE_WIDTH_IN,
            SPARK_BOTTOM_IN / height,
            1 - (SPARK_LEFT_IN + SPARK_RIGHT_IN) / FIGURE_WIDTH_IN,
            SPARK_ROW_IN * max(len(rows), 1) / height,
        )
    )
    for i, (label, series, right) in enumerate(rows):
        stacked = np.concatenate([values for values, _, _ in series])
        finite = stacked[np.isfinite(stacked)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        low = min(low, 0.0)  # from zero: week-to-week noise is not blown up to the row's height
        span = high - low if high > low else 1.0
        top = float(i) + 0.1  # row i spans i + 0.1 (its maximum) to i + 0.9 (its minimum)

        def place(values: FloatArray, low: float = low, span: float = span, top: float = top) -> FloatArray:
            return top + 0.8 * (1.0 - (values - low) / span)

        if low < 0 < high:
            ax.plot(x[[0, -1]], place(np.zeros(2)), color="#c8cdd5", linewidth=0.7, linestyle=":")
        for values, colour, width in series:
            ax.plot(
                x,
                place(values),
                color=colour,
                linewidth=width,
                marker="o" if markers else None,
                markersize=2.5,
            )
        last = series[-1][0]
        finite_at = np.flatnonzero(np.isfinite(last))
        if markers and finite_at.size:
            k = int(finite_at[-1])
            ax.plot([x[k]], place(last[[k]]), color=HIGHLIGHT_COLOUR, marker="o", markersize=5)
        ax.text(
            -0.02,
            i + 0.5,
            chart_label(_cut(label, 30)),
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="center",
            fontsize=SMALL_FONT_SIZE,
        )
        ax.text(
            1.02,
            i + 0.5,
            right,
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="center",
            fontsize=SMALL_FONT_SIZE,
            color="#1d2330",
        )
        if i:
            ax.axhline(i, color="#e3e3e3", linewidth=0.7)
    ax.set_ylim(max(len(rows), 1), 0)
    ax.set_yticks([])
    if x.size:
        ax.set_xlim(float(x[0]) - 0.5, float(x[-1]) + 0.5)
    ax.tick_params(axis="x", labelsize=SMALL_FONT_SIZE - 1, length=2)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return figure, ax


def _few_ticks(n: int, *, at_most: int = 5) -> list[int]:
    """At most `at_most` evenly spread positions among 0..n-1, the first and the last included."""
    if n <= 1:
        return [0]
    if n <= at_most:
        return list(range(n))
    return sorted({round(k * (n - 1) / (at_most - 1)) for k in range(at_most)})


def _key(figure: Figure, entries: Sequence[tuple[str, str]], *, right_note: str) -> None:
    """A one-line key above a stacked chart: coloured names, and what the right column holds."""
    x = 0.01
    for text, colour in entries:
        label = figure.text(
            x, 0.995, "— " + chart_label(text), va="top", color=colour, fontsize=SMALL_FONT_SIZE
        )
        x += 0.012 * len(label.get_text()) + 0.03
    figure.text(0.995, 0.995, right_note, va="top", ha="right", color="#4f596b", fontsize=SMALL_FONT_SIZE - 1)


def _draw_bars(
    names: list[str],
    values: FloatArray,
    std: FloatArray | None,
    previous_values: FloatArray | None,
    previous_std: FloatArray | None,
    *,
    xlabel: str,
    current_label: str,
    previous_label: str,
) -> Figure:
    paired = previous_values is not None
    height = figure_height_in(len(names), paired=paired)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI, facecolor="white")
    ax = figure.add_subplot()
    rows = np.arange(len(names), dtype=np.float64)
    bar_height = 0.4 if paired else 0.7
    current_rows = rows - bar_height / 2 if paired else rows
    error_style = {"ecolor": ERROR_COLOUR, "elinewidth": 1.0, "capsize": 2.5}

    ax.barh(
        current_rows,
        values,
        height=bar_height,
        xerr=_error(std),
        color=CURRENT_COLOUR,
        label=chart_label(current_label),
        error_kw=error_style,
    )
    if previous_values is not None:
        ax.barh(
            rows + bar_height / 2,
            previous_values,
            height=bar_height,
            xerr=_error(previous_std),
            color=PREVIOUS_COLOUR,
            label=chart_label(previous_label),
            error_kw=error_style,
        )
        figure.legend(
            loc="upper left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False, fontsize=LABEL_FONT_SIZE
        )

    ax.set_yticks(rows, labels=[chart_label(name) for name in names], fontsize=LABEL_FONT_SIZE)
    ax.set_ylim(len(names) - 0.5, -0.5)  # most important feature on top
    ax.axvline(0.0, color="#666666", linewidth=0.8)
    ax.set_xlabel(chart_label(xlabel), fontsize=LABEL_FONT_SIZE)
    # Long charts get the value axis at the top as well, so the first bars can be read too.
    long_chart = len(names) > 12
    ax.tick_params(axis="x", labelsize=LABEL_FONT_SIZE - 1, top=long_chart, labeltop=long_chart)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#e3e3e3", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _fit_margins(figure, ax, height, legend=paired, top_axis=long_chart)
    return figure


def _fit_margins(figure: Figure, ax: Axes, height: float, *, legend: bool, top_axis: bool) -> None:
    """Margins from the widest feature label, instead of a layout engine (which draws twice)."""
    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]
    widest = max((label.get_window_extent(renderer).width for label in ax.get_yticklabels()), default=0.0)
    left_in = min(widest / DPI + 0.15, FIGURE_WIDTH_IN / 2)
    top_in = 0.1 + (0.4 if legend else 0.0) + (0.3 if top_axis else 0.0)
    figure.subplots_adjust(
        left=left_in / FIGURE_WIDTH_IN,
        right=1 - 0.25 / FIGURE_WIDTH_IN,
        top=1 - top_in / height,
        bottom=0.6 / height,
    )


def _error(std: FloatArray | None) -> FloatArray | None:
    """Error bar half-widths: matplotlib rejects negative ones; a NaN std draws no error bar."""
    if std is None:
        return None
    return np.nan_to_num(np.abs(std), nan=0.0)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No timestamp or software version in the file: the same figures give the same bytes.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    # No figure.clear(): it rebuilds every axes' ticks before dropping them (a fifth of a report's
    # drawing time); the figure's reference cycles go at the next gc pass (tests/test_report_outputs.py
    # checks that 52 reports leave memory flat).
    return buffer.getvalue()


#: Feature card: height, and the change (in noise bands) at which bars are cut and labelled.
CARD_HEIGHT_IN = 2.0
CARD_CLIP_UNITS = 4.0
BAND_FILL_COLOUR = "#e9ecf1"


@with_chart_fonts
def feature_card(
    title: str,
    labels: Sequence[str],
    units: Sequence[float | None],
    *,
    current_values: FloatArray | None,
    previous_values: FloatArray | None,
    input_note: str,
) -> bytes:
    """One feature at a glance: each method's change in units of its noise band (left; the band is
    the shaded -1..1), and the feature's input distribution this week against last week (right,
    empirical CDFs of the stored summaries; `input_note` says what the right panel shows)."""
    if len(labels) != len(units):
        raise ValueError(f"feature_card: {len(labels)} labels for {len(units)} changes")
    figure = Figure(figsize=(FIGURE_WIDTH_IN, CARD_HEIGHT_IN), dpi=DPI, facecolor="white")
    figure.text(0.01, 0.96, chart_label(title), va="top", fontsize=LABEL_FONT_SIZE, fontweight="bold")
    bars = figure.add_axes((0.14, 0.24, 0.36, 0.56))
    rows = np.arange(len(labels), dtype=np.float64)
    shown = np.array(
        [np.nan if u is None else float(np.clip(u, -CARD_CLIP_UNITS, CARD_CLIP_UNITS)) for u in units]
    )
    beyond = np.array([u is not None and abs(u) > 1 for u in units])
    bars.axvspan(-1.0, 1.0, color=BAND_FILL_COLOUR, zorder=0)
    bars.barh(rows, np.nan_to_num(shown), height=0.6, color=np.where(beyond, HIGHLIGHT_COLOUR, QUIET_COLOUR))
    for row, value, unit in zip(rows, shown, units, strict=True):
        if unit is not None and abs(unit) > CARD_CLIP_UNITS:  # cut: the true figure inside the bar's end
            bars.text(
                value,
                row,
                f" {unit:+.0f} ",
                va="center",
                ha="right" if value > 0 else "left",
                color="white",
                fontsize=SMALL_FONT_SIZE - 2,
            )
    bars.axvline(0.0, color="#666666", linewidth=0.8)
    bars.set_xlim(-CARD_CLIP_UNITS - 1, CARD_CLIP_UNITS + 1)
    bars.set_yticks(rows, labels=[chart_label(label) for label in labels], fontsize=SMALL_FONT_SIZE - 1)
    bars.set_ylim(len(labels) - 0.5, -0.5)
    bars.tick_params(axis="x", labelsize=SMALL_FONT_SIZE - 2, length=2)
    bars.tick_params(axis="y", length=0)
    bars.set_xlabel("change in noise bands (shaded: noise)", fontsize=SMALL_FONT_SIZE - 1)
    inputs = figure.add_axes((0.6, 0.24, 0.38, 0.56))
    if current_values is not None and previous_values is not None:
        for values, colour, label in (
            (previous_values, PREVIOUS_LINE_COLOUR, "previous"),
            (current_values, CURRENT_COLOUR, "this week"),
        ):
            ordered = np.sort(values)
            inputs.step(
                ordered,
                np.arange(1, ordered.size + 1) / ordered.size,
                where="post",
                color=colour,
                linewidth=1.6,
                label=label,
            )
        inputs.legend(loc="upper left", frameon=False, fontsize=SMALL_FONT_SIZE - 2)
        inputs.set_yticks([0, 0.5, 1])
    else:
        inputs.set_yticks([])
        inputs.set_xticks([])
    inputs.set_title(chart_label(input_note), fontsize=SMALL_FONT_SIZE - 1, loc="left")
    inputs.tick_params(labelsize=SMALL_FONT_SIZE - 2, length=2)
    for ax in (bars, inputs):
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return _png(figure)
