"""The `weekly_audit` Prefect flow: discover -> (start, load, compute, store, compare) per drop -> render.

"compute" is one task per (model, method) of the drop (`flows.method_tasks`), submitted together to
the flow's task runner (threads by default; `flows.runners` for Dask) and cached on content hashes.

Runs with or without a Prefect server (ephemeral mode when none is configured). Drops are audited
oldest first, each compared with the latest earlier audited drop; one drop's failure is recorded
as a ``failed`` run and does not stop the others, but it fails the flow run at the end, so a
scheduled run never fails silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Failed, State

from audit.config import read_drop_config
from audit.loading import LoadedDrop
from audit.registry import RegistryListing
from audit.runner import select_methods
from audit.types import (
    AuditError,
    DriftConfig,
    Drop,
    DropVerdict,
    Importance,
    MethodOutcome,
    ModelImportances,
    ReportInput,
)
from flows import progress
from flows.artifacts import artifacts_task
from flows.delivery import EmailOptions, email_task
from flows.method_tasks import (
    METHOD_CACHE_DIR,
    DropInputs,
    FrozenModel,
    MethodJob,
    drop_inputs,
    method_jobs,
    method_task,
)
from flows.runners import default_task_runner
from flows.tasks import (
    ReportPublishing,
    check_report_url,
    compare_task,
    discover_task,
    evaluate_task,
    frozen_model_task,
    latest_week_task,
    load_task,
    plan_task,
    record_failure_task,
    render_task,
    stale_comparisons_task,
    start_run_task,
    store_task,
    upgrade_database_task,
)
from reports.rendered import RenderedReport

DEFAULT_OUT_DIR = "drift-audit-output"


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


@dataclass(frozen=True)
class MethodScores:
    """The collected method results of one drop: the primary model's, each copy's, the frozen set's."""

    outcomes: tuple[MethodOutcome, ...]
    copies: tuple[ModelImportances, ...]
    frozen: ModelImportances | None


@dataclass(frozen=True)
class AuditResult:
    """What a successful flow run did: the weeks it audited, the report it wrote, the newest verdict."""

    audited_weeks: tuple[dt.date, ...]
    report_path: Path | None
    #: The drift verdict of the reported drop (None when it is the first: nothing to compare).
    verdict: DropVerdict | None = None


def default_db_url(out_dir: str | Path) -> str:
    """The default database: a SQLite file next to the reports."""
    return f"sqlite:///{Path(out_dir).resolve() / 'drift-audit.db'}"


def one_line(error: BaseException) -> str:
    """An exception as one line: the message of an `AuditError`, else type and message."""
    text = " ".join(str(error).split())
    return text if isinstance(error, AuditError) else f"{type(error).__name__}: {text}"


@flow(name="weekly-audit", log_prints=False, task_runner=default_task_runner())
def weekly_audit(
    registry: str,
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
    report_url: str | None = None,
    attach_report: bool = False,
) -> AuditResult | State:
    """Audit the unaudited drops of `registry` (or re-audit `week`) and write the newest report.

    Parameters
    ----------
    registry : folder of drops (see README, "The registry").
    db_url : SQLAlchemy URL; default a SQLite file in `out_dir`.
    out_dir : reports land in ``<out_dir>/<week>/report.html``.
    week : audit only this drop, replacing its stored figures.
    model_name : name stored with the figures; default the registry folder's name.
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
    report_url : where `out_dir` is published (http or https): the e-mail, a summary, links
        ``<report_url>/<week>/report.html`` first. Without it the e-mail attaches report.html.
    attach_report : attach report.html to the e-mail also when `report_url` is given (some mail
        gateways strip HTML attachments, others links).
    """
    registry_path = Path(registry)
    db = db_url or default_db_url(out_dir)
    name = model_name or registry_path.resolve().name
    chosen = chosen_methods(methods)  # a bad method name fails the run before any drop is loaded
    check_report_url(report_url)  # likewise a report URL that is not http(s)
    publishing = ReportPublishing(report_url, attach=attach_report or report_url is None)
    upgrade_database_task(db)
    listing = discover_task(registry_path)
    pending = plan_task(db, name, listing, week, from_week, to_week, redo)
    progress.drops_planned([drop.week for drop in pending])
    settings = DropSettings(
        chosen,
        random_state,
        trust_model_code,
        tuple(custom_modules or ()),
        method_cache=(Path(out_dir) / METHOD_CACHE_DIR).resolve(),
    )
    failures: list[str] = []
    audited: list[dt.date] = []
    compared: dict[dt.date, ReportInput | None] = {}  # this run's comparisons by week (None: failed)
    for drop in pending:
        drift_config = _audit_drop(db, name, drop, listing, settings)
        if isinstance(drift_config, str):
            failures.append(f"{drop.week.isoformat()}: {drift_config}")
            continue
        audited.append(drop.week)
        _compare(db, name, drop.week, drift_config, compared, failures)
    _compare_again(db, name, listing, audited, compared, failures)
    report_input, rendered, report_path = _render_newest(
        db, name, listing, Path(out_dir), week, audited, compared, failures, publishing
    )
    if report_input is not None:
        _publish_artifacts(name, report_input, report_path)
    email = EmailOptions(
        _tuple(email_to), email_from, smtp_host, smtp_port, smtp_security, smtp_block, send_email
    )
    email_error = _email_report(db, rendered, report_path, email)
    if failures:
        # the drops of this run, plus earlier weeks whose comparison was redone here and failed
        pending_weeks = {drop.week for drop in pending}
        n_drops = len(pending_weeks | {w for w, done in compared.items() if done is None})
        return Failed(message=f"{len(failures)} of {n_drops} drop(s) failed; " + "; ".join(failures))
    if email_error is not None:
        return Failed(message=f"report written to {report_path} but not e-mailed: {email_error}")
    verdict = (
        None if report_input is None or report_input.assessment is None else report_input.assessment.verdict
    )
    return AuditResult(audited_weeks=tuple(audited), report_path=report_path, verdict=verdict)


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


def _audit_drop(
    db: str, name: str, drop: Drop, listing: RegistryListing, settings: DropSettings
) -> DriftConfig | str:
    """Audit one drop; returns its drift thresholds on success, else the one-line error (also
    stored with the run)."""
    run_id = start_run_task(db, name, drop, flow_run.id)
    progress.drop_started(drop.week, settings.methods)
    try:
        loaded = load_task(drop, settings.trust_model_code, settings.custom_modules)
        evaluation = evaluate_task(loaded)
        inputs = drop_inputs(loaded, settings.trust_model_code, settings.custom_modules)
        frozen = frozen_model_task(db, name, loaded, inputs, listing)
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
        )
    except Exception as error:  # recorded with the run and reported by the flow's final state
        message = one_line(error)
        record_failure_task(db, run_id, message)
        get_run_logger().error("%s: audit failed: %s", drop.week, message)
        progress.drop_finished(drop.week, "failed")
        return message
    progress.drop_finished(drop.week, "succeeded")
    return loaded.config.drift


def _score_drop(
    loaded: LoadedDrop, inputs: DropInputs, frozen: FrozenModel | None, settings: DropSettings
) -> MethodScores:
    """Run every method task of the drop concurrently on the flow's task runner and collect them.

    Waits for all of them; the first task that raised (a model that cannot be loaded in a worker)
    then fails the drop. A method's own failure is an outcome, not an exception.
    """
    jobs = method_jobs(loaded, inputs, frozen, settings.methods, settings.random_state)
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


def chosen_methods(methods: list[str] | None) -> list[str]:
    """The names of the methods to run (None: every registered one); an `AuditError` naming the fix
    for an unknown name or an empty list."""
    if methods is not None and not methods:
        raise AuditError(
            "no method to run: name at least one (e.g. --methods permutation) or omit it for all"
        )
    return [spec.name for spec in select_methods(methods)]


def _compare(
    db: str,
    name: str,
    week: dt.date,
    drift_config: DriftConfig,
    compared: dict[dt.date, ReportInput | None],
    failures: list[str],
) -> ReportInput | None:
    """Compare the drop of `week` (`compare_task`) and keep the result in `compared`.

    A failure is added to `failures` (the run fails at the end) and kept as None in `compared`, and
    does not stop the later drops, the report or the e-mail: the drop's figures are stored already.
    """
    try:
        report_input: ReportInput | None = compare_task(db, name, week, drift_config)
    except Exception as error:  # recorded in the flow's final state
        message = one_line(error)
        get_run_logger().error("%s: figures stored, but the comparison failed: %s", week, message)
        failures.append(f"{week.isoformat()}: comparison failed: {message}")
        report_input = None
    compared[week] = report_input
    return report_input


def _compare_again(
    db: str,
    name: str,
    listing: RegistryListing,
    audited: list[dt.date],
    compared: dict[dt.date, ReportInput | None],
    failures: list[str],
) -> None:
    """Compare again the already-audited weeks that follow a week audited in this run (a backfilled
    gap or a re-audit changed their previous drop), into `compared`."""
    for later in stale_comparisons_task(db, name, audited) if audited else ():
        _compare(db, name, later, _drift_config(listing, later), compared, failures)


def _render_newest(
    db: str,
    name: str,
    listing: RegistryListing,
    out_dir: Path,
    week: dt.date | None,
    audited: list[dt.date],
    compared: dict[dt.date, ReportInput | None],
    failures: list[str],
    publishing: ReportPublishing | None = None,
) -> tuple[ReportInput | None, RenderedReport | None, Path | None]:
    """Render the report of a re-audited `week`, or of the newest audited drop, reusing its
    comparison when this run made it.

    No report is written when a requested re-audit failed (its old figures would pass for new ones)
    or when the reported week's comparison failed (it is in `failures`).
    """
    if week is not None and week not in audited:
        return None, None, None
    report_week = week if week is not None else latest_week_task(db, name)
    if report_week is None:
        get_run_logger().warning("no audited drop yet: no report written")
        return None, None, None
    if report_week in compared:
        report_input = compared[report_week]
    else:
        report_input = _compare(
            db, name, report_week, _drift_config(listing, report_week), compared, failures
        )
    if report_input is None:
        get_run_logger().warning("%s: not compared: no report written", report_week)
        return None, None, None
    path, rendered = render_task(db, report_input, out_dir, publishing or ReportPublishing())
    return report_input, rendered, path


def _drift_config(listing: RegistryListing, week: dt.date) -> DriftConfig:
    """The ``[drift]`` thresholds of the drop of `week` (defaults when it is gone or has none)."""
    drop = next((d for d in listing.drops if d.week == week), None)
    if drop is None:
        return DriftConfig()
    try:
        return read_drop_config(drop.config_path).drift
    except AuditError as error:
        get_run_logger().warning("%s; default drift thresholds used", error)
        return DriftConfig()
