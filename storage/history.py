"""The importance history of the latest audited weeks, as rows: the query of ``drift-audit history``.

The same figures as the ``importance_history`` view, each with its drift call (``importance_changes``
verdict) when the drop was compared with a previous one. Filters are bound parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib

from sqlalchemy import Select, and_, inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from audit.types import AuditError, RunStatus
from storage.models import AuditRun, FeatureDriftRow, ImportanceRow, ModelDrop

DEFAULT_WEEKS = 12
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
    #: This method's call on the feature against the previous drop (`stable`, `changed`, `new`,
    #: `removed`), None for a drop that was not compared (the first one).
    verdict: str | None


def history_query(
    where: HistoryFilter,
) -> Select[dt.date, str, str, str, float, float | None, int, str]:
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
    rows = [HistoryRow(*row._tuple()) for row in session.execute(history_query(where))]
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
