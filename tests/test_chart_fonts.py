"""Feature names in any script are drawn: CJK through the Noto Sans CJK fallback, Cyrillic and Greek
by DejaVu Sans. matplotlib warns "Glyph N missing from font(s)" for every character it cannot draw;
these tests fail on any such warning."""

from __future__ import annotations

import datetime as dt
import io
import warnings
from collections.abc import Callable

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from audit.types import Importance
from reports.charts import history_sparklines, importance_bars, lag_profiles, profile_heatmaps, rank_slopes
from reports.fonts import CJK_FAMILY, chart_families

NAMES = ("温度", "露点温度", "气压", "температура", "давление", "PM₂.₅ µg/m³", "풍속", "降水量")

pytestmark = pytest.mark.skipif(
    CJK_FAMILY not in chart_families(),
    reason="the noto-cjk-sans-otc package is not installed (make install installs it): no CJK font",
)


def _missing_glyphs(draw: Callable[[], bytes]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = draw()
    assert png.startswith(b"\x89PNG")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_the_warning_is_seen_without_the_fallback() -> None:
    """Without the fallback family DejaVu Sans alone warns: the check below can fail."""

    def plain() -> bytes:
        with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
            figure = Figure(figsize=(2, 1))
            figure.text(0.1, 0.5, "温度")
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
        return buffer.getvalue()

    assert any("28201" in message for message in _missing_glyphs(plain))


def test_cjk_and_cyrillic_names_draw_in_every_chart() -> None:
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, size=len(NAMES))
    current = Importance("permutation", NAMES, values, std=0.1 * values)
    previous = Importance("permutation", NAMES, values[::-1].copy(), std=0.1 * values)
    profile = rng.random((12, len(NAMES)))
    weeks = [dt.date(2026, 1, 5) + dt.timedelta(weeks=k) for k in range(6)]
    charts: list[Callable[[], bytes]] = [
        lambda: importance_bars(current, previous, top_n=30, current_label="本周", previous_label="上周"),
        lambda: rank_slopes(
            NAMES,
            list(range(1, 9)),
            list(range(8, 0, -1)),
            [True] * 8,
            previous_label="上周",
            current_label="本周",
            max_rank=24,
        ),
        lambda: profile_heatmaps(NAMES, profile, profile[::-1], current_label="本周", previous_label="上周"),
        lambda: lag_profiles(NAMES, profile, None, current_label="本周", previous_label="上周"),
        lambda: history_sparklines(NAMES, weeks, rng.random((6, len(NAMES))), method="permutation"),
    ]
    for draw in charts:
        assert _missing_glyphs(draw) == []
