"""Read and write audits. Every function takes an open `Session`; the caller owns the transaction.

Write protocol of one audit (see flows/weekly_audit.py):
1. `start_run` in its own transaction, so even a crash leaves a ``running`` (later ``failed``) row;
2. `record_success` in ONE transaction: the drop's facts, the figures (the reseeded copies' and the
   frozen-set model's too), and the replacement of any earlier figures of the same drop (re-audit),
   or `record_failure` in its own transaction, which leaves every figure as it was;
3. `save_assessment`: the comparison with the previous drop and the drift call, replacing any
   earlier ones of the same run.

Concurrency: two audits of the same drop may run at once (two flow runs, two workers). `start_run`
creates the drop's row with INSERT ... ON CONFLICT DO NOTHING, so both find the same row.
`record_success` and `save_assessment` first lock that row (``SELECT ... FOR NO KEY UPDATE`` on
PostgreSQL; SQLite lets one writer at a time in and the others wait, see `storage.session`), so the
replacement of a drop's figures is serialized: the audit that commits last holds the figures, the
other one is ``superseded``, and there is never more than one set.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit.types import (
    AuditSummary,
    DriftAssessment,
    DropVerdict,
    FeatureAssessment,
    FeatureDrift,
    Importance,
    MethodAgreement,
    MethodComparison,
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
    Base,
    ComparisonRow,
    DropVerdictRow,
    FeatureDriftRow,
    FeatureRow,
    FeatureVerdictRow,
    ImportanceRow,
    MethodAgreementRow,
    MethodResult,
    ModelDrop,
    ModelImportanceRow,
    ModelProfileRow,
    ProfileRow,
    ReportDeliveryRow,
    utc_now,
)

_ERROR_LIMIT = 4000


class ModelKind(StrEnum):
    """`model_importances.kind`: which extra model of a run a figure belongs to."""

    #: A reseeded copy of the drop's model (`AuditSummary.copies`), labelled by its file name.
    COPY = "copy"
    #: The previous drop's model on this drop's eval sample (`AuditSummary.frozen`), labelled by its week.
    FROZEN = "frozen"


class DeliveryStatus(StrEnum):
    """`report_deliveries.status`."""

    #: The report file was written (`path`).
    WRITTEN = "written"
    #: The report was e-mailed (`emailed_to`, `message_id`).
    SENT = "sent"
    #: Sending failed (`error`).
    FAILED = "failed"


#: Tables holding a run's comparison with the previous drop and its drift call (`save_assessment`).
_ASSESSMENT_TABLES = (
    ComparisonRow,
    FeatureDriftRow,
    FeatureVerdictRow,
    DropVerdictRow,
    MethodAgreementRow,
)
#: Every table holding figures of a run: a re-audit deletes the earlier runs' rows of all of them.
_FIGURE_TABLES = (
    ImportanceRow,
    ProfileRow,
    MethodResult,
    ModelImportanceRow,
    ModelProfileRow,
    *_ASSESSMENT_TABLES,
)


def start_run(
    session: Session, *, model_name: str, week: dt.date, model_path: Path, flow_run_id: str | None = None
) -> int:
    """Create (or find) the drop's row and a new ``running`` run for it; returns the run id.

    Safe when another process starts a run of the same drop at the same time: both get the one row.
    """
    drop_id = _drop_id(session, model_name, week)
    if drop_id is None:
        _insert_drop(session, model_name, week, model_path)
        drop_id = _drop_id(session, model_name, week)
        if drop_id is None:  # pragma: no cover - the row was just inserted or found
            raise RuntimeError(f"model_drops row of {model_name} {week} vanished after its insert")
    run = AuditRun(drop_id=drop_id, status=RunStatus.RUNNING.value, flow_run_id=flow_run_id)
    session.add(run)
    session.flush()
    return run.id


def _drop_id(session: Session, model_name: str, week: dt.date) -> int | None:
    return session.scalars(
        select(ModelDrop.id).where(ModelDrop.model_name == model_name, ModelDrop.week == week)
    ).one_or_none()


def _insert_drop(session: Session, model_name: str, week: dt.date, model_path: Path) -> None:
    """INSERT the drop's row unless it exists: a concurrent insert of the same (model, week) waits
    for the other transaction and then does nothing (PostgreSQL, SQLite: ON CONFLICT DO NOTHING)."""
    values = {"model_name": model_name, "week": week, "path": str(model_path), "created_at": utc_now()}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(ModelDrop).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(ModelDrop).values(values).on_conflict_do_nothing())
    else:  # other backends: a savepoint, and the unique violation means another process won
        try:
            with session.begin_nested():
                session.execute(insert(ModelDrop).values(values))
        except IntegrityError:
            pass


def _lock_drop(session: Session, run_id: int) -> ModelDrop:
    """The drop of `run_id`, its row locked until the transaction ends.

    PostgreSQL: ``FOR NO KEY UPDATE``, which waits for another transaction holding the lock (a
    concurrent audit of the same drop) and lets `start_run` insert runs of the drop meanwhile.
    SQLite has no row locks: its writers are serialized (one write transaction at a time, the
    others wait up to the busy timeout set in `storage.session`).
    """
    return session.scalars(
        select(ModelDrop)
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(AuditRun.id == run_id)
        .with_for_update(of=ModelDrop, key_share=True)
        .execution_options(populate_existing=True)
    ).one()


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
    copies: Sequence[ModelImportances] = (),
    frozen: ModelImportances | None = None,
    feature_names: Sequence[str] | None = None,
    evaluation: ModelEvaluation | None = None,
) -> None:
    """Store a finished audit's figures and make them the drop's current ones.

    `copies` (the drop's reseeded models) and `frozen` (the previous drop's model on this drop's
    eval sample) are stored beside the primary model's figures, labelled by `ModelImportances.label`.
    `feature_names` (the primary model's input features, in input order; default: those of the
    first method with per-feature figures) replace the drop's rows of `features`. `evaluation` is the
    model's loss and metric on the eval sample (None: not evaluated; its `n_samples` must be
    `n_eval_samples`).
    Figures of earlier runs of the same drop (their comparisons and drift calls included) are
    deleted and those runs marked ``superseded``, in the caller's transaction: readers see either
    the old figures or the new ones, never both. The drop's row is locked first, so two audits of
    the same drop storing at once are serialized (the later one supersedes the earlier one).
    """
    if evaluation is not None and evaluation.n_samples != n_eval_samples:
        raise ValueError(
            f"evaluation covers {evaluation.n_samples} samples but the run audited {n_eval_samples}; "
            "evaluate the model on the run's eval sample"
        )
    labels = [copy.label for copy in copies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"copies must have distinct labels, got {labels}")
    names = _feature_names(outcomes) if feature_names is None else tuple(feature_names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"feature names must be unique, got {', '.join(duplicates)} more than once")
    drop = _lock_drop(session, run_id)
    run = session.get_one(AuditRun, run_id)
    drop.path = str(facts.path)
    drop.content_hash = facts.content_hash
    drop.input_shape = json.dumps(list(facts.input_shape))
    drop.output_shape = json.dumps(list(facts.output_shape))
    drop.n_parameters = facts.n_parameters
    drop.task = facts.task.value
    earlier = select(AuditRun.id).where(AuditRun.drop_id == drop.id, AuditRun.id != run_id)
    for table in _FIGURE_TABLES:
        session.execute(delete(table).where(table.run_id.in_(earlier)))
    session.execute(
        update(AuditRun)
        .where(AuditRun.id.in_(earlier), AuditRun.status == RunStatus.SUCCEEDED.value)
        .values(status=RunStatus.SUPERSEDED.value)
    )
    session.execute(delete(FeatureRow).where(FeatureRow.drop_id == drop.id))
    _insert(
        session,
        FeatureRow,
        [{"drop_id": drop.id, "position": position, "name": name} for position, name in enumerate(names)],
    )
    session.add_all([_method_row(run_id, outcome) for outcome in outcomes])
    importances = [outcome.importance for outcome in outcomes if outcome.importance is not None]
    _insert(session, ImportanceRow, [row for i in importances for row in _importance_rows(run_id, i)])
    _insert(session, ProfileRow, [row for i in importances for row in _profile_rows(run_id, i)])
    extra = [(ModelKind.COPY, copy) for copy in copies]
    if frozen is not None:
        extra.append((ModelKind.FROZEN, frozen))
    for kind, model in extra:
        _insert(session, ModelImportanceRow, _model_importance_rows(run_id, kind, model))
        _insert(session, ModelProfileRow, _model_profile_rows(run_id, kind, model))
    run.eval_source = eval_source
    run.eval_hash = eval_hash
    run.n_eval_samples = n_eval_samples
    run.n_eval_rows_in_file = n_eval_rows_in_file
    run.n_eval_rows_dropped = n_eval_rows_dropped
    run.eval_sampling_seed = eval_sampling_seed
    _set_evaluation(run, evaluation)
    run.status = RunStatus.SUCCEEDED.value
    run.finished_at = utc_now()


def _feature_names(outcomes: Sequence[MethodOutcome]) -> tuple[str, ...]:
    """The feature names of the first outcome with per-feature figures (all share the model's)."""
    for outcome in outcomes:
        if outcome.importance is not None and outcome.importance.feature_names:
            return tuple(outcome.importance.feature_names)
    return ()


def _set_evaluation(run: AuditRun, evaluation: ModelEvaluation | None) -> None:
    """The evaluation's columns of `run` (NULL without one; a non-finite loss or metric is NULL)."""
    run.eval_loss_name = None if evaluation is None else evaluation.loss_name
    run.eval_loss = None if evaluation is None else _finite(evaluation.loss)
    run.eval_metric_name = None if evaluation is None else evaluation.metric_name
    run.eval_metric = None if evaluation is None else _finite(evaluation.metric)


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
    )


def record_failure(session: Session, run_id: int, error: str) -> None:
    """Mark a run failed with its error; figures stored by earlier runs are left as they were."""
    run = session.get_one(AuditRun, run_id)
    run.status = RunStatus.FAILED.value
    run.error = error[:_ERROR_LIMIT]
    run.finished_at = utc_now()


def set_report_path(session: Session, run_id: int, path: Path) -> None:
    session.get_one(AuditRun, run_id).report_path = str(path)


def record_delivery(
    session: Session,
    run_id: int,
    path: Path | str,
    *,
    status: DeliveryStatus | str,
    emailed_to: Sequence[str] | str | None = None,
    message_id: str | None = None,
    error: str | None = None,
) -> int:
    """Log a delivery of the report of `run_id` (the file at `path`, maybe e-mailed); returns its id."""
    session.get_one(AuditRun, run_id)  # a clear error for an unknown run, before the FK's
    row = ReportDeliveryRow(
        run_id=run_id,
        path=str(path),
        status=DeliveryStatus(status).value,
        emailed_to=_recipients(emailed_to),
        message_id=message_id,
        error=None if error is None else error[:_ERROR_LIMIT],
    )
    session.add(row)
    session.flush()
    return row.id


def update_delivery(
    session: Session,
    delivery_id: int,
    *,
    status: DeliveryStatus | str,
    emailed_to: Sequence[str] | str | None = None,
    message_id: str | None = None,
    error: str | None = None,
) -> None:
    """Set the outcome of a delivery (e.g. ``sent`` with its message id); None leaves a field as it was
    and an empty `error` clears it (a delivery first logged as "sending" that then went out)."""
    row = session.get_one(ReportDeliveryRow, delivery_id)
    row.status = DeliveryStatus(status).value
    if emailed_to is not None:
        row.emailed_to = _recipients(emailed_to)
    if message_id is not None:
        row.message_id = message_id
    if error is not None:
        row.error = error[:_ERROR_LIMIT] or None


def was_emailed(session: Session, run_id: int, message_id: str) -> bool:
    """Whether the report of `run_id` with this Message-ID was already sent (a retry must not resend)."""
    query = select(ReportDeliveryRow.id).where(
        ReportDeliveryRow.run_id == run_id,
        ReportDeliveryRow.message_id == message_id,
        ReportDeliveryRow.status == DeliveryStatus.SENT.value,
    )
    return session.scalars(query.limit(1)).first() is not None


def _recipients(emailed_to: Sequence[str] | str | None) -> str | None:
    """Recipients as stored: comma-separated (a string is taken as one address)."""
    if emailed_to is None:
        return None
    addresses = [emailed_to] if isinstance(emailed_to, str) else list(emailed_to)
    bad = [address for address in addresses if "," in address or not address.strip()]
    if bad:
        raise ValueError(f"e-mail addresses must be non-empty and hold no comma, got {bad}")
    return ",".join(address.strip() for address in addresses)


def save_comparisons(
    session: Session, run_id: int, previous_run_id: int, comparisons: Sequence[MethodComparison]
) -> bool:
    """Replace the stored rank statistics of `run_id` (and any drift call: see `save_assessment`)."""
    return save_assessment(session, run_id, previous_run_id, comparisons, None)


def save_assessment(
    session: Session,
    run_id: int,
    previous_run_id: int | None,
    comparisons: Sequence[MethodComparison],
    assessment: DriftAssessment | None,
) -> bool:
    """Replace the comparison of `run_id` with the run of the previous drop, and its drift call.

    Deletes the run's rows of `comparisons`, `feature_drifts`, `feature_verdicts`, `drop_verdicts`
    and `method_agreement`, then stores `comparisons` and `assessment` (None: no drift call).
    `previous_run_id` None (the first drop: nothing to compare) only clears them.

    Returns False, storing nothing, when `run_id` is no longer its drop's current run (another
    audit of the drop stored its figures meanwhile: only that run's call may be stored).
    """
    if previous_run_id is None and (comparisons or assessment is not None):
        raise ValueError(f"run {run_id}: comparisons and a drift call need the previous drop's run id")
    _lock_drop(session, run_id)
    for table in _ASSESSMENT_TABLES:
        session.execute(delete(table).where(table.run_id == run_id))
    # read after the lock (and on SQLite after the first write, which waits for other writers)
    status = session.scalars(
        select(AuditRun.status).where(AuditRun.id == run_id).execution_options(populate_existing=True)
    ).one()
    if status != RunStatus.SUCCEEDED.value:
        return False
    if previous_run_id is None:
        return True
    _insert(session, ComparisonRow, [_comparison_row(run_id, previous_run_id, c) for c in comparisons])
    if assessment is None:
        return True
    _insert(session, FeatureDriftRow, [_drift_row(run_id, previous_run_id, d) for d in assessment.drifts])
    _insert(session, FeatureVerdictRow, [_feature_verdict_row(run_id, f) for f in assessment.features])
    _insert(session, MethodAgreementRow, [_agreement_row(run_id, a) for a in assessment.agreement])
    _insert(
        session,
        DropVerdictRow,
        [
            {
                "run_id": run_id,
                "previous_run_id": previous_run_id,
                "verdict": assessment.verdict.value,
                "reason": assessment.reason,
                "n_history": assessment.n_history,
                "n_copies": assessment.n_copies,
                "verdict_methods": ",".join(assessment.verdict_methods),
            }
        ],
    )
    return True


def load_assessment(session: Session, run_id: int) -> tuple[DropVerdict, str] | None:
    """The stored drop verdict of `run_id` and its reason, or None when it has none (first drop)."""
    row = session.scalars(select(DropVerdictRow).where(DropVerdictRow.run_id == run_id)).one_or_none()
    return None if row is None else (DropVerdict(row.verdict), row.reason)


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


def _importance_rows(run_id: int, importance: Importance) -> list[dict[str, Any]]:
    ranks = importance.ranks
    return [
        {
            "run_id": run_id,
            "method": importance.method,
            "feature": name,
            "position": position,
            "value": float(importance.values[position]),
            "std": None if importance.std is None else float(importance.std[position]),
            "rank": int(ranks[position]),
        }
        for position, name in enumerate(importance.feature_names)
    ]


def _profile_rows(run_id: int, importance: Importance) -> list[dict[str, Any]]:
    if importance.profile is None:
        return []
    return [
        {
            "run_id": run_id,
            "method": importance.method,
            "feature": name,
            "step": step,
            "value": float(importance.profile[step, position]),
        }
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
        outcomes=outcomes,
        copies=tuple(model for kind, model in extra if kind is ModelKind.COPY),
        frozen=next((model for kind, model in extra if kind is ModelKind.FROZEN), None),
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


def _importance(
    method: str,
    rows: Sequence[tuple[str, float, float | None]],
    profile: dict[tuple[str, int], float] | None,
    *,
    parameters: dict[str, Any],
    signed: bool,
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
    )


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
                )
            )
        kind, label = key
        models.append((ModelKind(kind), ModelImportances(label=label, importances=tuple(importances))))
    return models


def _model_importance_rows(run_id: int, kind: ModelKind, model: ModelImportances) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "kind": kind.value,
            "label": model.label,
            "method": importance.method,
            "feature": name,
            "position": position,
            "value": float(importance.values[position]),
            "std": None if importance.std is None else float(importance.std[position]),
            "signed": importance.signed,
        }
        for importance in model.importances
        for position, name in enumerate(importance.feature_names)
    ]


def _model_profile_rows(run_id: int, kind: ModelKind, model: ModelImportances) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "kind": kind.value,
            "label": model.label,
            "method": importance.method,
            "feature": name,
            "step": step,
            "value": float(importance.profile[step, position]),
        }
        for importance in model.importances
        if importance.profile is not None
        for position, name in enumerate(importance.profile_labels)
        for step in range(importance.profile.shape[0])
    ]


def _insert(session: Session, table: type[Base], rows: list[dict[str, Any]]) -> None:
    """ORM bulk INSERT of `rows` (one executemany: a drop has ~10 methods x ~100 features)."""
    if rows:
        session.execute(insert(table), rows)


def _finite(value: float | None) -> float | None:
    """`value` as a float, None when missing or not finite (SQLite cannot store NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _comparison_row(run_id: int, previous_run_id: int, comparison: MethodComparison) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "previous_run_id": previous_run_id,
        "method": comparison.method,
        "spearman": _finite(comparison.spearman),
        "top_k": comparison.top_k,
        "top_k_overlap": _finite(comparison.top_k_overlap),
        "kendall": _finite(comparison.kendall),
        "ndcg": _finite(comparison.ndcg),
        "profile_distance": _finite(comparison.profile_distance),
    }


def _drift_row(run_id: int, previous_run_id: int, drift: FeatureDrift) -> dict[str, Any]:
    band = drift.band
    return {
        "run_id": run_id,
        "previous_run_id": previous_run_id,
        "method": drift.method,
        "feature": drift.feature,
        "value": _finite(drift.value),
        "previous_value": _finite(drift.previous_value),
        "delta": _finite(drift.delta),
        "delta_se": _finite(drift.delta_se),
        "rank": drift.rank,
        "previous_rank": drift.previous_rank,
        "rank_change": drift.rank_change,
        "change": _finite(drift.change),
        "relative_change": _finite(drift.relative),
        "band_scale": None if band is None else _finite(band.scale),
        "band_half_width": None if band is None else _finite(band.half_width),
        "band_percent": None if band is None else _finite(band.percent),
        "band_sampling_scale": None if band is None else _finite(band.sampling_scale),
        "band_source": None if band is None else band.source.value,
        "band_observations": None if band is None else band.n_observations,
        "z": _finite(drift.z),
        "profile_distance": _finite(drift.profile_distance),
        "profile_band": _finite(drift.profile_band),
        "verdict": drift.verdict.value,
        "cause": None if drift.cause is None else drift.cause.value,
    }


def _feature_verdict_row(run_id: int, feature: FeatureAssessment) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": feature.feature,
        "verdict": feature.verdict.value,
        "methods_flagged": ",".join(feature.methods_flagged),
        "n_flagged": feature.agreement,
        "n_methods": feature.n_methods,
        "direction": feature.direction,
        "strength": _finite(feature.strength) or 0.0,
        "cause": None if feature.cause is None else feature.cause.value,
        "reason": feature.reason,
    }


def _agreement_row(run_id: int, agreement: MethodAgreement) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "method": agreement.method,
        "other_method": agreement.other_method,
        "spearman": _finite(agreement.spearman),
    }
