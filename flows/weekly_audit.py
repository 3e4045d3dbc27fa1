"""The `weekly_audit` Prefect flow: discover -> (start, load, compute, store, compare) per drop -> render.

Runs with or without a Prefect server (ephemeral mode when none is configured). Drops are audited
oldest first, each compared with the latest earlier audited drop; one drop's failure is recorded
as a ``failed`` run and does not stop the others, but it fails the flow run at the end, so a
scheduled run never fails silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from audit.config import read_drop_config
from audit.registry import RegistryListing
from audit.types import AuditError, DriftConfig, Drop, DropVerdict, ReportInput
from flows.tasks import (
    compare_task,
    compute_task,
    copies_task,
    discover_task,
    frozen_task,
    latest_week_task,
    load_task,
    plan_task,
    record_failure_task,
    render_task,
    start_run_task,
    store_task,
    upgrade_database_task,
)

DEFAULT_OUT_DIR = "drift-audit-output"


@dataclass(frozen=True)
class DropSettings:
    """How every drop of a run is loaded and audited."""

    methods: list[str] | None
    random_state: int
    trust_model_code: bool
    custom_modules: tuple[str, ...]


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


@flow(name="weekly-audit", log_prints=False)
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
    """
    registry_path = Path(registry)
    db = db_url or default_db_url(out_dir)
    name = model_name or registry_path.resolve().name
    upgrade_database_task(db)
    listing = discover_task(registry_path)
    pending = plan_task(db, name, listing, week)
    settings = DropSettings(methods, random_state, trust_model_code, tuple(custom_modules or ()))
    failures: list[str] = []
    audited: list[dt.date] = []
    latest_input: ReportInput | None = None
    for drop in pending:
        drift_config = _audit_drop(db, name, drop, listing, settings)
        if isinstance(drift_config, str):
            failures.append(f"{drop.week.isoformat()}: {drift_config}")
            continue
        audited.append(drop.week)
        latest_input = compare_task(db, name, drop.week, drift_config)
    report_input, report_path = _render_newest(db, name, listing, Path(out_dir), week, audited, latest_input)
    if failures:
        return Failed(message=f"{len(failures)} of {len(pending)} drop(s) failed; " + "; ".join(failures))
    verdict = (
        None if report_input is None or report_input.assessment is None else report_input.assessment.verdict
    )
    return AuditResult(audited_weeks=tuple(audited), report_path=report_path, verdict=verdict)


def _audit_drop(
    db: str, name: str, drop: Drop, listing: RegistryListing, settings: DropSettings
) -> DriftConfig | str:
    """Audit one drop; returns its drift thresholds on success, else the one-line error (also
    stored with the run)."""
    run_id = start_run_task(db, name, drop, flow_run.id)
    try:
        loaded = load_task(drop, settings.trust_model_code, settings.custom_modules)
        outcomes = compute_task(loaded, settings.methods, settings.random_state)
        copies = copies_task(loaded, settings.methods, settings.random_state) if loaded.copies else ()
        frozen = frozen_task(
            db,
            name,
            loaded,
            listing,
            settings.methods,
            settings.random_state,
            settings.trust_model_code,
            settings.custom_modules,
        )
        store_task(db, run_id, loaded, outcomes, copies, frozen)
    except Exception as error:  # recorded with the run and reported by the flow's final state
        message = one_line(error)
        record_failure_task(db, run_id, message)
        get_run_logger().error("%s: audit failed: %s", drop.week, message)
        return message
    return loaded.config.drift


def _render_newest(
    db: str,
    name: str,
    listing: RegistryListing,
    out_dir: Path,
    week: dt.date | None,
    audited: list[dt.date],
    latest_input: ReportInput | None,
) -> tuple[ReportInput | None, Path | None]:
    """Render the report of a re-audited `week`, or of the newest audited drop.

    No report is written when a requested re-audit failed: its old figures would pass for new ones.
    """
    if week is not None and week not in audited:
        return None, None
    report_week = week or latest_week_task(db, name)
    if report_week is None:
        get_run_logger().warning("no audited drop yet: no report written")
        return None, None
    if latest_input is None or latest_input.current.week != report_week:
        latest_input = compare_task(db, name, report_week, _drift_config(listing, report_week))
    return latest_input, render_task(db, latest_input, out_dir)


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
