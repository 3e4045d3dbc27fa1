"""Charts of the weekly report, drawn with matplotlib's object API and returned as PNG data URIs.

Only `matplotlib.figure.Figure` is used, never `matplotlib.pyplot`: pyplot keeps every figure in a
global registry until it is closed, which leaks memory in a long-running worker. A `Figure` made
here is an ordinary object, freed when the function returns.
"""

from __future__ import annotations

import base64
import io
import unicodedata

import numpy as np
from matplotlib.figure import Figure

from audit.types import FloatArray, Importance

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

CURRENT_COLOUR = "#1f5fa8"
PREVIOUS_COLOUR = "#b9c0cb"
ERROR_COLOUR = "#3a3a3a"


def importance_bars(
    current: Importance,
    previous: Importance | None = None,
    *,
    top_n: int,
    current_label: str = "this week",
    previous_label: str = "previous",
) -> str:
    """Draw horizontal bars of `current` (and `previous`, matched by feature name) as a PNG data URI.

    Features are sorted by this week's value, the most important on top; only the first `top_n`
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

    figure = _draw(
        names,
        values,
        std,
        previous_values,
        previous_std,
        xlabel=f"{current.method} importance",
        current_label=current_label,
        previous_label=previous_label,
    )
    return _png_data_uri(figure)


def chart_label(name: str) -> str:
    """A feature name as matplotlib must receive it to draw it literally, on one line.

    `$` is escaped so mathtext never parses it (matplotlib turns `\\$` back into `$` when drawing);
    control characters (newlines, tabs) become spaces; long names lose their middle to an
    ellipsis, keeping both ends (names often differ only at the end: `..._v1`, `..._v2`).
    """
    one_line = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in name)
    if len(one_line) > MAX_LABEL_CHARS:
        tail = MAX_LABEL_CHARS // 3
        one_line = one_line[: MAX_LABEL_CHARS - 1 - tail] + "…" + one_line[-tail:]
    return one_line.replace("$", r"\$")


def figure_height_in(n_bars: int, *, paired: bool) -> float:
    """Figure height in inches for `n_bars` feature rows."""
    row = ROW_HEIGHT_PAIR_IN if paired else ROW_HEIGHT_SINGLE_IN
    return FIXED_HEIGHT_IN + row * max(n_bars, 1)


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


def _draw(
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
    figure = Figure(
        figsize=(FIGURE_WIDTH_IN, figure_height_in(len(names), paired=paired)),
        dpi=DPI,
        layout="constrained",
        facecolor="white",
    )
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
        label=current_label,
        error_kw=error_style,
    )
    if previous_values is not None:
        ax.barh(
            rows + bar_height / 2,
            previous_values,
            height=bar_height,
            xerr=_error(previous_std),
            color=PREVIOUS_COLOUR,
            label=previous_label,
            error_kw=error_style,
        )
        figure.legend(loc="outside upper left", ncols=2, frameon=False, fontsize=LABEL_FONT_SIZE)

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
    return figure


def _error(std: FloatArray | None) -> FloatArray | None:
    """Error bar half-widths: matplotlib rejects negative ones; a NaN std draws no error bar."""
    if std is None:
        return None
    return np.nan_to_num(np.abs(std), nan=0.0)


def _png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    # No timestamp or software version in the file: the same figures give the same bytes.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{encoded}"
