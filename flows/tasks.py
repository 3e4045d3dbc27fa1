"""Prefect tasks: one call each into audit/, storage/ or reports/. No logic of their own.

Tasks log through Prefect's run logger; nothing here prints. Tasks that hold Keras models or
arrays opt out of Prefect's input-hash cache (NO_CACHE): caching on content hashes is a separate
concern (issue 8).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.eval_sample import describe_rows
from audit.loading import LoadedDrop, check_sample_fits, load_drop, load_model
from audit.registry import RegistryListing, discover_drops
from audit.runner import run_method, select_methods
from audit.types import (
    AuditError,
    DriftConfig,
    Drop,
    DropVerdict,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelImportances,
    ReportInput,
)
from reports.render import render_report, write_report
from storage import repository
from storage.session import make_engine, upgrade_database


@functools.cache
def engine_for(db_url: str) -> Engine:
    """One engine per database URL for the life of the process (engines pool connections)."""
    return make_engine(db_url)


@task(name="upgrade-database", cache_policy=NO_CACHE)
def upgrade_database_task(db_url: str) -> None:
    upgrade_database(engine_for(db_url))


@task(name="discover", cache_policy=NO_CACHE)
def discover_task(registry: Path) -> RegistryListing:
    logger = get_run_logger()
    listing = discover_drops(registry)
    for skipped in listing.skipped:
        logger.warning("skipped %s: %s", skipped.path, skipped.reason)
    logger.info("found %d drop(s) in %s", len(listing.drops), registry)
    return listing


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    db_url: str, model_name: str, listing: RegistryListing, week: dt.date | None
) -> tuple[Drop, ...]:
    """The drops to audit: just `week` (re-audit) or every drop without current figures."""
    if week is not None:
        chosen = [drop for drop in listing.drops if drop.week == week]
        if not chosen:
            weeks = ", ".join(d.week.isoformat() for d in listing.drops) or "none"
            raise AuditError(f"no drop for week {week.isoformat()} in the registry (drops: {weeks})")
        return tuple(chosen)
    with Session(engine_for(db_url)) as session:
        done = repository.audited_weeks(session, model_name)
    pending = tuple(drop for drop in listing.drops if drop.week not in done)
    get_run_logger().info("%d drop(s) to audit, %d already audited", len(pending), len(done))
    return pending


@task(name="start-run", cache_policy=NO_CACHE)
def start_run_task(db_url: str, model_name: str, drop: Drop, flow_run_id: str | None) -> int:
    with Session(engine_for(db_url)) as session, session.begin():
        return repository.start_run(
            session,
            model_name=model_name,
            week=drop.week,
            model_path=drop.model_path,
            flow_run_id=flow_run_id,
        )


@task(name="load", cache_policy=NO_CACHE)
def load_task(drop: Drop, trust_model_code: bool, custom_modules: tuple[str, ...]) -> LoadedDrop:
    loaded = load_drop(drop, trust_model_code=trust_model_code, custom_modules=custom_modules)
    sample = loaded.sample
    n_samples = "no eval sample" if sample is None else describe_rows(sample)
    logger = get_run_logger()
    # Dropped NaN/inf rows change what the figures describe: a warning, not an info line.
    log = logger.warning if sample is not None and sample.n_dropped_rows else logger.info
    log(
        "%s: %s, %d parameters, input %s, %s",
        drop.week,
        drop.model_path.name,
        loaded.facts.n_parameters,
        loaded.facts.input_shape,
        n_samples,
    )
    return loaded


@task(name="compute", cache_policy=NO_CACHE)
def compute_task(
    loaded: LoadedDrop, methods: Sequence[str] | None, random_state: int
) -> tuple[MethodOutcome, ...]:
    logger = get_run_logger()
    outcomes = []
    for spec in select_methods(methods):
        outcome = run_method(loaded, spec, random_state=random_state)
        if outcome.status is MethodStatus.OK:
            logger.info("%s: %s done in %.1f s", loaded.drop.week, spec.name, outcome.seconds)
        else:
            logger.warning("%s: %s %s: %s", loaded.drop.week, spec.name, outcome.status, outcome.reason)
        outcomes.append(outcome)
    return tuple(outcomes)


@task(name="compute-copies", cache_policy=NO_CACHE)
def copies_task(
    loaded: LoadedDrop, methods: Sequence[str] | None, random_state: int
) -> tuple[ModelImportances, ...]:
    """The same methods on the drop's reseeded copies of the model: a direct measure of retraining noise."""
    logger = get_run_logger()
    results = []
    for path, copy in zip(loaded.drop.model_paths[1:], loaded.copies, strict=True):
        outcomes = [
            run_method(dataclasses.replace(loaded, model=copy), spec, random_state=random_state)
            for spec in select_methods(methods)
        ]
        results.append(ModelImportances(path.name, _importances(outcomes)))
        logger.info(
            "%s: copy %s audited (%d methods)", loaded.drop.week, path.name, len(results[-1].importances)
        )
    return tuple(results)


@task(name="compute-frozen-set", cache_policy=NO_CACHE)
def frozen_task(
    db_url: str,
    model_name: str,
    loaded: LoadedDrop,
    listing: RegistryListing,
    methods: Sequence[str] | None,
    random_state: int,
    trust_model_code: bool,
    custom_modules: tuple[str, ...],
) -> ModelImportances | None:
    """The previous drop's model scored on this week's eval sample (the frozen-set comparison).

    None, with the reason logged, when it cannot be done: the drop has no eval sample or is the
    first, the previous model is gone from the registry, or it does not take this week's input.
    """
    logger = get_run_logger()
    week = loaded.drop.week
    if not loaded.config.drift.frozen_set or loaded.sample is None:
        return None
    with Session(engine_for(db_url)) as session:
        previous_week = repository.previous_week(session, model_name, week)
    previous = next((drop for drop in listing.drops if drop.week == previous_week), None)
    if previous_week is None or previous is None:
        if previous_week is not None:
            logger.warning(
                "%s: previous drop %s is not in the registry: no frozen-set comparison", week, previous_week
            )
        return None
    try:
        model = load_model(
            previous.model_path, trust_model_code=trust_model_code, custom_modules=custom_modules
        )
        check_sample_fits(model, loaded.sample, loaded.target)
    except AuditError as error:
        logger.warning("%s: no frozen-set comparison: %s", week, error)
        return None
    frozen = dataclasses.replace(loaded, model=model, copies=())
    outcomes = [
        run_method(frozen, spec, random_state=random_state)
        for spec in select_methods(methods)
        if spec.needs_eval_sample
    ]
    logger.info("%s: previous model (%s) scored on this week's sample", week, previous_week)
    return ModelImportances(previous_week.isoformat(), _importances(outcomes))


def _importances(outcomes: Sequence[MethodOutcome]) -> tuple[Importance, ...]:
    return tuple(outcome.importance for outcome in outcomes if outcome.importance is not None)


@task(name="store", cache_policy=NO_CACHE)
def store_task(
    db_url: str,
    run_id: int,
    loaded: LoadedDrop,
    outcomes: tuple[MethodOutcome, ...],
    copies: tuple[ModelImportances, ...] = (),
    frozen: ModelImportances | None = None,
) -> None:
    sample = loaded.sample
    with Session(engine_for(db_url)) as session, session.begin():
        repository.record_success(
            session,
            run_id,
            facts=loaded.facts,
            outcomes=outcomes,
            copies=copies,
            frozen=frozen,
            feature_names=loaded.feature_names,
            eval_source=None if sample is None else str(sample.source),
            eval_hash=None if sample is None else sample.content_hash,
            n_eval_samples=None if sample is None else sample.n_samples,
            n_eval_rows_in_file=None if sample is None else sample.n_rows_read,
            n_eval_rows_dropped=None if sample is None else sample.n_dropped_rows,
            eval_sampling_seed=None if sample is None else sample.sampling_seed,
        )


@task(name="record-failure", cache_policy=NO_CACHE)
def record_failure_task(db_url: str, run_id: int, error: str) -> None:
    with Session(engine_for(db_url)) as session, session.begin():
        repository.record_failure(session, run_id, error)


@task(name="compare", cache_policy=NO_CACHE)
def compare_task(db_url: str, model_name: str, week: dt.date, drift_config: DriftConfig) -> ReportInput:
    """Compare the drop of `week` with the latest earlier audited drop, make the drift call, store both."""
    with Session(engine_for(db_url)) as session, session.begin():
        current = repository.load_audit(session, model_name, week)
        if current is None:
            raise AuditError(f"no stored audit for {model_name} {week.isoformat()}; run the audit first")
        previous = repository.previous_audit(session, model_name, week)
        comparisons = () if previous is None else compare_audits(current, previous)
        assessment = None
        if previous is not None:
            history = repository.recent_audits(session, model_name, previous.week, drift_config.history_weeks)
            assessment = assess_drift(current, previous, history, drift_config)
            repository.save_assessment(session, current.run_id, previous.run_id, comparisons, assessment)
    logger = get_run_logger()
    for comparison in comparisons:
        logger.info(
            "%s vs %s, %s: Spearman %s, nDCG %s, top-%d overlap %s",
            week,
            previous.week if previous else "-",
            comparison.method,
            _fixed(comparison.spearman),
            _fixed(comparison.ndcg),
            comparison.top_k,
            "n/a" if comparison.top_k_overlap is None else f"{comparison.top_k_overlap:.0%}",
        )
    if assessment is not None:
        log = logger.info if assessment.verdict is DropVerdict.OK else logger.warning
        log("%s: drift verdict %s: %s", week, assessment.verdict.value.upper(), assessment.reason)
    return ReportInput(current=current, previous=previous, comparisons=comparisons, assessment=assessment)


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@task(name="render", cache_policy=NO_CACHE)
def render_task(db_url: str, report_input: ReportInput, out_dir: Path) -> Path:
    path = write_report(render_report(report_input), out_dir, report_input.current.week)
    with Session(engine_for(db_url)) as session, session.begin():
        repository.set_report_path(session, report_input.current.run_id, path)
        repository.record_delivery(
            session, report_input.current.run_id, path, status=repository.DeliveryStatus.WRITTEN
        )
    get_run_logger().info("report written to %s", path)
    return path


@task(name="latest-audited-week", cache_policy=NO_CACHE)
def latest_week_task(db_url: str, model_name: str) -> dt.date | None:
    with Session(engine_for(db_url)) as session:
        return repository.latest_audited_week(session, model_name)
