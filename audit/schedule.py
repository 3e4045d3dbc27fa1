"""The weekly schedule of drops: a backfill's range, skipped retrains, and the comparisons a backfill
makes stale.

Pure date arithmetic, no I/O. A team retrains once per cadence (a week by default), but not always
on the same weekday: a drop counts for the week it lands in when it is within `tolerance_days` of
the expected date, so a Monday drop followed by a Wednesday drop nine days later is on time, while
a drop two weeks after the previous one means a week without a retrain.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, TypeVar

from audit.types import AuditError


class Dated(Protocol):
    """Anything dated by its retrain week: a `audit.types.Drop`, a source's listed drop."""

    @property
    def week(self) -> dt.date: ...


D = TypeVar("D", bound=Dated)

#: Days between two retrains when the team keeps its schedule.
CADENCE_DAYS = 7
#: How far a drop may land from its expected date and still count as that week's retrain.
TOLERANCE_DAYS = 3


def missing_weeks(
    previous: dt.date,
    current: dt.date,
    *,
    cadence_days: int = CADENCE_DAYS,
    tolerance_days: int = TOLERANCE_DAYS,
) -> tuple[dt.date, ...]:
    """The expected retrain dates between two consecutive drops that have no drop of their own.

    Parameters
    ----------
    previous : the date of the latest drop before `current` (what `current` is compared with).
    current : the date of the drop being audited; must be after `previous`.
    cadence_days : days between two scheduled retrains (>= 1).
    tolerance_days : how many days late a drop may land and still be the retrain it stands for
        (0 <= tolerance_days < cadence_days).

    Returns
    -------
    The dates ``previous + k * cadence_days`` (k = 1, 2, ...) that lie more than `tolerance_days`
    before `current`, oldest first: the weeks whose retrain was skipped. Empty when `current` is
    the next scheduled drop, early or up to `tolerance_days` late.
    """
    if cadence_days < 1:
        raise ValueError(f"cadence_days must be a whole number of days >= 1, got {cadence_days!r}")
    if not 0 <= tolerance_days < cadence_days:
        raise ValueError(
            f"tolerance_days must be >= 0 and below the cadence ({cadence_days} days), got {tolerance_days!r}"
        )
    if current <= previous:
        raise ValueError(
            f"the previous drop ({previous.isoformat()}) must be before the current one "
            f"({current.isoformat()})"
        )
    step = dt.timedelta(days=cadence_days)
    late = dt.timedelta(days=tolerance_days)
    missing: list[dt.date] = []
    expected = previous + step
    while expected + late < current:
        missing.append(expected)
        expected += step
    return tuple(missing)


def stale_comparisons(audited: Iterable[dt.date], reaudited: Collection[dt.date]) -> tuple[dt.date, ...]:
    """The audited weeks whose stored comparison is out of date after `reaudited` got new figures.

    Each week is compared with the latest earlier audited week. When a week gets new figures (a
    backfilled gap or a re-audit), the next audited week after it now has a different previous drop
    (or the same drop with other figures), so its comparison and drift call must be made again;
    weeks that were themselves re-audited were compared in their own turn.

    Parameters
    ----------
    audited : every week with current figures, including `reaudited`, in any order.
    reaudited : the weeks audited in this run.

    Returns
    -------
    The weeks to compare again, oldest first, without repeats.
    """
    ordered = sorted(set(audited))
    following = dict(itertools.pairwise(ordered))
    stale = {following[week] for week in reaudited if week in following}
    return tuple(sorted(stale - set(reaudited)))


def drops_in_range(
    drops: Sequence[D], first: dt.date | None = None, last: dt.date | None = None
) -> tuple[D, ...]:
    """The drops dated from `first` to `last`, both included (None: open-ended), in the given order.

    Raises `AuditError` when `first` is after `last`, or when `first` or `last` is given and no drop
    falls in the range (the message names the drops that exist, so the user can pick a range).
    """
    if first is not None and last is not None and first > last:
        raise AuditError(
            f"the range starts ({first.isoformat()}) after it ends ({last.isoformat()}); swap the two dates"
        )
    chosen = tuple(
        drop
        for drop in drops
        if (first is None or drop.week >= first) and (last is None or drop.week <= last)
    )
    if not chosen and (first is not None or last is not None):
        start = first.isoformat() if first else "the first drop"
        end = last.isoformat() if last else "the last drop"
        bounds = f"from {start} to {end}"
        raise AuditError(f"no drop {bounds} in the registry (drops: {_listed(drops)})")
    return chosen


def _listed(drops: Sequence[Dated], shown: int = 8) -> str:
    """The drop dates, abbreviated in the middle when there are many."""
    weeks = [drop.week.isoformat() for drop in drops]
    if not weeks:
        return "none"
    if len(weeks) <= shown:
        return ", ".join(weeks)
    return ", ".join([*weeks[:3], "...", *weeks[-2:]]) + f" ({len(weeks)} drops)"
