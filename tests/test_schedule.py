"""audit.schedule: skipped retrains between two drops, and the comparisons a backfill makes stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from audit.schedule import drops_in_range, missing_weeks, stale_comparisons
from audit.types import AuditError, Drop

D = dt.date


def test_next_weekly_drop_leaves_no_gap() -> None:
    assert missing_weeks(D(2026, 3, 2), D(2026, 3, 9)) == ()


def test_one_skipped_week_is_named_by_its_expected_date() -> None:
    assert missing_weeks(D(2026, 3, 2), D(2026, 3, 16)) == (D(2026, 3, 9),)


def test_several_skipped_weeks_oldest_first() -> None:
    assert missing_weeks(D(2026, 3, 2), D(2026, 3, 30)) == (D(2026, 3, 9), D(2026, 3, 16), D(2026, 3, 23))


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        # Monday, then Thursday of the next week (10 days): 3 days late, still that week's retrain
        (D(2026, 3, 2), D(2026, 3, 12), ()),
        # Monday, then Friday of the next week (11 days): too late for 9 March, early for 16 March
        (D(2026, 3, 2), D(2026, 3, 13), (D(2026, 3, 9),)),
        # Wednesday, then Monday (5 days): an early retrain is no gap
        (D(2026, 3, 4), D(2026, 3, 9), ()),
        # Friday, then the Tuesday 18 days later: two retrains skipped
        (D(2026, 3, 6), D(2026, 3, 24), (D(2026, 3, 13), D(2026, 3, 20))),
    ],
)
def test_drops_on_irregular_weekdays(
    previous: dt.date, current: dt.date, expected: tuple[dt.date, ...]
) -> None:
    assert missing_weeks(previous, current) == expected


def test_month_boundary() -> None:
    assert missing_weeks(D(2026, 1, 26), D(2026, 2, 9)) == (D(2026, 2, 2),)
    assert missing_weeks(D(2024, 2, 19), D(2024, 3, 11)) == (D(2024, 2, 26), D(2024, 3, 4))  # leap year


def test_year_boundary() -> None:
    assert missing_weeks(D(2025, 12, 22), D(2026, 1, 12)) == (D(2025, 12, 29), D(2026, 1, 5))
    assert missing_weeks(D(2025, 12, 29), D(2026, 1, 5)) == ()


def test_cadence_and_tolerance_are_options() -> None:
    assert missing_weeks(D(2026, 3, 1), D(2026, 3, 29), cadence_days=14) == (D(2026, 3, 15),)
    assert missing_weeks(D(2026, 3, 2), D(2026, 3, 12), tolerance_days=0) == (D(2026, 3, 9),)
    assert missing_weeks(D(2026, 3, 2), D(2026, 3, 3), cadence_days=1, tolerance_days=0) == ()


@pytest.mark.parametrize(
    ("previous", "current", "options", "message"),
    [
        (D(2026, 3, 9), D(2026, 3, 9), {}, "must be before the current one (2026-03-09)"),
        (D(2026, 3, 16), D(2026, 3, 9), {}, "(2026-03-16) must be before"),
        (D(2026, 3, 2), D(2026, 3, 9), {"cadence_days": 0}, "cadence_days must be a whole number"),
        (D(2026, 3, 2), D(2026, 3, 9), {"tolerance_days": 7}, "below the cadence (7 days), got 7"),
        (D(2026, 3, 2), D(2026, 3, 9), {"tolerance_days": -1}, "got -1"),
    ],
)
def test_bad_input_names_the_value(
    previous: dt.date, current: dt.date, options: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        missing_weeks(previous, current, **options)


WEEKS = [D(2026, 3, 2), D(2026, 3, 9), D(2026, 3, 16), D(2026, 3, 23)]


def test_a_backfilled_week_makes_the_next_weeks_comparison_stale() -> None:
    assert stale_comparisons(WEEKS, {D(2026, 3, 9)}) == (D(2026, 3, 16),)


def test_weeks_audited_in_the_same_run_are_not_compared_twice() -> None:
    assert stale_comparisons(WEEKS, {D(2026, 3, 2), D(2026, 3, 9)}) == (D(2026, 3, 16),)
    assert stale_comparisons(WEEKS, {D(2026, 3, 2), D(2026, 3, 16)}) == (D(2026, 3, 9), D(2026, 3, 23))


def test_the_newest_week_has_no_follower() -> None:
    assert stale_comparisons(WEEKS, {D(2026, 3, 23)}) == ()
    assert stale_comparisons([], set()) == ()
    assert stale_comparisons(reversed(WEEKS), {D(2026, 3, 2)}) == (D(2026, 3, 9),)


def _drops(weeks: list[dt.date]) -> tuple[Drop, ...]:
    return tuple(Drop(w, Path(str(w)), Path(f"{w}/model.keras"), (), None) for w in weeks)


def test_range_is_inclusive_and_open_ended() -> None:
    drops = _drops(WEEKS)
    assert [d.week for d in drops_in_range(drops, D(2026, 3, 9), D(2026, 3, 16))] == WEEKS[1:3]
    assert [d.week for d in drops_in_range(drops, D(2026, 3, 10))] == WEEKS[2:]
    assert [d.week for d in drops_in_range(drops, last=D(2026, 3, 9))] == WEEKS[:2]
    assert drops_in_range(drops) == drops
    assert drops_in_range((), None, None) == ()


def test_range_that_starts_after_it_ends_is_refused() -> None:
    with pytest.raises(AuditError, match=r"starts \(2026-03-16\) after it ends \(2026-03-09\); swap"):
        drops_in_range(_drops(WEEKS), D(2026, 3, 16), D(2026, 3, 9))


def test_empty_range_names_the_drops_that_exist() -> None:
    with pytest.raises(AuditError) as raised:
        drops_in_range(_drops(WEEKS), D(2025, 1, 1), D(2025, 12, 31))
    assert str(raised.value) == (
        "no drop from 2025-01-01 to 2025-12-31 in the registry "
        "(drops: 2026-03-02, 2026-03-09, 2026-03-16, 2026-03-23)"
    )
    many = _drops([D(2026, 1, 5) + dt.timedelta(weeks=k) for k in range(20)])
    with pytest.raises(
        AuditError,
        match=r"no drop from 2027-01-01 to the last drop .*2026-01-19, \.\.\., "
        r"2026-05-11, 2026-05-18 \(20 drops\)\)$",
    ):
        drops_in_range(many, D(2027, 1, 1))
