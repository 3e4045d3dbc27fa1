"""Prefect tasks: the steps of the flow, each calling into audit/, storage/ or reports/ and logging
what it did; the little logic they hold is choosing what to call (which drops, which previous week).

Tasks log through Prefect's run logger; nothing here prints. These tasks opt out of Prefect's
input-hash cache (NO_CACHE): they read or write files and the database, so their result is only
valid now. The expensive method tasks, cached on content hashes, are in flows/method_tasks.py.

Tasks that do I/O (load, start-run, store, record-failure, compare, render, the frozen-set model)
retry a transient I/O error with backoff (`IO_RETRIES`, `is_transient_error`): a dropped database
connection, a timeout, a network or disk error. Anything else (an `AuditError` on bad input, a bug,
TensorFlow running out of memory, a missing file) would fail the same way again and is not retried.
Method tasks never retry: a method's own failure is a result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import httpx
import keras
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from audit.compare import compare_audits, newer_versions
from audit.drift import assess_drift
from audit.eval_sample import describe_rows
from audit.evaluation import evaluate_model
from audit.input_drift import assess_input_drift, summarize_inputs
from audit.loading import LoadedDrop, check_sample_fits, load_drop, load_model
from audit.model_formats import model_content_hash
from audit.performance import assess_performance
from audit.runner import run_method, select_methods
from audit.schedule import missing_weeks, stale_comparisons
from audit.sources import parse_registry
from audit.types import (
    AuditError,
    DriftConfig,
    Drop,
    DropProvenance,
    DropVerdict,
    MethodOutcome,
    ModelEvaluation,
    ModelImportances,
    ReportInput,
)
from audit.verdict import explain
from flows.method_tasks import DropInputs, FrozenModel, remember_model
from flows.render_pool import render
from flows.settings import DropScope, ReportPublishing
from flows.sources import Catalog, SourceDrop, SourceListing, StagedDrop, source_for
from reports.render import write_report
from reports.rendered import RenderedReport
from reports.sections import HISTORY_FEATURES, HISTORY_WEEKS
from storage import delivery_log, reads, writes
from storage.history import report_history
from storage.leases import DEFAULT_LEASE_SECONDS, expire_leases, interrupted_runs
from storage.session import make_engine, upgrade_database


@functools.cache
def engine_for(db_url: str) -> Engine:
    """One engine per database URL for the life of the process (engines pool connections)."""
    return make_engine(db_url)


#: Retries of an I/O task after a transient error (a dropped database connection, a locked SQLite
#: file, a slow network share): 2 more tries, after about 2 s then 4 s (exponential backoff, each
#: delay randomly stretched by up to `IO_RETRY_JITTER`, so concurrent runs do not retry in step).
IO_RETRY_COUNT = 2
IO_RETRY_BACKOFF_SECONDS = 2.0
IO_RETRY_JITTER = 0.5


#: OS errors about the path rather than the medium: trying again fails the same way.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient_error(error: BaseException) -> bool:
    """Whether `error` is transient I/O, worth trying again: a database that is unreachable, locked or
    dropped the connection, a timeout, a network error (the Prefect API's too), an OS I/O error
    other than a missing, forbidden or mistyped path."""
    if isinstance(error, OperationalError):
        return True
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated)
    if isinstance(error, (TimeoutError, ConnectionError, httpx.TransportError)):
        return True
    return isinstance(error, OSError) and not isinstance(error, _PERMANENT_OS_ERRORS)


def _retry_condition(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition of the I/O tasks: retry only a transient error (`is_transient_error`)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient_error(error)


class RetryOptions(TypedDict):
    """The retry keywords of `@task` (typed, so each task's decorator is checked)."""

    retries: int
    retry_delay_seconds: Callable[[int], list[float]]
    retry_jitter_factor: float
    retry_condition_fn: Callable[[Task[..., Any], TaskRun, State[Any]], bool]


#: Keyword arguments of `@task` for the tasks that do I/O.
IO_RETRIES: RetryOptions = {
    "retries": IO_RETRY_COUNT,
    "retry_delay_seconds": exponential_backoff(backoff_factor=IO_RETRY_BACKOFF_SECONDS),
    "retry_jitter_factor": IO_RETRY_JITTER,
    "retry_condition_fn": _retry_condition,
}


@task(name="upgrade-database", cache_policy=NO_CACHE)
def upgrade_database_task(db_url: str) -> None:
    upgrade_database(engine_for(db_url))


@task(name="list-drops", cache_policy=NO_CACHE, **IO_RETRIES)
def catalog_task(
    db_url: str,
    model_name: str,
    registry: str,
    cache: Path,
    mlflow_tracking_uri: str | None = None,
    storage_block: str | None = None,
) -> Catalog:
    """The drops of the registry (a folder, an object store or an MLflow registered model), listed
    from metadata only; nothing is downloaded yet (`stage_task`)."""
    logger = get_run_logger()
    held: set[int] = set()
    alias = parse_registry(registry).alias
    if alias is not None:  # MLflow keeps only an alias's current holder: earlier ones are ours
        with Session(engine_for(db_url)) as session:
            held = reads.alias_versions(session, model_name, alias)
    source = source_for(
        registry, mlflow_tracking_uri=mlflow_tracking_uri, storage_block=storage_block, held_versions=held
    )
    listing = source.list_drops()
    for skipped in listing.skipped:
        logger.warning("skipped %s: %s", skipped.where, skipped.reason)
    logger.info("found %d drop(s) in %s", len(listing.drops), source.uri)
    return Catalog(source, listing, cache)


@task(name="stage", cache_policy=NO_CACHE, **IO_RETRIES)
def stage_task(catalog: Catalog, drop: SourceDrop) -> StagedDrop:
    """The drop in a local folder: a local registry's folder as is, a remote drop downloaded into
    ``<out>/.cache/sources`` unless the same content was staged before."""
    staged = catalog.stage(drop)
    logger = get_run_logger()
    for skipped in staged.skipped:
        logger.warning("skipped %s: %s", skipped.path, skipped.reason)
    if drop.local is None:
        fetched = (
            f"downloaded {staged.files_downloaded} file(s), {staged.bytes_downloaded} bytes"
            if staged.files_downloaded
            else "staged before with the same content: nothing downloaded"
        )
        logger.info("%s: %s from %s to %s", drop.week, fetched, drop.location, staged.drop.path)
    return staged


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    db_url: str, model_name: str, listing: SourceListing, scope: DropScope
) -> tuple[SourceDrop, ...]:
    """The drops to audit, oldest first: just the re-audited ``scope.week``, or the drops of the
    scope's range (default: all) without current figures and not pruned (`drift-audit prune`), or
    with ``scope.redo`` every one of them."""
    in_scope = scope.drops(listing.drops)
    if scope.week is not None:
        return in_scope
    with Session(engine_for(db_url)) as session:
        done = reads.audited_weeks(session, model_name)
        pruned = reads.pruned_weeks(session, model_name)
    # a pruned drop is not audited again by a plain run (the prune would be undone at once)
    pending = in_scope if scope.redo else tuple(d for d in in_scope if d.week not in done | pruned)
    redone = sum(drop.week in done for drop in pending)
    logger = get_run_logger()
    logger.info("%d drop(s) to audit (%d re-audited), %d already audited", len(pending), redone, len(done))
    skipped = sorted(drop.week for drop in in_scope if drop.week in pruned and drop not in pending)
    if skipped:
        logger.info(
            "%d pruned drop(s) not audited again (%s ... %s); `backfill --redo` audits them",
            len(skipped),
            skipped[0],
            skipped[-1],
        )
    return pending


@task(name="stale-comparisons", cache_policy=NO_CACHE)
def stale_comparisons_task(db_url: str, model_name: str, audited: Sequence[dt.date]) -> tuple[dt.date, ...]:
    """Already-audited weeks whose previous drop changed because `audited` got new figures (a
    backfilled gap or a re-audit): their comparison and drift call must be made again."""
    with Session(engine_for(db_url)) as session:
        weeks = reads.audited_weeks(session, model_name)
    stale = stale_comparisons(weeks, audited)
    if stale:
        listed = ", ".join(w.isoformat() for w in stale)
        get_run_logger().info("comparing again (their previous drop changed): %s", listed)
    return stale


@task(name="start-run", cache_policy=NO_CACHE, **IO_RETRIES)
def start_run_task(
    db_url: str,
    model_name: str,
    drop: SourceDrop,
    flow_run_id: str | None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> int:
    """A new ``running`` run of the drop, holding a lease of `lease_seconds` (`flows.leases`)."""
    with Session(engine_for(db_url)) as session, session.begin():
        return writes.start_run(
            session,
            model_name=model_name,
            week=drop.week,
            model_path=drop.local.model_path if drop.local is not None else drop.location,
            flow_run_id=flow_run_id,
            provenance=drop.provenance,
            lease_seconds=lease_seconds,
        )


@task(name="expire-leases", cache_policy=NO_CACHE, **IO_RETRIES)
def expire_leases_task(db_url: str) -> int:
    """Mark ``interrupted`` the running audits (of any drop) whose lease expired: their process was
    killed or lost. Concurrent audits renewing their lease keep theirs. Returns how many."""
    with Session(engine_for(db_url)) as session, session.begin():
        expired = expire_leases(session)
    logger = get_run_logger()
    for run in expired:
        last = run.heartbeat_at or run.started_at
        logger.warning(
            "%s %s: run %d marked interrupted (started %s, no heartbeat since %s)",
            run.model_name,
            run.week,
            run.run_id,
            run.started_at.isoformat(timespec="seconds"),
            last.isoformat(timespec="seconds"),
        )
    return len(expired)


@task(name="load", cache_policy=NO_CACHE, **IO_RETRIES)
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


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(loaded: LoadedDrop) -> ModelEvaluation | None:
    """The model's loss and metric on its eval sample (None without a sample with targets).

    A failure here is logged and leaves the audit without an evaluation: it must not fail the figures.
    """
    logger = get_run_logger()
    try:
        evaluation = evaluate_model(loaded.model, loaded.sample, loaded.target)
    except Exception as error:
        logger.warning("%s: model not evaluated: %s", loaded.drop.week, " ".join(str(error).split()))
        return None
    if evaluation is not None:
        logger.info(
            "%s: %s %.4g, %s %.4g on %d samples",
            loaded.drop.week,
            evaluation.loss_name,
            evaluation.loss,
            evaluation.metric_name,
            evaluation.metric,
            evaluation.n_samples,
        )
    return evaluation


@task(name="frozen-set-model", cache_policy=NO_CACHE, **IO_RETRIES)
def frozen_model_task(
    db_url: str, model_name: str, loaded: LoadedDrop, inputs: DropInputs, catalog: Catalog
) -> FrozenModel | None:
    """The previous drop's model, checked to take this week's eval sample (the frozen-set comparison).

    None, with the reason logged, when it cannot be done: the drop has no eval sample or is the
    first, the previous model is gone from the registry, or it does not take this week's input.
    """
    logger = get_run_logger()
    week = loaded.drop.week
    if not loaded.config.drift.frozen_set or loaded.sample is None:
        return None
    with Session(engine_for(db_url)) as session:
        previous_week = reads.previous_week(session, model_name, week)
    listed = None if previous_week is None else catalog.find(previous_week)
    if previous_week is None or listed is None:
        if previous_week is not None:
            logger.warning(
                "%s: previous drop %s is not in the registry: no frozen-set comparison", week, previous_week
            )
        return None
    try:
        previous = catalog.stage(listed).drop  # a remote drop: its staged copy (downloaded once)
        content_hash = model_content_hash(previous.model_path)
        model = load_model(
            previous.model_path,
            trust_model_code=inputs.trust_model_code,
            custom_modules=inputs.custom_modules,
        )
        check_sample_fits(model, loaded.sample, loaded.target)
    except AuditError as error:
        logger.warning("%s: no frozen-set comparison: %s", week, error)
        return None
    frozen = FrozenModel(previous_week, previous.model_path, content_hash, _evaluate_frozen(model, loaded))
    remember_model(model, frozen, inputs)
    logger.info("%s: the previous model (%s) is scored on this week's sample too", week, previous_week)
    return frozen


def _evaluate_frozen(model: keras.Model, loaded: LoadedDrop) -> ModelEvaluation | None:
    """The previous model's loss and metric on this week's sample; a failure is logged, not raised."""
    try:
        return evaluate_model(model, loaded.sample, loaded.target)
    except Exception as error:
        get_run_logger().warning(
            "%s: the previous model not evaluated on this week's sample: %s",
            loaded.drop.week,
            " ".join(str(error).split()),
        )
        return None


@task(name="store", cache_policy=NO_CACHE, **IO_RETRIES)
def store_task(
    db_url: str,
    run_id: int,
    loaded: LoadedDrop,
    outcomes: tuple[MethodOutcome, ...],
    copies: tuple[ModelImportances, ...] = (),
    frozen: ModelImportances | None = None,
    evaluation: ModelEvaluation | None = None,
    frozen_evaluation: ModelEvaluation | None = None,
    provenance: DropProvenance | None = None,
) -> None:
    """Store the drop's figures, its evaluations and its eval sample's per-feature summaries."""
    sample = loaded.sample
    summaries = () if sample is None else summarize_inputs(sample)
    with Session(engine_for(db_url)) as session, session.begin():
        writes.record_success(
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
            evaluation=evaluation,
            frozen_evaluation=frozen_evaluation,
            input_summaries=summaries,
            provenance=provenance,
        )


@task(name="rescore-previous", cache_policy=NO_CACHE, **IO_RETRIES)
def rescore_previous_task(
    db_url: str,
    model_name: str,
    week: dt.date,
    catalog: Catalog,
    trust_model_code: bool,
    custom_modules: tuple[str, ...],
    random_state: int,
) -> tuple[str, ...]:
    """At a method's cut-over (this drop's figure is of a newer version of its definition than the
    previous drop's, `Importance.method_version`), re-score the previous drop with the new version
    when its files are still in the registry, so the two weeks stay comparable; returns the methods
    re-scored. Where that cannot be done (the drop is gone, cannot be loaded, or the method fails
    on it) the comparison of that method is "not comparable" (`audit.compare.not_comparable`).
    """
    logger = get_run_logger()
    with Session(engine_for(db_url)) as session:
        current = reads.load_audit(session, model_name, week)
        previous = reads.previous_audit(session, model_name, week)
    if current is None or previous is None:
        return ()
    stale = newer_versions(current, previous)
    if not stale:
        return ()
    listed = catalog.find(previous.week)
    if listed is None:
        logger.warning(
            "%s: %s changed definition since %s, whose drop is gone from the registry: not comparable",
            week,
            ", ".join(stale),
            previous.week,
        )
        return ()
    try:
        loaded = load_drop(
            catalog.stage(listed).drop, trust_model_code=trust_model_code, custom_modules=custom_modules
        )
    except AuditError as error:
        logger.warning(
            "%s: %s not re-scored on %s (not comparable): %s", week, ", ".join(stale), previous.week, error
        )
        return ()
    outcomes = []
    for spec in select_methods(stale):
        outcome = run_method(loaded, spec, random_state=random_state)
        importance = outcome.importance
        now = current.importance(spec.name)
        if importance is None or now is None or importance.method_version != now.method_version:
            logger.warning(
                "%s: %s not re-scored on %s (not comparable): %s",
                week,
                spec.name,
                previous.week,
                outcome.reason,
            )
            continue
        parameters = {**importance.parameters, "rescored_for": week.isoformat()}
        outcomes.append(
            dataclasses.replace(outcome, importance=dataclasses.replace(importance, parameters=parameters))
        )
    if outcomes:
        with Session(engine_for(db_url)) as session, session.begin():
            writes.replace_method_figures(session, previous.run_id, outcomes)
        logger.info(
            "%s: re-scored %s on the previous drop %s (new method version)",
            week,
            ", ".join(o.method for o in outcomes),
            previous.week,
        )
    return tuple(outcome.method for outcome in outcomes)


@task(name="record-failure", cache_policy=NO_CACHE, **IO_RETRIES)
def record_failure_task(db_url: str, run_id: int, error: str) -> None:
    with Session(engine_for(db_url)) as session, session.begin():
        writes.record_failure(session, run_id, error)


@task(name="compare", cache_policy=NO_CACHE, **IO_RETRIES)
def compare_task(db_url: str, model_name: str, week: dt.date, drift_config: DriftConfig) -> ReportInput:
    """Compare the drop of `week` with the latest earlier audited drop, make the drift call, store both."""
    with Session(engine_for(db_url)) as session, session.begin():
        current = reads.load_audit(session, model_name, week)
        if current is None:
            raise AuditError(f"no stored audit for {model_name} {week.isoformat()}; run the audit first")
        previous = reads.previous_audit(session, model_name, week)
        comparisons = () if previous is None else compare_audits(current, previous)
        assessment = input_drift = performance = None
        if previous is not None:
            history = reads.recent_audits(session, model_name, previous.week, drift_config.history_weeks)
            input_drift = assess_input_drift(current, previous, history, drift_config)
            performance = assess_performance(current, previous, history, drift_config)
            assessment = explain(
                assess_drift(current, previous, history, drift_config), input_drift, performance
            )
            writes.save_assessment(
                session, current.run_id, previous.run_id, comparisons, assessment, input_drift, performance
            )
        # exactly what the report's history charts draw (weeks, top features): nothing fetched in vain
        importance_history = report_history(
            session, model_name, week, weeks=HISTORY_WEEKS, top_k=HISTORY_FEATURES
        )
        since = week - dt.timedelta(weeks=HISTORY_WEEKS)  # the interrupted audits of the same window
        interrupted = tuple(interrupted_runs(session, model_name, since=since))
    logger = get_run_logger()
    gaps = () if previous is None else missing_weeks(previous.week, week)
    if gaps and previous is not None:  # a skipped retrain: the change spans more than one week
        weeks = ", ".join(gap.isoformat() for gap in gaps)
        logger.warning(
            "no drop for week%s of %s: compared with %s", "s" if len(gaps) > 1 else "", weeks, previous.week
        )
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
    return ReportInput(
        current=current,
        previous=previous,
        comparisons=comparisons,
        assessment=assessment,
        missing_weeks=gaps,
        history=importance_history,
        input_drift=input_drift,
        performance=performance,
        interrupted=interrupted,
    )


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@task(name="render", cache_policy=NO_CACHE, **IO_RETRIES)
def render_task(
    db_url: str, report_input: ReportInput, out_dir: Path, publishing: ReportPublishing | None = None
) -> tuple[Path, RenderedReport]:
    """Draw the charts once, write the standalone report, and hand both documents on (the e-mail,
    which links the published report first and attaches the file as `publishing` says)."""
    publishing = publishing or ReportPublishing()
    rendered = render(
        report_input,
        get_run_logger(),
        report_link=publishing.link(report_input.current.week),
        report_attached=publishing.attach,
    )
    path = write_report(rendered.html, out_dir, report_input.current.week)
    with Session(engine_for(db_url)) as session, session.begin():
        delivery_log.set_report_path(session, report_input.current.run_id, path)
        delivery_log.record_delivery(
            session, report_input.current.run_id, path, status=delivery_log.DeliveryStatus.WRITTEN
        )
    get_run_logger().info("report written to %s", path)
    return path, rendered


@task(name="latest-audited-week", cache_policy=NO_CACHE)
def latest_week_task(db_url: str, model_name: str) -> dt.date | None:
    with Session(engine_for(db_url)) as session:
        return reads.latest_audited_week(session, model_name)
