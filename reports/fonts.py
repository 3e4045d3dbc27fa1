"""The charts' fonts: DejaVu Sans, with Noto Sans CJK as matplotlib's fallback for what it lacks.

Feature names come in any script. matplotlib's default font, DejaVu Sans, covers Latin, Greek and
Cyrillic but no Chinese, Japanese or Korean: "温度" would be drawn as empty boxes (with a "Glyph
28201 missing" warning). matplotlib (>= 3.6) falls back glyph by glyph along a list of families,
so the charts use ``["DejaVu Sans", "Noto Sans CJK SC"]``. The Noto font comes with the project's
own install: the `noto-cjk-sans-otc` package ships NotoSansCJK-Regular.ttc (SIL Open Font
License) and nothing else; it is registered with matplotlib's font manager once per process.
Right-to-left scripts are drawn unshaped (matplotlib does not shape Arabic).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from importlib import resources
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib import font_manager

#: matplotlib's default sans-serif font (Latin, Greek, Cyrillic, many symbols).
PRIMARY_FAMILY = "DejaVu Sans"
#: The face of the collection used for Han characters (Simplified Chinese glyph shapes); it covers
#: Japanese kana and Korean Hangul too.
CJK_FAMILY = "Noto Sans CJK SC"
CJK_PACKAGE = "noto_cjk_sans_otc"
CJK_FILE = "NotoSansCJK-Regular.ttc"

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def chart_families() -> tuple[str, ...]:
    """The font families charts are drawn with, the CJK fallback registered on first use.

    Only DejaVu Sans when the font package is missing (CJK names then draw as boxes).
    """
    try:
        path = resources.files(CJK_PACKAGE).joinpath(CJK_FILE)
    except ModuleNotFoundError:
        return (PRIMARY_FAMILY,)
    with resources.as_file(path) as file:
        if not file.is_file():
            return (PRIMARY_FAMILY,)
        font_manager.fontManager.addfont(str(file))
    return (PRIMARY_FAMILY, CJK_FAMILY)


@contextlib.contextmanager
def chart_fonts() -> Iterator[None]:
    """Draw with `chart_families` inside this block (a figure's texts take their font when made)."""
    with matplotlib.rc_context({"font.family": list(chart_families())}):
        yield


def with_chart_fonts(draw: Callable[P, R]) -> Callable[P, R]:
    """Decorate a chart function so every text it makes falls back to the CJK font."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        with chart_fonts():
            return draw(*args, **kwargs)

    return drawn
