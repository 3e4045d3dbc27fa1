"""The importance history of the latest audited weeks: the rows of ``drift-audit history`` and the
arrays of the report's history charts (`report_history`).

The same figures as the ``importance_history`` view, each with its drift call (``importance_changes``
verdict) when the drop was compared with a previous one. Filters are bound parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Select, and_, inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from audit.types import AuditError, ImportanceHistory, RunStatus
from storage.models import AuditRun, FeatureDriftRow, ImportanceRow, ModelDrop

DEFAULT_WEEKS = 12
#: Features per method in the report's history charts.
DEFAULT_TOP_K = 10
#: Names listed in an error message, at most.
_LISTED = 12


@dataclasses.dataclass(frozen=True)
class HistoryFilter:
    """Which figures to show: None = all; `weeks` = the latest audited weeks (drops) kept."""

    model: str | None = None
    feature: str | None = None
    method: str | None = None
    weeks: int = DEFAULT_WEEKS

    def __post_init__(self) -> None:
        if self.weeks < 1:
            raise ValueError(f"weeks must be >= 1, got {self.weeks}")


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """One feature's figure by one method in one audited drop, with its drift call if any."""

    week: dt.date
    model: str
    method: str
    feature: str
    value: float
    std: float | None
    rank: int
    #: Version of the method's definition the value was computed with (`Importance.method_version`).
    method_version: int
    #: This method's call on the feature against the previous drop (`stable`, `changed`, `new`,
    #: `removed`), None for a drop that was not compared (the first one).
    verdict: str | None


def history_query(
    where: HistoryFilter,
) -> Select[dt.date, str, str, str, float, float | None, int, int, str]:
    """The SELECT behind `load_history`: the figures of the `where.weeks` latest audited weeks (of
    `where.model` when given), ordered by model, feature, method and week."""
    succeeded = AuditRun.status == RunStatus.SUCCEEDED.value
    weeks = (
        select(ModelDrop.week)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(succeeded)
        .distinct()
        .order_by(ModelDrop.week.desc())
        .limit(where.weeks)
    )
    query = (
        select(
            ModelDrop.week,
            ModelDrop.model_name,
            ImportanceRow.method,
            ImportanceRow.feature,
            ImportanceRow.value,
            ImportanceRow.std,
            ImportanceRow.rank,
            ImportanceRow.method_version,
            FeatureDriftRow.verdict,
        )
        .select_from(ImportanceRow)
        .join(AuditRun, AuditRun.id == ImportanceRow.run_id)
        .join(ModelDrop, ModelDrop.id == AuditRun.drop_id)
        .outerjoin(
            FeatureDriftRow,
            and_(
                FeatureDriftRow.run_id == ImportanceRow.run_id,
                FeatureDriftRow.method == ImportanceRow.method,
                FeatureDriftRow.feature == ImportanceRow.feature,
            ),
        )
        .where(succeeded)
        .order_by(ModelDrop.model_name, ImportanceRow.feature, ImportanceRow.method, ModelDrop.week)
    )
    if where.model is not None:
        weeks = weeks.where(ModelDrop.model_name == where.model)
        query = query.where(ModelDrop.model_name == where.model)
    if where.feature is not None:
        query = query.where(ImportanceRow.feature == where.feature)
    if where.method is not None:
        query = query.where(ImportanceRow.method == where.method)
    return query.where(ModelDrop.week.in_(weeks.scalar_subquery()))


def load_history(session: Session, where: HistoryFilter) -> list[HistoryRow]:
    """The rows of `history_query`; an `AuditError` saying what to change when there are none."""
    if not inspect(session.connection()).has_table("importances"):
        raise AuditError("the database holds no drift-audit schema; audit a registry first (drift-audit run)")
    rows = [HistoryRow(*row) for row in session.execute(history_query(where))]
    if not rows:
        raise AuditError(_why_empty(session, where))
    return rows


def _why_empty(session: Session, where: HistoryFilter) -> str:
    """Which filter matched nothing, with the names that exist."""
    models = _names(session, ModelDrop.model_name, None)
    if not models:
        return "the database holds no audits yet; audit a registry first (drift-audit run)"
    if where.model is not None and where.model not in models:
        return (
            f"no audits of model {where.model!r}; change --model to one of: {_listing(where.model, models)}"
        )
    for option, column, wanted in (
        ("--method", ImportanceRow.method, where.method),
        ("--feature", ImportanceRow.feature, where.feature),
    ):
        if wanted is not None:
            known = _names(session, column, where.model)
            if wanted not in known:
                listing = _listing(wanted, known)
                return f"no {option[2:]} {wanted!r} in the figures; change {option} to one of: {listing}"
    return (
        f"no figures of that feature and method in the {where.weeks} latest audited week(s); "
        "raise --weeks or drop a filter"
    )


def _names(session: Session, column: InstrumentedAttribute[str], model: str | None) -> list[str]:
    query = (
        select(column)
        .select_from(ImportanceRow)
        .join(AuditRun, AuditRun.id == ImportanceRow.run_id)
        .join(ModelDrop, ModelDrop.id == AuditRun.drop_id)
        .where(AuditRun.status == RunStatus.SUCCEEDED.value)
        .distinct()
    )
    if model is not None:
        query = query.where(ModelDrop.model_name == model)
    return sorted(str(name) for name in session.scalars(query))


def _listing(wanted: str, known: list[str]) -> str:
    """The closest names first, at most `_LISTED` of them."""
    close = difflib.get_close_matches(wanted, known, n=3)
    names = [*close, *(name for name in known if name not in close)]
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f" (and {more} more)" if more > 0 else "")


def report_history(
    session: Session,
    model_name: str,
    week: dt.date,
    *,
    weeks: int = DEFAULT_WEEKS,
    top_k: int = DEFAULT_TOP_K,
) -> tuple[ImportanceHistory, ...]:
    """Recent figures of this week's top features, one `ImportanceHistory` per method.

    For each method with per-feature figures in the drop of `week`: its `top_k` features by this
    week's rank (rank 1 first), and their values in the `weeks` latest audited drops of
    `model_name` up to and including `week`, oldest first. Only current figures count (succeeded
    runs: failed runs have none, a re-audit's superseded run is skipped); a feature without a
    figure in a week (added later, or not scored) is NaN there. Methods come in the order the
    audit stored them. Empty when `week` has no current audit. Only figures of this week's version
    of each method are drawn (`Importance.method_version`): another version's are NaN.

    Two queries: the drops' current runs, then the figures of those runs joined to this week's
    top rows (``importances (run_id, method, rank)`` finds them; the unique
    ``(run_id, method, feature)`` index the other weeks' values).
    """
    if weeks < 1:
        raise ValueError(f"weeks must be >= 1, got {weeks}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    runs = session.execute(
        select(ModelDrop.week, AuditRun.id)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(
            ModelDrop.model_name == model_name,
            ModelDrop.week <= week,
            AuditRun.status == RunStatus.SUCCEEDED.value,
        )
        .order_by(ModelDrop.week.desc(), AuditRun.id.desc())
        .limit(weeks)
    ).all()
    if not runs or runs[0].week != week:
        return ()
    chosen = sorted(runs)  # oldest week first
    week_of_run = {run.id: index for index, run in enumerate(chosen)}
    top = (
        select(
            ImportanceRow.id,
            ImportanceRow.method,
            ImportanceRow.feature,
            ImportanceRow.rank,
            ImportanceRow.method_version,
        )
        .where(ImportanceRow.run_id == runs[0].id, ImportanceRow.rank <= top_k)
        .subquery()
    )
    figures = session.execute(
        select(top.c.method, top.c.feature, top.c.rank, ImportanceRow.run_id, ImportanceRow.value)
        .select_from(top)
        .join(
            ImportanceRow,
            and_(
                ImportanceRow.method == top.c.method,
                ImportanceRow.feature == top.c.feature,
                ImportanceRow.method_version == top.c.method_version,
            ),
        )
        .where(ImportanceRow.run_id.in_(list(week_of_run)))
        .order_by(top.c.id)
    ).all()
    return _histories(
        [(f.method, f.feature, f.rank, week_of_run[f.run_id], f.value) for f in figures],
        tuple(run.week for run in chosen),
    )


def _histories(
    figures: Sequence[tuple[str, str, int, int, float]], weeks: tuple[dt.date, ...]
) -> tuple[ImportanceHistory, ...]:
    """One `ImportanceHistory` per method, in the order methods first appear in `figures`, from
    (method, feature, this week's rank, index of the week, value); features by rank."""
    by_method: dict[str, dict[str, tuple[int, dict[int, float]]]] = {}
    for method, feature, rank, week_index, value in figures:
        by_method.setdefault(method, {}).setdefault(feature, (rank, {}))[1][week_index] = value
    histories = []
    for method, features in by_method.items():
        ranked = sorted(features.items(), key=lambda item: item[1][0])
        values = np.full((len(weeks), len(ranked)), np.nan)
        for column, (_, (_, by_week)) in enumerate(ranked):
            for row, value in by_week.items():
                values[row, column] = value
        histories.append(ImportanceHistory(method, weeks, tuple(name for name, _ in ranked), values))
    return tuple(histories)
