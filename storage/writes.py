"""Write audits: a run, its figures, its comparison and drift call. Every function takes an open
`Session`; the caller owns the transaction. Reading them back: `storage.reads`; the delivery log of
the reports: `storage.delivery_log`.

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
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit.types import (
    DriftAssessment,
    DropProvenance,
    FeatureAssessment,
    FeatureDrift,
    FeatureSummary,
    Importance,
    InputDrift,
    InputDriftAssessment,
    MethodAgreement,
    MethodComparison,
    MethodOutcome,
    ModelEvaluation,
    ModelFacts,
    ModelImportances,
    PerformanceDrift,
    RunStatus,
)
from storage.leases import DEFAULT_LEASE_SECONDS, check_lease
from storage.models import (
    MAX_ERROR_CHARS,
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
    ModelKind,
    ModelProfileRow,
    PerformanceDriftRow,
    ProfileRow,
    utc_now,
)

#: Tables holding a run's comparison with the previous drop and its drift call (`save_assessment`).
_ASSESSMENT_TABLES = (
    ComparisonRow,
    FeatureDriftRow,
    FeatureVerdictRow,
    DropVerdictRow,
    MethodAgreementRow,
    InputDriftRow,
    PerformanceDriftRow,
)


#: Every table holding figures of a run: a re-audit deletes the earlier runs' rows of all of them.
_FIGURE_TABLES = (
    ImportanceRow,
    ProfileRow,
    MethodResult,
    ModelImportanceRow,
    ModelProfileRow,
    FeatureSummaryRow,
    *_ASSESSMENT_TABLES,
)


def start_run(
    session: Session,
    *,
    model_name: str,
    week: dt.date,
    model_path: Path | str,
    flow_run_id: str | None = None,
    provenance: DropProvenance | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> int:
    """Create (or find) the drop's row and a new ``running`` run for it; returns the run id.

    The run holds a lease of `lease_seconds` from now, which its process renews while it works
    (`storage.leases`): a run that stops renewing it is later marked ``interrupted``.

    `model_path` is the model file, or the URI of a remote drop not staged yet; `provenance` (a
    remote drop) is what its listing told, so a run that fails while staging still says where the
    drop came from. Safe when another process starts a run of the same drop at the same time: both
    get the one row.
    """
    drop_id = _drop_id(session, model_name, week)
    if drop_id is None:
        _insert_drop(session, model_name, week, model_path)
        drop_id = _drop_id(session, model_name, week)
        if drop_id is None:  # pragma: no cover - the row was just inserted or found
            raise RuntimeError(f"model_drops row of {model_name} {week} vanished after its insert")
    now = utc_now()
    run = AuditRun(
        drop_id=drop_id,
        status=RunStatus.RUNNING.value,
        flow_run_id=flow_run_id,
        started_at=now,
        heartbeat_at=now,
        lease_seconds=check_lease(lease_seconds),
    )
    _set_provenance(run, provenance)
    session.add(run)
    session.flush()
    return run.id


def _set_provenance(run: AuditRun, provenance: DropProvenance | None) -> None:
    """The provenance columns of `run` (revision 0007); None leaves them as they are."""
    if provenance is None:
        return
    run.source_uri = provenance.source_uri
    run.source_hash = provenance.content_hash or None
    run.source_etags = json.dumps(dict(provenance.etags), sort_keys=True) if provenance.etags else None
    run.mlflow_version = provenance.mlflow_version
    run.mlflow_run_id = provenance.mlflow_run_id
    run.mlflow_aliases = ",".join(provenance.mlflow_aliases) or None


def _drop_id(session: Session, model_name: str, week: dt.date) -> int | None:
    return session.scalars(
        select(ModelDrop.id).where(ModelDrop.model_name == model_name, ModelDrop.week == week)
    ).one_or_none()


def _insert_drop(session: Session, model_name: str, week: dt.date, model_path: Path | str) -> None:
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
    frozen_evaluation: ModelEvaluation | None = None,
    input_summaries: Sequence[FeatureSummary] = (),
    provenance: DropProvenance | None = None,
) -> None:
    """Store a finished audit's figures and make them the drop's current ones.

    `provenance` says where a drop staged from a remote source came from (None: a local folder).

    `copies` (the drop's reseeded models) and `frozen` (the previous drop's model on this drop's
    eval sample) are stored beside the primary model's figures, labelled by `ModelImportances.label`.
    `feature_names` (the primary model's input features, in input order; default: those of the
    first method with per-feature figures) replace the drop's rows of `features`. `evaluation` is the
    model's loss and metric on the eval sample (None: not evaluated; its `n_samples` must be
    `n_eval_samples`), `frozen_evaluation` the previous drop's model's on the same sample (stored
    only with the same loss as `evaluation`). `input_summaries` are the eval sample's per-feature
    summaries (audit/input_drift.py), which later weeks compare their inputs with.
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
    drop.pruned_at = None  # a pruned drop audited again holds figures again
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
    _set_evaluation(run, evaluation, frozen_evaluation)
    _insert(session, FeatureSummaryRow, [_summary_row(run_id, i, s) for i, s in enumerate(input_summaries)])
    _set_provenance(run, provenance)
    run.status = RunStatus.SUCCEEDED.value
    run.finished_at = utc_now()


def replace_method_figures(session: Session, run_id: int, outcomes: Sequence[MethodOutcome]) -> None:
    """Replace the primary model's figures of the `outcomes`' methods in the succeeded run `run_id`
    (a method's re-scoring at a change of its definition: `Importance.method_version`).

    The method's `method_results` row, `importances` and `profiles` rows are replaced; the run's
    other methods, its other models' figures and its comparisons are left as they are (a reseeded
    copy still of the old version is left out of the drop's mean: `audit.drift.drop_models`).
    """
    run = session.get_one(AuditRun, run_id)
    if run.status != RunStatus.SUCCEEDED.value:
        raise ValueError(f"run {run_id} is {run.status}: only a succeeded run's figures are re-scored")
    methods = [outcome.method for outcome in outcomes]
    for table in (ImportanceRow, ProfileRow, MethodResult):
        session.execute(delete(table).where(table.run_id == run_id, table.method.in_(methods)))
    session.add_all([_method_row(run_id, outcome) for outcome in outcomes])
    importances = [outcome.importance for outcome in outcomes if outcome.importance is not None]
    _insert(session, ImportanceRow, [row for i in importances for row in _importance_rows(run_id, i)])
    _insert(session, ProfileRow, [row for i in importances for row in _profile_rows(run_id, i)])


def _feature_names(outcomes: Sequence[MethodOutcome]) -> tuple[str, ...]:
    """The feature names of the first outcome with per-feature figures (all share the model's)."""
    for outcome in outcomes:
        if outcome.importance is not None and outcome.importance.feature_names:
            return tuple(outcome.importance.feature_names)
    return ()


def _set_evaluation(
    run: AuditRun, evaluation: ModelEvaluation | None, frozen: ModelEvaluation | None
) -> None:
    """The evaluation's columns of `run` (NULL without one; a non-finite loss or metric is NULL),
    and the frozen set's when it has the same loss and metric."""
    run.eval_loss_name = None if evaluation is None else evaluation.loss_name
    run.eval_loss = None if evaluation is None else _finite(evaluation.loss)
    run.eval_loss_se = None if evaluation is None else _finite(evaluation.loss_se)
    run.eval_metric_name = None if evaluation is None else evaluation.metric_name
    run.eval_metric = None if evaluation is None else _finite(evaluation.metric)
    same = (
        evaluation is not None
        and frozen is not None
        and (frozen.loss_name, frozen.metric_name) == (evaluation.loss_name, evaluation.metric_name)
    )
    run.frozen_eval_loss = _finite(frozen.loss) if same and frozen is not None else None
    run.frozen_eval_loss_se = _finite(frozen.loss_se) if same and frozen is not None else None
    run.frozen_eval_metric = _finite(frozen.metric) if same and frozen is not None else None


def _summary_row(run_id: int, position: int, summary: FeatureSummary) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": summary.feature,
        "position": position,
        "n": summary.n,
        "mean": summary.mean,
        "std": summary.std,
        "exact": summary.exact,
        "n_values": int(summary.values.size),
        "summary_values": np.ascontiguousarray(summary.values, dtype="<f8").tobytes(),
    }


def record_failure(session: Session, run_id: int, error: str) -> None:
    """Mark a run failed with its error; figures stored by earlier runs are left as they were."""
    run = session.get_one(AuditRun, run_id)
    run.status = RunStatus.FAILED.value
    run.error = error[:MAX_ERROR_CHARS]
    run.finished_at = utc_now()


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
    input_drift: InputDriftAssessment | None = None,
    performance: PerformanceDrift | None = None,
) -> bool:
    """Replace the comparison of `run_id` with the run of the previous drop, and its drift call.

    Deletes the run's rows of `comparisons`, `feature_drifts`, `feature_verdicts`, `drop_verdicts`,
    `method_agreement`, `input_drifts` and `performance_drifts`, then stores `comparisons`,
    `assessment` (None: no drift call), `input_drift` and `performance` (None: not measured).
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
    if input_drift is not None:
        _insert(
            session, InputDriftRow, [_input_drift_row(run_id, previous_run_id, d) for d in input_drift.drifts]
        )
    if performance is not None:
        _insert(session, PerformanceDriftRow, [_performance_row(run_id, previous_run_id, performance)])
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
        method_version=1 if outcome.importance is None else outcome.importance.method_version,
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
            "method_version": importance.method_version,
            "direction": _direction(importance, position),
        }
        for position, name in enumerate(importance.feature_names)
    ]


def _direction(importance: Importance, position: int) -> float | None:
    return None if importance.direction is None else _finite(float(importance.direction[position]))


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
            "method_version": importance.method_version,
            "direction": _direction(importance, position),
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
        "method_version": comparison.method_version,
        "previous_method_version": comparison.previous_method_version,
    }


def _drift_row(run_id: int, previous_run_id: int, drift: FeatureDrift) -> dict[str, Any]:
    band = drift.band
    detectable = drift.detectable
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
        "plain_change": _finite(drift.plain_change),
        "plain_band_low": None if drift.plain_band is None else _finite(drift.plain_band.low),
        "plain_band_high": None if drift.plain_band is None else _finite(drift.plain_band.high),
        "min_detectable_rise": None if detectable is None else _finite(detectable.rise),
        "min_detectable_fall": None if detectable is None else _finite(detectable.fall),
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
        "min_detectable_rise": None if feature.detectable is None else _finite(feature.detectable.rise),
        "min_detectable_fall": None if feature.detectable is None else _finite(feature.detectable.fall),
        "judged_methods": ",".join(feature.judged_methods),
    }


def _agreement_row(run_id: int, agreement: MethodAgreement) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "method": agreement.method,
        "other_method": agreement.other_method,
        "spearman": _finite(agreement.spearman),
    }


def _input_drift_row(run_id: int, previous_run_id: int, drift: InputDrift) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "previous_run_id": previous_run_id,
        "feature": drift.feature,
        "psi": _finite(drift.psi),
        "ks_statistic": _finite(drift.ks_statistic),
        "ks_pvalue": _finite(drift.ks_pvalue),
        "wasserstein": _finite(drift.wasserstein),
        "psi_limit": _finite(drift.psi_limit),
        "limit_source": drift.limit_source,
        "n_history": drift.n_history,
        "verdict": drift.verdict.value,
        "exact": drift.exact,
        "n": drift.n,
        "previous_n": drift.previous_n,
    }


def _performance_row(run_id: int, previous_run_id: int, drift: PerformanceDrift) -> dict[str, Any]:
    band = drift.band
    return {
        "run_id": run_id,
        "previous_run_id": previous_run_id,
        "loss_name": drift.loss_name,
        "loss": _finite(drift.loss),
        "previous_loss": _finite(drift.previous_loss),
        "frozen_loss": _finite(drift.frozen_loss),
        "metric_name": drift.metric_name,
        "metric": _finite(drift.metric),
        "previous_metric": _finite(drift.previous_metric),
        "frozen_metric": _finite(drift.frozen_metric),
        "change": _finite(drift.change),
        "model_change": _finite(drift.model_change),
        "data_change": _finite(drift.data_change),
        "band_scale": _finite(band.scale),
        "band_half_width": _finite(band.half_width),
        "band_percent": _finite(band.percent),
        "band_source": band.source.value,
        "band_observations": band.n_observations,
        "verdict": drift.verdict.value,
        "cause": None if drift.cause is None else drift.cause.value,
        "reason": drift.reason,
    }
