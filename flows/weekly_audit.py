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

from audit.types import AuditError, Drop, ReportInput
from flows.tasks import (
    compare_task,
    compute_task,
    discover_task,
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
    """What a successful flow run did: the weeks it audited and the report it wrote."""

    audited_weeks: tuple[dt.date, ...]
    report_path: Path | None


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
        failure = _audit_drop(db, name, drop, settings)
        if failure is not None:
            failures.append(f"{drop.week.isoformat()}: {failure}")
            continue
        audited.append(drop.week)
        latest_input = compare_task(db, name, drop.week)
    report_path = _render_newest(db, name, Path(out_dir), week, audited, latest_input)
    if failures:
        return Failed(message=f"{len(failures)} of {len(pending)} drop(s) failed; " + "; ".join(failures))
    return AuditResult(audited_weeks=tuple(audited), report_path=report_path)


def _audit_drop(db: str, name: str, drop: Drop, settings: DropSettings) -> str | None:
    """Audit one drop; returns None on success, else the one-line error (also stored with the run)."""
    run_id = start_run_task(db, name, drop, flow_run.id)
    try:
        loaded = load_task(drop, settings.trust_model_code, settings.custom_modules)
        outcomes = compute_task(loaded, settings.methods, settings.random_state)
        store_task(db, run_id, loaded, outcomes)
    except Exception as error:  # recorded with the run and reported by the flow's final state
        message = one_line(error)
        record_failure_task(db, run_id, message)
        get_run_logger().error("%s: audit failed: %s", drop.week, message)
        return message
    return None


def _render_newest(
    db: str,
    name: str,
    out_dir: Path,
    week: dt.date | None,
    audited: list[dt.date],
    latest_input: ReportInput | None,
) -> Path | None:
    """Render the report of a re-audited `week`, or of the newest audited drop.

    No report is written when a requested re-audit failed: its old figures would pass for new ones.
    """
    if week is not None and week not in audited:
        return None
    report_week = week or latest_week_task(db, name)
    if report_week is None:
        get_run_logger().warning("no audited drop yet: no report written")
        return None
    if latest_input is None or latest_input.current.week != report_week:
        latest_input = compare_task(db, name, report_week)
    return render_task(db, latest_input, out_dir)
