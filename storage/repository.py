"""Read and write audits. Every function takes an open `Session`; the caller owns the transaction.

Write protocol of one audit (see flows/weekly_audit.py):
1. `start_run` in its own transaction, so even a crash leaves a ``running`` (later ``failed``) row;
2. `record_success` in ONE transaction: the drop's facts, the figures, and the replacement of any
   earlier figures of the same drop (re-audit), or `record_failure` in its own transaction, which
   leaves every figure as it was.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from audit.types import (
    AuditSummary,
    Importance,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
    ModelFacts,
    RunStatus,
    Task,
)
from storage.models import (
    AuditRun,
    ComparisonRow,
    ImportanceRow,
    MethodResult,
    ModelDrop,
    ProfileRow,
    utc_now,
)

_ERROR_LIMIT = 4000


def start_run(
    session: Session, *, model_name: str, week: dt.date, model_path: Path, flow_run_id: str | None = None
) -> int:
    """Create (or find) the drop's row and a new ``running`` run for it; returns the run id."""
    drop = session.scalars(
        select(ModelDrop).where(ModelDrop.model_name == model_name, ModelDrop.week == week)
    ).one_or_none()
    if drop is None:
        drop = ModelDrop(model_name=model_name, week=week, path=str(model_path))
        session.add(drop)
        session.flush()
    run = AuditRun(drop_id=drop.id, status=RunStatus.RUNNING.value, flow_run_id=flow_run_id)
    session.add(run)
    session.flush()
    return run.id


def record_success(
    session: Session,
    run_id: int,
    *,
    facts: ModelFacts,
    outcomes: Sequence[MethodOutcome],
    eval_source: str | None,
    eval_hash: str | None,
    n_eval_samples: int | None,
    n_eval_rows_in_file: int | None = None,
    n_eval_rows_dropped: int | None = None,
    eval_sampling_seed: int | None = None,
) -> None:
    """Store a finished audit's figures and make them the drop's current ones.

    Figures of earlier runs of the same drop are deleted and those runs marked ``superseded``, in
    the caller's transaction: readers see either the old figures or the new ones, never both.
    """
    run = session.get_one(AuditRun, run_id)
    drop = run.drop
    drop.path = str(facts.path)
    drop.content_hash = facts.content_hash
    drop.input_shape = json.dumps(list(facts.input_shape))
    drop.output_shape = json.dumps(list(facts.output_shape))
    drop.n_parameters = facts.n_parameters
    drop.task = facts.task.value
    earlier = select(AuditRun.id).where(AuditRun.drop_id == drop.id, AuditRun.id != run_id)
    for table in (ImportanceRow, ProfileRow, MethodResult, ComparisonRow):
        session.execute(delete(table).where(table.run_id.in_(earlier)))
    session.execute(
        update(AuditRun)
        .where(AuditRun.id.in_(earlier), AuditRun.status == RunStatus.SUCCEEDED.value)
        .values(status=RunStatus.SUPERSEDED.value)
    )
    for outcome in outcomes:
        session.add(_method_row(run_id, outcome))
        if outcome.importance is not None:
            session.add_all(_importance_rows(run_id, outcome.importance))
            session.add_all(_profile_rows(run_id, outcome.importance))
    run.eval_source = eval_source
    run.eval_hash = eval_hash
    run.n_eval_samples = n_eval_samples
    run.n_eval_rows_in_file = n_eval_rows_in_file
    run.n_eval_rows_dropped = n_eval_rows_dropped
    run.eval_sampling_seed = eval_sampling_seed
    run.status = RunStatus.SUCCEEDED.value
    run.finished_at = utc_now()


def record_failure(session: Session, run_id: int, error: str) -> None:
    """Mark a run failed with its error; figures stored by earlier runs are left as they were."""
    run = session.get_one(AuditRun, run_id)
    run.status = RunStatus.FAILED.value
    run.error = error[:_ERROR_LIMIT]
    run.finished_at = utc_now()


def set_report_path(session: Session, run_id: int, path: Path) -> None:
    session.get_one(AuditRun, run_id).report_path = str(path)


def save_comparisons(
    session: Session, run_id: int, previous_run_id: int, comparisons: Sequence[MethodComparison]
) -> None:
    """Replace the stored rank statistics of `run_id` against `previous_run_id`."""
    session.execute(delete(ComparisonRow).where(ComparisonRow.run_id == run_id))
    session.add_all(
        ComparisonRow(
            run_id=run_id,
            previous_run_id=previous_run_id,
            method=comparison.method,
            spearman=comparison.spearman,
            top_k=comparison.top_k,
            top_k_overlap=comparison.top_k_overlap,
        )
        for comparison in comparisons
    )


def audited_weeks(session: Session, model_name: str) -> set[dt.date]:
    """Weeks of `model_name` whose drop has current (succeeded) figures."""
    rows = session.scalars(
        select(ModelDrop.week)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.SUCCEEDED.value)
    )
    return set(rows)


def load_audit(session: Session, model_name: str, week: dt.date) -> AuditSummary | None:
    """The current audit of the drop of `week`, or None if it has none."""
    run = session.scalars(_succeeded_runs(model_name).where(ModelDrop.week == week)).first()
    return None if run is None else _summary(session, run)


def previous_audit(session: Session, model_name: str, week: dt.date) -> AuditSummary | None:
    """The current audit of the latest drop before `week` (gaps between drops are allowed)."""
    run = session.scalars(
        _succeeded_runs(model_name).where(ModelDrop.week < week).order_by(ModelDrop.week.desc())
    ).first()
    return None if run is None else _summary(session, run)


def latest_audited_week(session: Session, model_name: str) -> dt.date | None:
    weeks = audited_weeks(session, model_name)
    return max(weeks) if weeks else None


def _succeeded_runs(model_name: str) -> Select[AuditRun]:
    return (
        select(AuditRun)
        .join(ModelDrop, AuditRun.drop_id == ModelDrop.id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.SUCCEEDED.value)
        .order_by(AuditRun.id.desc())
    )


def _method_row(run_id: int, outcome: MethodOutcome) -> MethodResult:
    parameters = dict(outcome.importance.parameters) if outcome.importance is not None else {}
    return MethodResult(
        run_id=run_id,
        method=outcome.method,
        status=outcome.status.value,
        reason=outcome.reason,
        parameters=parameters,
        seconds=outcome.seconds,
        signed=outcome.importance is not None and outcome.importance.signed,
    )


def _importance_rows(run_id: int, importance: Importance) -> list[ImportanceRow]:
    ranks = importance.ranks
    return [
        ImportanceRow(
            run_id=run_id,
            method=importance.method,
            feature=name,
            position=position,
            value=float(importance.values[position]),
            std=None if importance.std is None else float(importance.std[position]),
            rank=int(ranks[position]),
        )
        for position, name in enumerate(importance.feature_names)
    ]


def _profile_rows(run_id: int, importance: Importance) -> list[ProfileRow]:
    if importance.profile is None:
        return []
    return [
        ProfileRow(
            run_id=run_id,
            method=importance.method,
            feature=name,
            step=step,
            value=float(importance.profile[step, position]),
        )
        for position, name in enumerate(importance.profile_labels)
        for step in range(importance.profile.shape[0])
    ]


def _profiles(session: Session, run_id: int) -> dict[str, dict[tuple[str, int], float]]:
    """Profile cells of a run by method, keyed by (feature, step)."""
    cells: dict[str, dict[tuple[str, int], float]] = {}
    for row in session.scalars(select(ProfileRow).where(ProfileRow.run_id == run_id)):
        cells.setdefault(row.method, {})[(row.feature, row.step)] = row.value
    return cells


def _summary(session: Session, run: AuditRun) -> AuditSummary:
    drop = run.drop
    rows = session.scalars(
        select(ImportanceRow).where(ImportanceRow.run_id == run.id).order_by(ImportanceRow.position)
    ).all()
    by_method: dict[str, list[ImportanceRow]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append(row)
    results = session.scalars(
        select(MethodResult).where(MethodResult.run_id == run.id).order_by(MethodResult.id)
    ).all()
    profiles = _profiles(session, run.id)
    outcomes = tuple(
        _outcome(result, by_method.get(result.method, []), profiles.get(result.method)) for result in results
    )
    return AuditSummary(
        model_name=drop.model_name,
        week=drop.week,
        run_id=run.id,
        model=ModelFacts(
            path=Path(drop.path),
            content_hash=drop.content_hash or "",
            input_shape=tuple(json.loads(drop.input_shape or "[]")),
            output_shape=tuple(json.loads(drop.output_shape or "[]")),
            n_parameters=drop.n_parameters or 0,
            task=Task(drop.task or Task.REGRESSION.value),
        ),
        n_eval_samples=run.n_eval_samples,
        eval_source=run.eval_source,
        n_eval_rows_in_file=run.n_eval_rows_in_file,
        n_eval_rows_dropped=run.n_eval_rows_dropped,
        eval_sampling_seed=run.eval_sampling_seed,
        outcomes=outcomes,
    )


def _outcome(
    result: MethodResult, rows: list[ImportanceRow], profile: dict[tuple[str, int], float] | None
) -> MethodOutcome:
    importance = None
    if rows or profile:
        names = tuple(row.feature for row in rows)
        # profile-only results (Grad-CAM) label their columns themselves, e.g. "*"
        labels = names if rows else tuple(dict.fromkeys(feature for feature, _ in profile or {}))
        stds = [row.std for row in rows]
        importance = Importance(
            method=result.method,
            feature_names=names,
            values=np.array([row.value for row in rows], dtype=np.float64),
            std=None if not rows or any(s is None for s in stds) else np.array(stds, dtype=np.float64),
            profile=None if not profile else _profile_array(profile, labels),
            parameters=result.parameters,
            signed=result.signed,
            profile_features=None if rows else labels,
        )
    return MethodOutcome(
        method=result.method,
        status=MethodStatus(result.status),
        importance=importance,
        reason=result.reason,
        seconds=result.seconds,
    )


def _profile_array(cells: dict[tuple[str, int], float], names: tuple[str, ...]) -> np.ndarray:
    """(n_steps, n_features) array of the stored cells, features in `names` order."""
    n_steps = 1 + max(step for _, step in cells)
    array = np.full((n_steps, len(names)), np.nan)
    for position, name in enumerate(names):
        for step in range(n_steps):
            array[step, position] = cells.get((name, step), np.nan)
    return array
