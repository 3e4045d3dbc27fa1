"""Retention: which runs, figures and files `drift-audit prune --keep-weeks N` removes, and removing
the rows in the caller's transaction (flows/retention.py removes the files after the commit).

What goes: every run of each drop dated more than N weeks before `as_of` (`cutoff`), with every row
keyed by those runs (`RUN_TABLES`: figures, profiles, method results, the other models' figures,
input summaries, comparisons, drift calls, input and performance drift, delivery log) and the drop's
`features`. The `model_drops` row stays, marked with ``pruned_at``: without it the next run would
find the drop in the registry unaudited and audit it again. What stays although it is old:

- the newest audited drop of each model (a model that stopped retraining keeps its last audit);
- the baseline: the drop a kept run was compared with (``previous_run_id`` of the oldest kept
  week's comparison and drift call). It keeps its figures but loses its own comparison with the
  pruned drop before it;
- a drop with an audit running (a fresh lease: storage.leases), so a backfill of old weeks is not
  cut from under its feet. Expired leases are marked ``interrupted`` first, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from audit.types import RunStatus
from storage.leases import expire_leases
from storage.models import (
    AuditRun,
    Base,
    ComparisonRow,
    DropVerdictRow,
    FeatureDriftRow,
    FeatureRow,
    FeatureSummaryRow,
    FeatureVerdictRow,
    ImportanceRow,
    InputDriftRow,
    MethodAgreementRow,
    MethodResult,
    ModelDrop,
    ModelImportanceRow,
    ModelProfileRow,
    PerformanceDriftRow,
    ProfileRow,
    ReportDeliveryRow,
    utc_now,
)

#: Tables whose rows name a run they compare with (``previous_run_id``): a row of a kept run that
#: names a pruned run is removed with it.
COMPARED_TABLES: tuple[type[Base], ...] = (
    ComparisonRow,
    FeatureDriftRow,
    DropVerdictRow,
    InputDriftRow,
    PerformanceDriftRow,
)
#: Every table keyed by ``run_id``, in the order rows are deleted (children before `audit_runs`).
RUN_TABLES: tuple[type[Base], ...] = (
    ImportanceRow,
    ProfileRow,
    MethodResult,
    ModelImportanceRow,
    ModelProfileRow,
    FeatureSummaryRow,
    ComparisonRow,
    FeatureDriftRow,
    FeatureVerdictRow,
    DropVerdictRow,
    MethodAgreementRow,
    InputDriftRow,
    PerformanceDriftRow,
    ReportDeliveryRow,
)


@dataclass(frozen=True, order=True)
class KeptDrop:
    """An old drop that stays, and why (``newest``, ``baseline``, ``running``)."""

    model_name: str
    week: dt.date
    reason: str


@dataclass(frozen=True)
class PrunePlan:
    """What a prune removes: rows per table, the pruned drops, and what their files are named by."""

    keep_weeks: int
    as_of: dt.date
    #: Drops dated before this day are pruned (`as_of` minus `keep_weeks` weeks).
    cutoff: dt.date
    #: (model, week) of each drop pruned now, oldest first.
    drops: tuple[tuple[str, dt.date], ...]
    kept: tuple[KeptDrop, ...]
    #: Rows removed per table (``model_drops``: rows marked ``pruned_at``), tables in delete order.
    rows: dict[str, int]
    #: Runs marked ``interrupted`` before planning (their lease had expired).
    interrupted: int
    #: Report files the pruned runs wrote (``report_path``, the delivery log), none a kept run wrote.
    report_paths: tuple[str, ...]
    #: Content hashes of the pruned drops' primary models that no other drop has: their method cache
    #: entries go (`flows.method_tasks.method_cache_prefix`).
    model_hashes: tuple[str, ...]
    #: Content keys of the pruned runs' staged sources (``source_hash``) that no kept run has.
    source_hashes: tuple[str, ...]
    _drop_ids: tuple[int, ...] = field(default=(), repr=False)
    _run_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def cutoff_date(as_of: dt.date, keep_weeks: int) -> dt.date:
    """The first day kept: drops dated before it are pruned."""
    if keep_weeks < 1:
        raise ValueError(f"keep_weeks must be at least 1, got {keep_weeks}")
    return as_of - dt.timedelta(weeks=keep_weeks)


def plan_prune(session: Session, keep_weeks: int, as_of: dt.date) -> PrunePlan:
    """What `prune` removes; writes only the ``interrupted`` marks of expired leases.

    Call it in the transaction that then calls `apply_prune`: on PostgreSQL the old drops' rows are
    locked here (``FOR UPDATE``: an audit starting a run of one waits for the prune), on SQLite the
    caller opens the transaction as a writer (``BEGIN IMMEDIATE``).
    """
    cutoff = cutoff_date(as_of, keep_weeks)
    interrupted = len(expire_leases(session))
    old = session.execute(
        select(ModelDrop.id, ModelDrop.model_name, ModelDrop.week, ModelDrop.pruned_at)
        .where(ModelDrop.week < cutoff)
        .order_by(ModelDrop.model_name, ModelDrop.week)
        .with_for_update(of=ModelDrop)
    ).all()
    kept = [*_newest_audited(session, cutoff), *_running(session, cutoff)]
    kept_ids = {drop_id for drop_id, _ in kept}
    candidates = {row.id: row for row in old if row.id not in kept_ids}
    baselines = _baselines(session, list(candidates))
    kept += [(drop_id, "baseline") for drop_id in baselines]
    pruned_ids = [drop_id for drop_id in candidates if drop_id not in baselines]
    runs = session.execute(
        select(AuditRun.id, AuditRun.drop_id).where(AuditRun.drop_id.in_(pruned_ids))
    ).all()
    run_ids = [run_id for run_id, _ in runs]
    with_runs = {drop_id for _, drop_id in runs}
    # pruned now: not pruned before, or audited again since (and not newest: a failed re-audit)
    newly = [d for d in pruned_ids if candidates[d].pruned_at is None or d in with_runs]
    names = {row.id: (row.model_name, row.week) for row in old}
    return PrunePlan(
        keep_weeks=keep_weeks,
        as_of=as_of,
        cutoff=cutoff,
        drops=tuple(sorted(names[drop_id] for drop_id in newly)),
        kept=tuple(sorted(KeptDrop(*names[drop_id], reason) for drop_id, reason in kept if drop_id in names)),
        rows=_row_counts(session, run_ids, pruned_ids, len(newly)),
        interrupted=interrupted,
        report_paths=_report_paths(session, run_ids),
        model_hashes=_model_hashes(session, pruned_ids),
        source_hashes=_source_hashes(session, run_ids),
        _drop_ids=tuple(pruned_ids),
        _run_ids=tuple(run_ids),
    )


def apply_prune(session: Session, plan: PrunePlan) -> None:
    """Delete the rows of `plan` and mark its drops ``pruned_at``, in the caller's transaction."""
    runs, drops = list(plan._run_ids), list(plan._drop_ids)
    for table in RUN_TABLES:
        session.execute(delete(table).where(_of_runs(table, runs)))
    session.execute(delete(FeatureRow).where(FeatureRow.drop_id.in_(drops)))
    session.execute(delete(AuditRun).where(AuditRun.id.in_(runs)))
    session.execute(
        update(ModelDrop)
        .where(ModelDrop.id.in_(drops))
        .values(pruned_at=utc_now())
        .execution_options(synchronize_session=False)
    )


def _of_runs(table: type[Base], run_ids: Collection[int]) -> ColumnElement[bool]:
    """Rows of `table` keyed by one of `run_ids`, or (a comparison) naming one as the previous run."""
    keyed = table.run_id.in_(run_ids)  # type: ignore[attr-defined]
    if table in COMPARED_TABLES:
        return or_(keyed, table.previous_run_id.in_(run_ids))  # type: ignore[attr-defined]
    return keyed  # type: ignore[no-any-return]


def _newest_audited(session: Session, cutoff: dt.date) -> list[tuple[int, str]]:
    """The newest drop with a succeeded run of each model, when it is older than `cutoff`."""
    newest = (
        select(ModelDrop.model_name, func.max(ModelDrop.week).label("week"))
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(AuditRun.status == RunStatus.SUCCEEDED.value)
        .group_by(ModelDrop.model_name)
        .subquery()
    )
    ids = session.scalars(
        select(ModelDrop.id)
        .join(newest, (newest.c.model_name == ModelDrop.model_name) & (newest.c.week == ModelDrop.week))
        .where(ModelDrop.week < cutoff)
    )
    return [(drop_id, "newest") for drop_id in ids]


def _running(session: Session, cutoff: dt.date) -> list[tuple[int, str]]:
    """Old drops with a run still ``running`` under a fresh lease (expired ones were marked first)."""
    ids = session.scalars(
        select(AuditRun.drop_id)
        .join(ModelDrop, ModelDrop.id == AuditRun.drop_id)
        .where(ModelDrop.week < cutoff, AuditRun.status == RunStatus.RUNNING.value)
        .distinct()
    )
    return [(drop_id, "running") for drop_id in ids]


def _baselines(session: Session, candidate_drops: list[int]) -> set[int]:
    """Candidate drops whose runs a run of another drop, not a candidate, was compared with."""
    candidate_runs = select(AuditRun.id).where(AuditRun.drop_id.in_(candidate_drops))
    baselines: set[int] = set()
    for table in COMPARED_TABLES:
        previous = (
            select(AuditRun.drop_id)
            .join(table, table.previous_run_id == AuditRun.id)  # type: ignore[attr-defined]
            .where(
                AuditRun.id.in_(candidate_runs),
                table.run_id.not_in(candidate_runs),  # type: ignore[attr-defined]
            )
            .distinct()
        )
        baselines.update(session.scalars(previous))
    return baselines


def _row_counts(session: Session, run_ids: list[int], drop_ids: list[int], n_drops: int) -> dict[str, int]:
    counts = {}
    for table in RUN_TABLES:
        counts[table.__tablename__] = (
            session.scalar(select(func.count()).select_from(table).where(_of_runs(table, run_ids))) or 0
        )
    counts[FeatureRow.__tablename__] = (
        session.scalar(select(func.count()).select_from(FeatureRow).where(FeatureRow.drop_id.in_(drop_ids)))
        or 0
    )
    counts[AuditRun.__tablename__] = len(run_ids)
    counts[ModelDrop.__tablename__] = n_drops
    return counts


def _report_paths(session: Session, run_ids: list[int]) -> tuple[str, ...]:
    """Report files of the pruned runs that no kept run wrote too (two models sharing ``--out``)."""

    def paths(pruned: bool) -> set[str]:
        runs = AuditRun.id.in_(run_ids) if pruned else AuditRun.id.not_in(run_ids)
        written = session.scalars(select(AuditRun.report_path).where(runs, AuditRun.report_path.is_not(None)))
        delivered = session.scalars(
            select(ReportDeliveryRow.path).join(AuditRun, AuditRun.id == ReportDeliveryRow.run_id).where(runs)
        )
        return {path for path in [*written, *delivered] if path}

    return tuple(sorted(paths(True) - paths(False)))


def _model_hashes(session: Session, drop_ids: list[int]) -> tuple[str, ...]:
    def hashes(pruned: bool) -> set[str]:
        drops = (
            ModelDrop.id.in_(drop_ids)
            if pruned
            else (ModelDrop.id.not_in(drop_ids) & ModelDrop.pruned_at.is_(None))
        )
        return {h for h in session.scalars(select(ModelDrop.content_hash).where(drops)) if h}

    return tuple(sorted(hashes(True) - hashes(False)))


def _source_hashes(session: Session, run_ids: list[int]) -> tuple[str, ...]:
    def hashes(pruned: bool) -> set[str]:
        runs = AuditRun.id.in_(run_ids) if pruned else AuditRun.id.not_in(run_ids)
        return {h for h in session.scalars(select(AuditRun.source_hash).where(runs)) if h}

    return tuple(sorted(hashes(True) - hashes(False)))
