"""The `weekly_audit` Prefect flow: discover -> (start, load, compute, store, compare) per drop -> render.

"compute" is one task per (model, method) of the drop (`flows.method_tasks`), submitted together to
the flow's task runner (threads by default; `flows.runners` for Dask) and cached on content hashes.

Runs with or without a Prefect server (ephemeral mode when none is configured). Drops are audited
oldest first, each compared with the latest earlier audited drop; one drop's failure is recorded
as a ``failed`` run and does not stop the others, but it fails the flow run at the end, so a
scheduled run never fails silently.

The flow keeps flat parameters (deployments name them) and groups them at once into the settings of
`flows.settings` (`DropScope`, `MethodOptions`) and `AuditTarget`; each step returns its outcome
(`DropAudit`, `WeekComparison`, `NewestReport`) and the flow's final state is made from them.
The database URL is resolved by `flows.database` (a password is never a parameter).

A fleet (several registries, or a ``fleet`` root: `flows.fleet`) is audited in the same flow run:
`_audit_fleet` runs each model's audit (`_audit_model`) on threads of the flow's process, writes the
digest (`flows.digest`) and fails the run at the end naming the models that failed. Each model's
verdict is sent to the alert targets and emitted as a Prefect event (`flows.alerts`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Failed

from audit.config import read_drop_config
from audit.loading import LoadedDrop
from audit.sources import refuse_password
from audit.types import (
    AuditError,
    DriftConfig,
    DropVerdict,
    Importance,
    MethodOutcome,
    ModelImportances,
    ReportInput,
)
from flows import progress
from flows.alerts import (
    DEFAULT_NOTIFY_ON,
    VERDICT_EVENT,
    AlertTarget,
    alert_for,
    check_notify_on,
    emit_verdict_event,
    notify_task,
    parse_targets,
    scrub,
    should_notify,
)
from flows.artifacts import artifacts_task
from flows.cache_layout import record_drop_keys
from flows.database import flow_database_url
from flows.delivery import EmailOptions, email_task
from flows.digest import Digest, DigestSource, digest_artifact_task, digest_task, email_digest_task
from flows.fleet import Fleet, FleetMember, resolve_fleet
from flows.leases import heartbeat
from flows.method_tasks import (
    METHOD_CACHE_DIR,
    DropInputs,
    FrozenModel,
    MethodJob,
    drop_inputs,
    job_cache_key,
    method_jobs,
    method_task,
)
from flows.preflight import chosen_methods
from flows.render_pool import drawing_in_child_process
from flows.runners import default_task_runner
from flows.settings import (
    DEFAULT_OUT_DIR,
    DropScope,
    EmailParameters,
    MethodOptions,
    ReportPublishing,
    SourceOptions,
    check_report_url,
)
from flows.sources import STAGING_DIR, Catalog, SourceDrop
from flows.tasks import (
    catalog_task,
    compare_task,
    engine_for,
    evaluate_task,
    expire_leases_task,
    frozen_model_task,
    latest_week_task,
    load_task,
    plan_task,
    record_failure_task,
    render_task,
    rescore_previous_task,
    stage_task,
    stale_comparisons_task,
    start_run_task,
    store_task,
    upgrade_database_task,
)
from reports.digest import DigestEntry, digest_entry, failed_entry
from reports.rendered import RenderedReport
from storage.leases import DEFAULT_LEASE_SECONDS, check_lease


@dataclass(frozen=True)
class AuditTarget:
    """Where a run reads and writes: the registry, the database, the reports, and the model's name."""

    #: A folder, or an ``s3://``, ``gs://``, ``file://`` or ``mlflow://`` URI (`flows.sources`).
    registry: str
    #: Resolved by `flows.database.flow_database_url`; kept out of repr: it may hold a password.
    db_url: str = field(repr=False)
    out_dir: Path
    model_name: str
    source: SourceOptions = field(default_factory=SourceOptions)


@dataclass(frozen=True)
class DropSettings:
    """How every drop of a run is loaded and audited."""

    #: The methods to run, checked to exist (`chosen_methods`).
    methods: list[str]
    random_state: int
    trust_model_code: bool
    custom_modules: tuple[str, ...]
    #: Folder of the method tasks' cached results (`flows.method_tasks`), ``<out_dir>/.cache/methods``.
    method_cache: Path
    #: Seconds each drop's run holds its lease after a heartbeat (`flows.leases`).
    lease_seconds: float = DEFAULT_LEASE_SECONDS

    @classmethod
    def of(cls, options: MethodOptions, out_dir: Path, lease_seconds: float | None = None) -> DropSettings:
        """The settings of `options`, with the method names and the lease checked (a bad one fails
        the run before any drop is loaded)."""
        try:
            lease = DEFAULT_LEASE_SECONDS if lease_seconds is None else check_lease(lease_seconds)
        except ValueError as error:
            raise AuditError(f"lease_seconds: {error}") from None
        return cls(
            methods=chosen_methods(options.methods),
            random_state=options.random_state,
            trust_model_code=options.trust_model_code,
            custom_modules=options.custom_modules,
            method_cache=(out_dir / METHOD_CACHE_DIR).resolve(),
            lease_seconds=lease,
        )


@dataclass(frozen=True)
class MethodScores:
    """The collected method results of one drop: the primary model's, each copy's, the frozen set's."""

    outcomes: tuple[MethodOutcome, ...]
    copies: tuple[ModelImportances, ...]
    frozen: ModelImportances | None


@dataclass(frozen=True)
class DropAudit:
    """The outcome of auditing one drop: its drift thresholds when it succeeded, else the one-line
    error it failed with (also stored with its run)."""

    week: dt.date
    drift: DriftConfig | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.drift is None) == (self.error is None):
            raise ValueError("a DropAudit holds either the drift thresholds (succeeded) or an error (failed)")

    @property
    def failure(self) -> str | None:
        """The line this outcome adds to the run's failure message (None: it succeeded)."""
        return None if self.error is None else f"{self.week.isoformat()}: {self.error}"


@dataclass(frozen=True)
class WeekComparison:
    """A comparison this run made: what the week's report needs, or the one-line error that stopped it."""

    week: dt.date
    report_input: ReportInput | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.report_input is None) == (self.error is None):
            raise ValueError("a WeekComparison holds either the report input or an error")

    @property
    def failure(self) -> str | None:
        return None if self.error is None else f"{self.week.isoformat()}: comparison failed: {self.error}"


@dataclass(frozen=True)
class DropOutcome:
    """One drop of the run: its audit, then (when the audit succeeded) its comparison."""

    audit: DropAudit
    comparison: WeekComparison | None = None

    @property
    def failure(self) -> str | None:
        """The drop's line in the run's failure message: its audit's error, else its comparison's."""
        return self.audit.failure or (None if self.comparison is None else self.comparison.failure)


@dataclass(frozen=True)
class NewestReport:
    """The report a run wrote (all None when it wrote none), and the comparison made for it when
    this run had not compared that week yet."""

    report_input: ReportInput | None = None
    rendered: RenderedReport | None = None
    path: Path | None = None
    comparison: WeekComparison | None = None


@dataclass(frozen=True)
class AuditResult:
    """What a successful flow run did: the weeks it audited, the report it wrote, the newest verdict."""

    audited_weeks: tuple[dt.date, ...]
    report_path: Path | None
    #: The drift verdict of the reported drop (None when it is the first: nothing to compare).
    verdict: DropVerdict | None = None


def one_line(error: BaseException) -> str:
    """An exception as one line: the message of an `AuditError`, else type and message."""
    text = " ".join(str(error).split())
    return text if isinstance(error, AuditError) else f"{type(error).__name__}: {text}"


@flow(name="weekly-audit", log_prints=False, task_runner=default_task_runner())
def weekly_audit(
    registry: str | None = None,
    db_url: str | None = None,
    out_dir: str = DEFAULT_OUT_DIR,
    week: dt.date | None = None,
    model_name: str | None = None,
    methods: list[str] | None = None,
    random_state: int = 0,
    trust_model_code: bool = False,
    custom_modules: list[str] | None = None,
    from_week: dt.date | None = None,
    to_week: dt.date | None = None,
    redo: bool = False,
    email_to: list[str] | None = None,
    email_from: str | None = None,
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    smtp_security: str | None = None,
    smtp_block: str | None = None,
    send_email: bool = True,
    db_secret: str | None = None,
    report_url: str | None = None,
    attach_report: bool = False,
    mlflow_tracking_uri: str | None = None,
    storage_block: str | None = None,
    registries: list[str] | None = None,
    fleet: str | None = None,
    email_per_model: bool = False,
    notify: list[str] | None = None,
    notify_on: str = DEFAULT_NOTIFY_ON,
    lease_seconds: float | None = None,
) -> AuditResult | FleetResult | State[object]:
    """Audit the unaudited drops of `registry` (or re-audit `week`) and write the newest report.

    Parameters
    ----------
    registry : where the drops are (README, "Where models come from"): a folder of drops (the
        registry contract), ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///path``, or
        ``mlflow://<registered model>[@alias]``; remote drops are staged under
        ``<out_dir>/.cache/sources``.
    db_url : SQLAlchemy URL without a password (one with a password is refused: Prefect stores
        parameters with the run). None: the Secret block `db_secret`, else ``$DRIFT_AUDIT_DB_URL``,
        else a SQLite file in `out_dir` (`flows.database`).
    out_dir : reports land in ``<out_dir>/<week>/report.html``.
    week : audit only this drop, replacing its stored figures.
    model_name : name stored with the figures; default the registry folder's (or prefix's) last
        segment, or the registered model's name.
    methods : method names to run (default: all registered).
    random_state : seed of every randomised method.
    trust_model_code : allow model files that embed Python code (Keras safe_mode off).
    custom_modules : importable modules that register a team's custom layers, imported before loading.
    from_week, to_week : audit only the drops dated in this range (both included; None: open-ended),
        oldest first (a backfill). Later weeks whose previous drop changed are compared again.
    redo : with a range (or none: all drops), re-audit drops that already have figures too.
    email_to, email_from, smtp_host, smtp_port, smtp_security, smtp_block : e-mail delivery of the
        report (`flows.delivery`); None reads the DRIFT_AUDIT_* environment variables. No secrets here.
        A login is only sent to the server it belongs to: with a password from the environment or a
        block, an `smtp_host` (or port, security) other than that server's is refused.
    send_email : False never e-mails; True e-mails when recipients are configured.
    db_secret : name of a Prefect Secret block holding the database URL (with its password).
    report_url : where `out_dir` is published (http or https): the e-mail, a summary, links
        ``<report_url>/<week>/report.html`` first. Without it the e-mail attaches report.html.
    attach_report : attach report.html to the e-mail also when `report_url` is given (some mail
        gateways strip HTML attachments, others links).
    mlflow_tracking_uri : the MLflow tracking server of an ``mlflow://`` registry (default
        ``MLFLOW_TRACKING_URI``); its token comes from ``MLFLOW_TRACKING_TOKEN``, never from here.
    storage_block : name of a Prefect AwsCredentials / GcpCredentials block for an object store
        (default: the standard environment, AWS_* or GOOGLE_APPLICATION_CREDENTIALS).
    registries : several registries, one model each (README, "A fleet of models"); with `registry`
        too, that one is the first. Each model is named after its registry.
    fleet : a folder or object-store prefix whose sub-folders are model registries. With more than
        one model, reports go to ``<out_dir>/<model>/<week>/report.html`` and a digest to
        ``<out_dir>/fleet/<week>/index.html``, which is e-mailed in place of each model's report.
    email_per_model : in a fleet, e-mail each model's report as well as the digest.
    notify : alert targets: Apprise URLs (``slack://...``, ``json://host/path``) or names of Prefect
        notification blocks; also ``$DRIFT_AUDIT_NOTIFY`` (URLs with tokens belong there, not here:
        Prefect stores parameters with the run).
    notify_on : ``alert``, ``warn`` (warn or alert) or ``always``; a failed model always notifies.
    lease_seconds : how long each drop's run stays ``running`` without a heartbeat (renewed every
        quarter of it while the drop is audited); a run of a killed process is marked
        ``interrupted`` by the first run after that. None: 120 s (`storage.leases`).
    """
    if mlflow_tracking_uri is not None:  # a flow parameter, stored by Prefect: no password in it
        refuse_password(mlflow_tracking_uri, "--mlflow-tracking-uri")
    check_report_url(report_url)  # a report URL that is not http(s) fails before anything is audited
    given = [*([registry] if registry else []), *(registries or [])]
    models = resolve_fleet(given, fleet, model_name, storage_block=storage_block)
    db = flow_database_url(db_url, db_secret, out_dir)
    source = SourceOptions(mlflow_tracking_uri, storage_block)
    scope = DropScope(week, from_week, to_week, redo)
    options = MethodOptions(_tuple(methods), random_state, trust_model_code, tuple(custom_modules or ()))
    settings = DropSettings.of(options, Path(out_dir), lease_seconds)
    email = EmailOptions(
        _tuple(email_to), email_from, smtp_host, smtp_port, smtp_security, smtp_block, send_email
    )
    publishing = EmailParameters(report_url=report_url, attach_report=attach_report).publishing
    check_notify_on(notify_on)
    alerts = Alerts(parse_targets(notify), notify_on)
    if models.is_fleet:
        run = FleetRun(models, db, Path(out_dir), source, scope, settings, publishing, alerts)
        return _audit_fleet(run, email, email_per_model)
    member = models.members[0]
    target = AuditTarget(member.registry, db, Path(out_dir), member.name, source)
    return _audit_registry(target, scope, settings, email, publishing, alerts)


def _audit_registry(
    target: AuditTarget,
    scope: DropScope,
    settings: DropSettings,
    email: EmailOptions,
    publishing: ReportPublishing,
    alerts: Alerts,
) -> AuditResult | State[object]:
    """The flow's body for one model: audit and compare the drops of `scope`, oldest first, then
    compare again the weeks that follow them, render the newest report, publish and e-mail it."""
    upgrade_database_task(target.db_url)
    expire_leases_task(target.db_url)
    run = _audit_model(target, scope, settings, publishing)
    report = run.report
    if report.report_input is not None:
        _publish_artifacts(target.model_name, report.report_input, report.path)
    email_error = _email_report(target.db_url, report.rendered, report.path, email)
    alert_error = _alert(target.db_url, target.model_name, run, None, publishing, alerts)
    if run.failure is not None:
        return Failed(message=run.failure if alert_error is None else f"{run.failure}; {alert_error}")
    if email_error is not None:
        return Failed(message=f"report written to {report.path} but not e-mailed: {email_error}")
    if alert_error is not None:
        return Failed(message=f"report written to {report.path}; {alert_error}")
    return AuditResult(audited_weeks=run.audited_weeks, report_path=report.path, verdict=run.verdict)


@dataclass(frozen=True)
class ModelRun:
    """What one model's audit did: the weeks it audited, the report it wrote, and the run's
    failure message (None: every drop and comparison succeeded)."""

    audited_weeks: tuple[dt.date, ...]
    report: NewestReport
    failure: str | None
    #: The weeks whose audit or comparison failed in this run.
    failed_weeks: tuple[dt.date, ...] = ()

    @property
    def verdict(self) -> DropVerdict | None:
        """The drift verdict of the reported drop (None: no report, or the first drop)."""
        report_input = self.report.report_input
        assessment = None if report_input is None else report_input.assessment
        return None if assessment is None else assessment.verdict


def _audit_model(
    target: AuditTarget, scope: DropScope, settings: DropSettings, publishing: ReportPublishing
) -> ModelRun:
    """Audit and compare the drops of one model, then render its newest report (no e-mail)."""
    cache = (target.out_dir / STAGING_DIR).resolve()
    catalog = catalog_task(
        target.db_url,
        target.model_name,
        target.registry,
        cache,
        target.source.mlflow_tracking_uri,
        target.source.storage_block,
    )
    pending = plan_task(target.db_url, target.model_name, catalog.listing, scope)
    progress.drops_planned([drop.week for drop in pending])
    drops = [_audit_and_compare(target, drop, catalog, settings) for drop in pending]
    audited = tuple(outcome.audit.week for outcome in drops if outcome.audit.error is None)
    again = _compare_again(target, catalog, audited)
    compared = [*(outcome.comparison for outcome in drops if outcome.comparison is not None), *again]
    report = _render_newest(target, catalog, scope.week, audited, {c.week: c for c in compared}, publishing)
    later = (*again, *((report.comparison,) if report.comparison is not None else ()))
    failed_weeks = tuple(
        sorted(
            {o.audit.week for o in drops if o.failure is not None}
            | {c.week for c in later if c.error is not None}
        )
    )
    return ModelRun(audited, report, _failure_message(pending, drops, later), failed_weeks)


def _failure_message(
    pending: Sequence[SourceDrop], drops: Sequence[DropOutcome], later: Sequence[WeekComparison]
) -> str | None:
    """The run's failure message (None: nothing failed): each failure in the order it happened, the
    drops' then the later comparisons' (weeks compared again, the reported week).

    It counts the drops of this run plus the earlier weeks whose comparison was redone here and failed.
    """
    failures = [f for f in (*(o.failure for o in drops), *(c.failure for c in later)) if f is not None]
    if not failures:
        return None
    n_drops = len({drop.week for drop in pending} | {c.week for c in later if c.error is not None})
    return f"{len(failures)} of {n_drops} drop(s) failed; " + "; ".join(failures)


def _email_report(
    db: str, rendered: RenderedReport | None, report_path: Path | None, options: EmailOptions
) -> str | None:
    """E-mail the written report (when recipients are configured); the one-line error if that failed.

    Runs after everything else is stored, and returns instead of raising: the report stays on disk,
    its path with the run, and the flow's final state says the e-mail failed.
    """
    if rendered is None or report_path is None:
        return None
    state = email_task(db, rendered, report_path, options, return_state=True)
    if not state.is_failed():
        return None
    error = state.result(raise_on_failure=False)
    return one_line(error) if isinstance(error, BaseException) else (state.message or "e-mail failed")


def _publish_artifacts(name: str, report_input: ReportInput, report_path: Path | None) -> None:
    """Publish the Prefect artifacts of the report; their failure (the Prefect API down) is a warning:
    the figures and the report are stored, and the e-mail and the run's outcome must still follow."""
    state = artifacts_task(name, report_input, report_path, return_state=True)
    if state.is_failed() or state.is_crashed():
        error = state.result(raise_on_failure=False)
        reason = one_line(error) if isinstance(error, BaseException) else (state.message or "failed")
        get_run_logger().warning("Prefect artifacts not published: %s", reason)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _audit_and_compare(
    target: AuditTarget, drop: SourceDrop, catalog: Catalog, settings: DropSettings
) -> DropOutcome:
    """Audit one drop and, when that succeeded, compare it with the latest earlier audited drop."""
    audit = _audit_drop(target, drop, catalog, settings)
    if audit.drift is None:
        return DropOutcome(audit)
    _rescore_previous(target, drop.week, catalog, settings)
    return DropOutcome(audit, _compare(target, drop.week, audit.drift))


def _rescore_previous(target: AuditTarget, week: dt.date, catalog: Catalog, settings: DropSettings) -> None:
    """Re-score the previous drop with the methods whose definition changed since it was audited
    (`rescore_previous_task`); a failure is a warning: those methods are then "not comparable"."""
    state = rescore_previous_task(
        target.db_url,
        target.model_name,
        week,
        catalog,
        settings.trust_model_code,
        settings.custom_modules,
        settings.random_state,
        return_state=True,
    )
    if state.is_failed() or state.is_crashed():
        error = state.result(raise_on_failure=False)
        reason = one_line(error) if isinstance(error, BaseException) else (state.message or "failed")
        get_run_logger().warning("%s: the previous drop was not re-scored: %s", week, reason)


def _audit_drop(target: AuditTarget, drop: SourceDrop, catalog: Catalog, settings: DropSettings) -> DropAudit:
    """Audit one drop (staging it first when it is remote): its drift thresholds on success, else the
    one-line error (also stored with its run)."""
    db = target.db_url
    run_id = start_run_task(db, target.model_name, drop, flow_run.id, settings.lease_seconds)
    progress.drop_started(drop.week, settings.methods)
    with heartbeat(engine_for(db), run_id, settings.lease_seconds, get_run_logger()):
        return _audit_started(target, drop, catalog, settings, run_id)


def _audit_started(
    target: AuditTarget, drop: SourceDrop, catalog: Catalog, settings: DropSettings, run_id: int
) -> DropAudit:
    """The audit of a drop whose run `run_id` is started: stage, load, score, store (or record the
    failure)."""
    db = target.db_url
    try:
        staged = stage_task(catalog, drop)
        loaded = load_task(staged.drop, settings.trust_model_code, settings.custom_modules)
        evaluation = evaluate_task(loaded)
        inputs = drop_inputs(loaded, settings.trust_model_code, settings.custom_modules)
        frozen = frozen_model_task(db, target.model_name, loaded, inputs, catalog)
        scores = _score_drop(loaded, inputs, frozen, settings)
        store_task(
            db,
            run_id,
            loaded,
            scores.outcomes,
            scores.copies,
            scores.frozen,
            evaluation=evaluation,
            frozen_evaluation=None if frozen is None else frozen.evaluation,
            provenance=staged.provenance,
        )
    except Exception as error:  # recorded with the run and reported by the flow's final state
        message = one_line(error)
        if drop.local is None and drop.location not in message:  # name the remote drop, not its copy
            message = f"{drop.location}: {message}"
        record_failure_task(db, run_id, message)
        get_run_logger().error("%s: audit failed: %s", drop.week, message)
        progress.drop_finished(drop.week, "failed")
        return DropAudit(drop.week, error=message)
    progress.drop_finished(drop.week, "succeeded")
    return DropAudit(drop.week, drift=loaded.config.drift)


def _score_drop(
    loaded: LoadedDrop, inputs: DropInputs, frozen: FrozenModel | None, settings: DropSettings
) -> MethodScores:
    """Run every method task of the drop concurrently on the flow's task runner and collect them.

    Waits for all of them; the first task that raised (a model that cannot be loaded in a worker)
    then fails the drop. A method's own failure is an outcome, not an exception.
    """
    jobs = method_jobs(loaded, inputs, frozen, settings.methods, settings.random_state)
    try:  # which entries this drop uses, for `drift-audit prune` (a key names content, not a drop)
        record_drop_keys(settings.method_cache, inputs.model_hashes[0], [job_cache_key(job) for job in jobs])
    except OSError as error:  # bookkeeping of the cache: its failure must not fail the audit
        get_run_logger().warning("%s: method cache keys not listed: %s", loaded.drop.week, error)
    cached_task = method_task.with_options(result_storage=settings.method_cache)
    futures: dict[PrefectFuture[MethodOutcome], MethodJob] = {cached_task.submit(job): job for job in jobs}
    for future in as_completed(list(futures)):
        job = futures[future]
        if job.model_index == 0 and job.frozen is None:
            result = future.result(raise_on_failure=False)
            status = result.status.value if isinstance(result, MethodOutcome) else "failed"
            progress.method_finished(loaded.drop.week, job.method, status)
    results = [(job, future.result()) for future, job in futures.items()]  # in job (= method) order

    def of_model(index: int, frozen_set: bool = False) -> list[MethodOutcome]:
        return [
            outcome for job, outcome in results if job.model_index == index and bool(job.frozen) == frozen_set
        ]

    copies = tuple(
        ModelImportances(path.name, _importances(of_model(index)))
        for index, path in enumerate(loaded.drop.model_paths[1:], start=1)
    )
    frozen_set = (
        None if frozen is None else ModelImportances(frozen.week.isoformat(), _importances(of_model(0, True)))
    )
    return MethodScores(outcomes=tuple(of_model(0)), copies=copies, frozen=frozen_set)


def _importances(outcomes: Iterable[MethodOutcome]) -> tuple[Importance, ...]:
    return tuple(outcome.importance for outcome in outcomes if outcome.importance is not None)


def _compare(target: AuditTarget, week: dt.date, drift_config: DriftConfig) -> WeekComparison:
    """Compare the drop of `week` (`compare_task`).

    A failure is returned, not raised: it fails the run at the end but does not stop the later
    drops, the report or the e-mail (the drop's figures are stored already).
    """
    try:
        report_input = compare_task(target.db_url, target.model_name, week, drift_config)
    except Exception as error:  # recorded in the flow's final state
        message = one_line(error)
        get_run_logger().error("%s: figures stored, but the comparison failed: %s", week, message)
        return WeekComparison(week, error=message)
    return WeekComparison(week, report_input=report_input)


def _compare_again(
    target: AuditTarget, catalog: Catalog, audited: Sequence[dt.date]
) -> tuple[WeekComparison, ...]:
    """Compare again the already-audited weeks that follow a week audited in this run (a backfilled
    gap or a re-audit changed their previous drop)."""
    stale = stale_comparisons_task(target.db_url, target.model_name, audited) if audited else ()
    return tuple(_compare(target, later, _drift_config(catalog, later)) for later in stale)


def _render_newest(
    target: AuditTarget,
    catalog: Catalog,
    week: dt.date | None,
    audited: Sequence[dt.date],
    compared: Mapping[dt.date, WeekComparison],
    publishing: ReportPublishing,
) -> NewestReport:
    """Render the report of a re-audited `week`, or of the newest audited drop, reusing its
    comparison when this run made it (`compared`), else comparing it here.

    No report is written when a requested re-audit failed (its old figures would pass for new ones)
    or when the reported week's comparison failed (the run's failure message says so).
    """
    if week is not None and week not in audited:
        return NewestReport()
    report_week = week if week is not None else latest_week_task(target.db_url, target.model_name)
    if report_week is None:
        get_run_logger().warning("no audited drop yet: no report written")
        return NewestReport()
    made_here = None
    comparison = compared.get(report_week)
    if comparison is None:
        comparison = made_here = _compare(target, report_week, _drift_config(catalog, report_week))
    if comparison.report_input is None:
        get_run_logger().warning("%s: not compared: no report written", report_week)
        return NewestReport(comparison=made_here)
    path, rendered = render_task(target.db_url, comparison.report_input, target.out_dir, publishing)
    return NewestReport(comparison.report_input, rendered, path, comparison=made_here)


def _drift_config(catalog: Catalog, week: dt.date) -> DriftConfig:
    """The ``[drift]`` thresholds of the drop of `week` (defaults when it is gone or has none); a
    remote drop is staged for its ``audit.toml`` (nothing is downloaded when it was staged before)."""
    listed = catalog.find(week)
    if listed is None:
        return DriftConfig()
    try:
        return read_drop_config(catalog.stage(listed).drop.config_path).drift
    except AuditError as error:
        get_run_logger().warning("%s; default drift thresholds used", error)
        return DriftConfig()


#: Models audited at once in a fleet: while one model's method tasks compute on the task runner,
#: another is loaded, stored or rendered (those steps run in the flow's process).
FLEET_MODELS_AT_ONCE = 2


@dataclass(frozen=True)
class FleetRun:
    """What a fleet run shares: its models, the database, ``<out>``, and the per-run settings."""

    fleet: Fleet
    db_url: str = field(repr=False)
    out_dir: Path
    source: SourceOptions
    scope: DropScope
    settings: DropSettings
    publishing: ReportPublishing
    alerts: Alerts

    def target(self, member: FleetMember) -> AuditTarget:
        """The model's own target: its reports under ``<out>/<model>/``."""
        return AuditTarget(
            member.registry, self.db_url, self.out_dir / member.folder, member.name, self.source
        )

    def model_publishing(self, member: FleetMember) -> ReportPublishing:
        """Its reports published at ``<report_url>/<model>/<week>/report.html``."""
        base = self.publishing.report_url
        url = None if base is None else f"{base.rstrip('/')}/{member.folder}"
        return ReportPublishing(url, attach=self.publishing.attach)


@dataclass(frozen=True)
class ModelOutcome:
    """One model of a fleet run: what its audit did, or the one line it failed with."""

    member: FleetMember
    run: ModelRun | None = None
    error: str | None = None
    #: A notification that did not go out (the audit itself may have succeeded).
    alert_error: str | None = None

    @property
    def failure(self) -> str | None:
        """The model's line in the run's failure message (None: it succeeded)."""
        error = self.error if self.run is None else self.run.failure
        parts = [part for part in (error, self.alert_error) if part is not None]
        return f"{self.member.name}: {'; '.join(parts)}" if parts else None


@dataclass(frozen=True)
class ModelSummary:
    """A model's line in a fleet run's summary."""

    model_name: str
    verdict: DropVerdict | None
    report_path: Path | None
    error: str | None = None


@dataclass(frozen=True)
class FleetResult:
    """What a fleet run did, model by model (also the data of its `Failed` state when one failed)."""

    models: tuple[ModelSummary, ...]
    digest_path: Path | None = None

    @property
    def failed(self) -> tuple[ModelSummary, ...]:
        return tuple(model for model in self.models if model.error is not None)


def _audit_fleet(run: FleetRun, email: EmailOptions, email_per_model: bool) -> FleetResult | State[object]:
    """Audit every model of the fleet; one model failing does not stop the others.

    Models run `FLEET_MODELS_AT_ONCE` at a time on threads of the flow's process, each in a copy of
    the flow run's context (Prefect's own thread runner does the same), so their tasks belong to this
    flow run and their method tasks share its task runner; their reports are drawn in a process of
    their own (`flows.render_pool`). The run fails at the end when any model
    failed, naming each with its reason.
    """
    upgrade_database_task(run.db_url)  # once, before models write concurrently
    expire_leases_task(run.db_url)
    with (
        drawing_in_child_process(),
        ThreadPoolExecutor(max_workers=FLEET_MODELS_AT_ONCE, thread_name_prefix="fleet-model") as pool,
    ):
        futures = [
            pool.submit(contextvars.copy_context().run, _fleet_model, run, member, email, email_per_model)
            for member in run.fleet.members
        ]
        outcomes = [future.result() for future in futures]
    digest = _write_digest(run, outcomes)
    result = FleetResult(tuple(_summary(outcome) for outcome in outcomes), digest.path)
    email_error = _email_digest(run.db_url, digest, email)
    failures = [outcome.failure for outcome in outcomes if outcome.failure is not None]
    if failures:
        message = f"{len(failures)} of {len(outcomes)} model(s) failed; " + "; ".join(failures)
        return Failed(message=message, data=result)
    if email_error is not None:
        return Failed(message=f"digest written to {digest.path} but not e-mailed: {email_error}", data=result)
    return result


def _write_digest(run: FleetRun, outcomes: Sequence[ModelOutcome]) -> Digest:
    """Write the digest page and publish it as an artifact (a failing Prefect API is a warning)."""
    sources = [_digest_source(run, outcome) for outcome in outcomes]
    digest = digest_task(run.db_url, run.out_dir, sources)
    state = digest_artifact_task(digest, return_state=True)
    if state.is_failed() or state.is_crashed():
        get_run_logger().warning("digest artifact not published: %s", state.message or "failed")
    return digest


def _digest_source(run: FleetRun, outcome: ModelOutcome) -> DigestSource:
    member = outcome.member
    report_input = None if outcome.run is None else outcome.run.report.report_input
    published = None
    if report_input is not None:
        published = run.model_publishing(member).link(report_input.current.week)
    error = outcome.error if outcome.run is None else outcome.run.failure
    return DigestSource(member.name, member.folder, report_input, published, error)


def _email_digest(db: str, digest: Digest, options: EmailOptions) -> str | None:
    """E-mail the digest; the one-line error if that failed (the digest stays on disk)."""
    state = email_digest_task(db, digest, options, return_state=True)
    if not state.is_failed():
        return None
    error = state.result(raise_on_failure=False)
    return one_line(error) if isinstance(error, BaseException) else (state.message or "e-mail failed")


def _fleet_model(
    run: FleetRun, member: FleetMember, email: EmailOptions, email_per_model: bool
) -> ModelOutcome:
    """One model of a fleet: audited, its report rendered and its artifacts published; any error is
    its outcome (a registry that cannot be listed, a database error), not the fleet's."""
    target = run.target(member)
    try:
        model_run = _audit_model(target, run.scope, run.settings, run.model_publishing(member))
    except Exception as error:  # the model's failure, reported by the fleet's final state
        message = one_line(error)
        get_run_logger().error("%s: audit failed: %s", member.name, message)
        alert_error = _alert(run.db_url, member.name, None, message, run.model_publishing(member), run.alerts)
        return ModelOutcome(member, error=message, alert_error=alert_error)
    alert_error = _alert(run.db_url, member.name, model_run, None, run.model_publishing(member), run.alerts)
    report = model_run.report
    if report.report_input is not None:
        _publish_artifacts(member.name, report.report_input, report.path)
    # The fleet keeps every model's outcome until its digest, which needs the figures only: the
    # drawn documents and images (about 4 MB a model with every method) go now.
    kept = dataclasses.replace(model_run, report=dataclasses.replace(report, rendered=None))
    if email_per_model:
        email_error = _email_report(run.db_url, report.rendered, report.path, email)
        if email_error is not None and model_run.failure is None:
            failure = f"report written to {report.path} but not e-mailed: {email_error}"
            return ModelOutcome(member, dataclasses.replace(kept, failure=failure), alert_error=alert_error)
    return ModelOutcome(member, kept, alert_error=alert_error)


def _summary(outcome: ModelOutcome) -> ModelSummary:
    run = outcome.run
    if run is None:
        return ModelSummary(outcome.member.name, None, None, outcome.error)
    error = None if run.failure is None else run.failure
    return ModelSummary(outcome.member.name, run.verdict, run.report.path, error)


@dataclass(frozen=True)
class Alerts:
    """Where a run's verdicts are sent and which (`flows.alerts`)."""

    targets: tuple[AlertTarget, ...]
    notify_on: str


def _alert(
    db: str,
    model_name: str,
    run: ModelRun | None,
    error: str | None,
    publishing: ReportPublishing,
    alerts: Alerts,
) -> str | None:
    """Emit the model's ``drift-audit.verdict`` event and send its verdict to each target that wants
    it; the one line naming the targets that did not take it (None: all did, or none was due)."""
    entry, week, run_id = _alert_entry(model_name, run, error, publishing)
    if entry is None:
        return None
    try:
        emit_verdict_event(entry, week)
    except Exception as event_error:  # the Prefect API down: the alerts and the run's outcome still follow
        get_run_logger().warning(
            "%s: event %s not emitted: %s", model_name, VERDICT_EVENT, one_line(event_error)
        )
    if not should_notify(entry.status, alerts.notify_on):
        return None
    message = alert_for(entry, week, run_id)
    failed = []
    for target in alerts.targets:
        state = notify_task(db, message, target, return_state=True)
        if state.is_failed() or state.is_crashed():
            reason = state.result(raise_on_failure=False)
            text = one_line(reason) if isinstance(reason, BaseException) else (state.message or "failed")
            failed.append(f"notification to {target.label} failed: {scrub(text)}")
    return "; ".join(failed) or None


def _alert_entry(
    model_name: str, run: ModelRun | None, error: str | None, publishing: ReportPublishing
) -> tuple[DigestEntry | None, dt.date, int | None]:
    """The model's row as an alert says it, the week it is about, and its run id."""
    report_input = None if run is None else run.report.report_input
    link = None if report_input is None else publishing.link(report_input.current.week)
    failure = error if run is None else run.failure
    if failure is not None:
        weeks = () if run is None else run.failed_weeks
        week = max(weeks) if weeks else dt.datetime.now(dt.UTC).date()
        return failed_entry(model_name, failure, week=week, link=link), week, None
    if report_input is None:
        return None, dt.date.today(), None
    week = report_input.current.week
    return digest_entry(model_name, report_input, link=link), week, report_input.current.run_id
