"""Read stored audits back into `AuditSummary` (figures, copies, frozen set, evaluation) and ask
which weeks have one. Only a run's current (``succeeded``) figures are read: a superseded or failed
run has none. Every function takes an open `Session`; writes are in `storage.writes`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from audit.types import (
    AuditSummary,
    DropProvenance,
    DropVerdict,
    FeatureSummary,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelEvaluation,
    ModelFacts,
    ModelImportances,
    RunStatus,
    Task,
)
from storage.models import (
    AuditRun,
    DropVerdictRow,
    FeatureSummaryRow,
    ImportanceRow,
    MethodResult,
    ModelDrop,
    ModelImportanceRow,
    ModelKind,
    ModelProfileRow,
    ProfileRow,
)


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


def recent_audits(session: Session, model_name: str, before_week: dt.date, limit: int) -> list[AuditSummary]:
    """The current audits of the `limit` latest drops before `before_week`, oldest first.

    The drift history: `audit.drift.assess_drift` learns its noise bands from their changes.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0:
        return []
    runs = session.scalars(
        _succeeded_runs(model_name)
        .where(ModelDrop.week < before_week)
        .order_by(None)
        .order_by(ModelDrop.week.desc(), AuditRun.id.desc())
        .limit(limit)
    ).all()
    return [_summary(session, run) for run in reversed(runs)]


def previous_week(session: Session, model_name: str, week: dt.date) -> dt.date | None:
    """The week of the latest drop before `week` with a current audit (no figures are loaded)."""
    return session.scalars(
        select(ModelDrop.week)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(
            ModelDrop.model_name == model_name,
            ModelDrop.week < week,
            AuditRun.status == RunStatus.SUCCEEDED.value,
        )
        .order_by(ModelDrop.week.desc())
    ).first()


def audited_weeks(session: Session, model_name: str) -> set[dt.date]:
    """Weeks of `model_name` whose drop has current (succeeded) figures."""
    rows = session.scalars(
        select(ModelDrop.week)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.SUCCEEDED.value)
    )
    return set(rows)


def pruned_weeks(session: Session, model_name: str) -> set[dt.date]:
    """Weeks of `model_name` whose drop `drift-audit prune` removed (and no later audit restored)."""
    return set(
        session.scalars(
            select(ModelDrop.week).where(ModelDrop.model_name == model_name, ModelDrop.pruned_at.is_not(None))
        )
    )


def latest_audited_week(session: Session, model_name: str) -> dt.date | None:
    weeks = audited_weeks(session, model_name)
    return max(weeks) if weeks else None


def load_assessment(session: Session, run_id: int) -> tuple[DropVerdict, str] | None:
    """The stored drop verdict of `run_id` and its reason, or None when it has none (first drop)."""
    row = session.scalars(select(DropVerdictRow).where(DropVerdictRow.run_id == run_id)).one_or_none()
    return None if row is None else (DropVerdict(row.verdict), row.reason)


def verdict_history(
    session: Session, model_name: str, *, until: dt.date | None = None, weeks: int = 12
) -> tuple[tuple[dt.date, DropVerdict], ...]:
    """The drop verdicts of the `weeks` latest audited weeks of `model_name` up to `until`
    (None: all), oldest first; a week without a verdict (the first drop) is left out."""
    query = (
        select(ModelDrop.week, DropVerdictRow.verdict)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .join(DropVerdictRow, DropVerdictRow.run_id == AuditRun.id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.SUCCEEDED.value)
        .order_by(ModelDrop.week.desc())
        .limit(weeks)
    )
    if until is not None:
        query = query.where(ModelDrop.week <= until)
    return tuple((week, DropVerdict(verdict)) for week, verdict in reversed(session.execute(query).all()))


def _succeeded_runs(model_name: str) -> Select[AuditRun]:
    return (
        select(AuditRun)
        .join(ModelDrop, AuditRun.drop_id == ModelDrop.id)
        .where(ModelDrop.model_name == model_name, AuditRun.status == RunStatus.SUCCEEDED.value)
        .order_by(AuditRun.id.desc())
    )


def _provenance(run: AuditRun) -> DropProvenance | None:
    """The stored provenance of `run`, None for a drop of a local folder (or audited before 0007)."""
    if run.source_uri is None:
        return None
    return DropProvenance(
        source_uri=run.source_uri,
        content_hash=run.source_hash or "",
        mlflow_version=run.mlflow_version,
        mlflow_run_id=run.mlflow_run_id,
        mlflow_aliases=tuple(alias for alias in (run.mlflow_aliases or "").split(",") if alias),
        etags=json.loads(run.source_etags) if run.source_etags else {},
    )


def alias_versions(session: Session, model_name: str, alias: str) -> set[int]:
    """MLflow versions of `model_name` that earlier runs saw holding `alias` (MLflow itself keeps only
    the alias's current holder): what ``mlflow://name@alias`` audits besides that holder."""
    rows = session.execute(
        select(AuditRun.mlflow_version, AuditRun.mlflow_aliases)
        .join(ModelDrop, AuditRun.drop_id == ModelDrop.id)
        .where(
            ModelDrop.model_name == model_name,
            AuditRun.mlflow_version.is_not(None),
            AuditRun.mlflow_aliases.is_not(None),
        )
    )
    return {
        version for version, aliases in rows if version is not None and alias in (aliases or "").split(",")
    }


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
    extra = _extra_models(session, run.id)
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
        evaluation=_evaluation(run),
        frozen_evaluation=_frozen_evaluation(run),
        input_summaries=_input_summaries(session, run.id),
        provenance=_provenance(run),
        outcomes=outcomes,
        copies=tuple(model for kind, model in extra if kind is ModelKind.COPY),
        frozen=next((model for kind, model in extra if kind is ModelKind.FROZEN), None),
    )


def _evaluation(run: AuditRun) -> ModelEvaluation | None:
    """The stored evaluation of `run` (NaN for a loss or metric stored as NULL), None without one."""
    if run.eval_loss_name is None or run.eval_metric_name is None:
        return None
    return ModelEvaluation(
        loss_name=run.eval_loss_name,
        loss=math.nan if run.eval_loss is None else run.eval_loss,
        metric_name=run.eval_metric_name,
        metric=math.nan if run.eval_metric is None else run.eval_metric,
        n_samples=run.n_eval_samples or 0,
        loss_se=run.eval_loss_se,
    )


def _frozen_evaluation(run: AuditRun) -> ModelEvaluation | None:
    """The previous drop's model on this run's eval sample (the frozen set), None when not scored."""
    if run.eval_loss_name is None or run.eval_metric_name is None or run.frozen_eval_loss is None:
        return None
    return ModelEvaluation(
        loss_name=run.eval_loss_name,
        loss=run.frozen_eval_loss,
        metric_name=run.eval_metric_name,
        metric=math.nan if run.frozen_eval_metric is None else run.frozen_eval_metric,
        n_samples=run.n_eval_samples or 0,
        loss_se=run.frozen_eval_loss_se,
    )


def _input_summaries(session: Session, run_id: int) -> tuple[FeatureSummary, ...]:
    """The run's per-feature summaries of its eval sample, in feature order."""
    rows = session.scalars(
        select(FeatureSummaryRow)
        .where(FeatureSummaryRow.run_id == run_id)
        .order_by(FeatureSummaryRow.position)
    )
    return tuple(
        FeatureSummary(
            feature=row.feature,
            n=row.n,
            mean=row.mean,
            std=row.std,
            values=np.frombuffer(row.summary_values, dtype="<f8", count=row.n_values).astype(np.float64),
            exact=row.exact,
        )
        for row in rows
    )


def _outcome(
    result: MethodResult, rows: list[ImportanceRow], profile: dict[tuple[str, int], float] | None
) -> MethodOutcome:
    importance = None
    if rows or profile:
        importance = _importance(
            result.method,
            [(row.feature, row.value, row.std) for row in rows],
            profile,
            parameters=result.parameters,
            signed=result.signed,
            method_version=result.method_version,
            direction=_directions(rows),
        )
    return MethodOutcome(
        method=result.method,
        status=MethodStatus(result.status),
        importance=importance,
        reason=result.reason,
        seconds=result.seconds,
    )


def _profiles(session: Session, run_id: int) -> dict[str, dict[tuple[str, int], float]]:
    """Profile cells of a run by method, keyed by (feature, step)."""
    cells: dict[str, dict[tuple[str, int], float]] = {}
    for row in session.scalars(select(ProfileRow).where(ProfileRow.run_id == run_id)):
        cells.setdefault(row.method, {})[(row.feature, row.step)] = row.value
    return cells


def _profile_array(cells: dict[tuple[str, int], float], names: tuple[str, ...]) -> np.ndarray:
    """(n_steps, n_features) array of the stored cells, features in `names` order."""
    n_steps = 1 + max(step for _, step in cells)
    array = np.full((n_steps, len(names)), np.nan)
    for position, name in enumerate(names):
        for step in range(n_steps):
            array[step, position] = cells.get((name, step), np.nan)
    return array


def _importance(
    method: str,
    rows: Sequence[tuple[str, float, float | None]],
    profile: dict[tuple[str, int], float] | None,
    *,
    parameters: dict[str, Any],
    signed: bool,
    method_version: int = 1,
    direction: np.ndarray | None = None,
) -> Importance:
    """An `Importance` from stored (feature, value, std) rows in position order and profile cells."""
    names = tuple(feature for feature, _, _ in rows)
    # profile-only results (Grad-CAM) label their columns themselves, e.g. "*"
    labels = names if rows else tuple(dict.fromkeys(feature for feature, _ in profile or {}))
    stds = [std for _, _, std in rows]
    return Importance(
        method=method,
        feature_names=names,
        values=np.array([value for _, value, _ in rows], dtype=np.float64),
        std=None if not rows or any(s is None for s in stds) else np.array(stds, dtype=np.float64),
        profile=None if not profile else _profile_array(profile, labels),
        parameters=parameters,
        signed=signed,
        profile_features=None if rows else labels,
        method_version=method_version,
        direction=direction,
    )


def _directions(rows: Sequence[ImportanceRow] | Sequence[ModelImportanceRow]) -> np.ndarray | None:
    """The stored directions of a method's rows (in their order), None when the method has none."""
    if not rows or all(row.direction is None for row in rows):
        return None
    return np.array([np.nan if row.direction is None else row.direction for row in rows], dtype=np.float64)


def _extra_models(session: Session, run_id: int) -> list[tuple[ModelKind, ModelImportances]]:
    """The run's reseeded copies and frozen-set model, in the order they were stored."""
    values: dict[tuple[str, str], dict[str, list[ModelImportanceRow]]] = {}
    for row in session.scalars(
        select(ModelImportanceRow).where(ModelImportanceRow.run_id == run_id).order_by(ModelImportanceRow.id)
    ):
        values.setdefault((row.kind, row.label), {}).setdefault(row.method, []).append(row)
    cells: dict[tuple[str, str], dict[str, dict[tuple[str, int], float]]] = {}
    for cell in session.scalars(
        select(ModelProfileRow).where(ModelProfileRow.run_id == run_id).order_by(ModelProfileRow.id)
    ):
        cells.setdefault((cell.kind, cell.label), {}).setdefault(cell.method, {})[
            (cell.feature, cell.step)
        ] = cell.value
    models = []
    for key in dict.fromkeys([*values, *cells]):
        by_method = values.get(key, {})
        profiles = cells.get(key, {})
        importances = []
        for method in dict.fromkeys([*by_method, *profiles]):
            rows = sorted(by_method.get(method, []), key=lambda row: row.position)
            importances.append(
                _importance(
                    method,
                    [(row.feature, row.value, row.std) for row in rows],
                    profiles.get(method),
                    parameters={},
                    signed=any(row.signed for row in rows),
                    method_version=max((row.method_version for row in rows), default=1),
                    direction=_directions(rows),
                )
            )
        kind, label = key
        models.append((ModelKind(kind), ModelImportances(label=label, importances=tuple(importances))))
    return models
