"""The ``drift-audit`` command line: ``run``, ``backfill``, ``demo``, ``db upgrade``, ``history`` and
``prune``.

Exit status: 0 when the audit succeeded (whether or not anything drifted), 1 with a one-line error
on stderr when it failed, 2 for a usage error.

`run` and `backfill` check their settings (`flows.preflight`) before the flow, and with it Prefect's
temporary server, starts: a typo answers in about a second. Prefect, TensorFlow and the flow are
imported only after that, inside the handlers, to keep this module's import light. The database URL
(``--db``) and the SMTP server reach the flow through the environment, never as flow parameters
(Prefect stores those with the run): see `flows.database`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from audit.registry import parse_drop_date
from audit.types import AuditError
from flows.database import DB_URL_ENV, command_database_url, default_db_url
from flows.fleet import FleetUsageError
from flows.preflight import check_request
from flows.settings import (
    DEFAULT_OUT_DIR,
    NOTIFY_ENV,
    RUNNER_KINDS,
    AlertOptions,
    AuditRequest,
    DropScope,
    EmailParameters,
    FleetOptions,
    MethodOptions,
    RunnerChoice,
    SourceOptions,
)

if TYPE_CHECKING:  # the flow imports Prefect and TensorFlow: only inside the handlers
    from flows.weekly_audit import FleetResult

DEMO_OUT = Path("demo-output")

#: Prefect settings for a command-line run, unless the user set them: the first start of the
#: ephemeral server migrates its own database and can take longer than Prefect's default 20 s on a
#: small machine, and a local one-off run has no use for Prefect's telemetry.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        return int(args.handler(args))
    except FleetUsageError as error:
        print(f"drift-audit: error: {error}", file=sys.stderr)
        return 2
    except AuditError as error:
        print(f"drift-audit: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("drift-audit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # anything unexpected still ends in one line and a non-zero exit
        if os.environ.get("DRIFT_AUDIT_DEBUG"):
            raise
        text = " ".join(str(error).split())
        print(
            f"drift-audit: error: {type(error).__name__}: {text} (set DRIFT_AUDIT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drift-audit",
        description="Audit what a weekly-retrained Keras model relies on, and whether it changed.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="audit the unaudited drops of a registry and write the report")
    _registry_arguments(run)
    _database_arguments(run)
    run.add_argument("--out", type=Path, default=Path(DEFAULT_OUT_DIR), help="report folder")
    run.add_argument("--week", type=_week, help="re-audit only this drop (YYYY-MM-DD or YYYYMMDD)")
    run.add_argument("--model-name", help="name stored with the figures (default: the registry's name)")
    run.add_argument("--methods", type=_names, help="comma-separated methods to run (default: all)")
    run.add_argument("--seed", type=int, default=0, help="random seed of randomised methods (default 0)")
    run.add_argument(
        "--trust-model-code",
        action="store_true",
        help="allow model files that embed Python code (Lambda layers); off by default",
    )
    run.add_argument(
        "--custom-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="importable module that registers custom layers (repeatable); imported before loading",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    _lease_argument(run)
    _runner_arguments(run)
    _email_arguments(run)
    _alert_arguments(run)
    run.set_defaults(handler=_run)
    _backfill_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="build the Beijing PM2.5 demo registry and audit it",
        description="Build the Beijing PM2.5 demo registry and audit it. The report is e-mailed only when"
        " the environment sets DRIFT_AUDIT_EMAIL_TO and the server (DRIFT_AUDIT_SMTP_*; see README).",
    )
    demo.add_argument("--out", type=Path, default=DEMO_OUT, help=f"demo folder (default {DEMO_OUT})")
    demo.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the schema to the newest revision")
    upgrade.add_argument("--db", help=f"SQLAlchemy database URL (default: ${DB_URL_ENV})")
    upgrade.set_defaults(handler=_db_upgrade)

    history = commands.add_parser(
        "history", help="print the importance history of the latest audited weeks, with drift calls"
    )
    history.add_argument(
        "--db",
        help=f"SQLAlchemy database URL (default: ${DB_URL_ENV}, else sqlite file <out>/drift-audit.db)",
    )
    history.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT_DIR),
        help="report folder of `run` (for the default --db)",
    )
    history.add_argument("--model", help="only this model (default: every model)")
    history.add_argument("--feature", help="only this feature (exact name)")
    history.add_argument("--method", help="only this method, e.g. permutation")
    history.add_argument(
        "--weeks", type=_positive, default=12, help="the N latest audited weeks (default 12)", metavar="N"
    )
    history.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="(default table)"
    )
    history.set_defaults(handler=_history)
    _prune_parser(commands)
    return parser


def _prune_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prune = commands.add_parser(
        "prune",
        help="remove runs, figures, reports and caches of drops older than N weeks",
        description="Remove the runs, figures, comparisons, drift calls and delivery log of drops dated"
        " more than N weeks ago, then their report files, method cache entries and staged sources."
        " The newest audited drop of each model, the drop the oldest kept week was compared with, and"
        " drops with an audit running stay. Rows go in one transaction; files after its commit.",
    )
    prune.add_argument(
        "--keep-weeks", type=_positive, required=True, metavar="N", help="keep the drops of the last N weeks"
    )
    prune.add_argument("--dry-run", action="store_true", help="print what would go and change nothing")
    prune.add_argument(
        "--force",
        action="store_true",
        help="allow N below the drift rule's history_weeks + 1 (the noise bands then start cold)",
    )
    prune.add_argument(
        "--db",
        help=f"SQLAlchemy database URL (default: ${DB_URL_ENV}, else sqlite file <out>/drift-audit.db)",
    )
    prune.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT_DIR),
        help="report folder of `run` (its .cache holds the method cache and staged sources)",
    )
    prune.add_argument(
        "--as-of",
        type=_week,
        metavar="DATE",
        help="count the N weeks back from this day (default: today, UTC)",
    )
    prune.set_defaults(handler=_prune)


def _backfill_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="audit the drops of a date range, oldest first, each against the latest earlier drop",
    )
    _registry_arguments(backfill)
    backfill.add_argument(
        "--from", dest="from_week", type=_week, help="first drop date of the range (default: the first drop)"
    )
    backfill.add_argument(
        "--to", dest="to_week", type=_week, help="last drop date of the range (default: the last drop)"
    )
    _database_arguments(backfill)
    backfill.add_argument("--out", type=Path, default=Path(DEFAULT_OUT_DIR), help="report folder")
    backfill.add_argument("--model-name", help="name stored with the figures (default: the registry's name)")
    backfill.add_argument(
        "--redo", action="store_true", help="re-audit drops of the range that already have figures too"
    )
    backfill.add_argument("--methods", type=_names, help="comma-separated methods to run (default: all)")
    backfill.add_argument("--seed", type=int, default=0, help="random seed of randomised methods (default 0)")
    backfill.add_argument(
        "--trust-model-code", action="store_true", help="allow model files that embed Python code"
    )
    backfill.add_argument(
        "--custom-module", action="append", default=[], metavar="MODULE", help="as for `run` (repeatable)"
    )
    backfill.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    _lease_argument(backfill)
    _runner_arguments(backfill)
    _email_arguments(backfill)
    _alert_arguments(backfill)
    backfill.set_defaults(handler=_backfill)


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the drops are (`run` and `backfill`): a folder, an object store, an MLflow registry."""
    models = parser.add_argument_group("models (at least one --registry or --fleet)")
    models.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="DIR|URI",
        help="folder holding one folder per drop, or s3://bucket/prefix, gs://bucket/prefix, file:///path,"
        " mlflow://<registered model>[@alias] (README: Where models come from); repeatable: one model each",
    )
    models.add_argument(
        "--fleet",
        metavar="ROOT",
        help="folder or s3:// / gs:// prefix whose sub-folders are model registries (<ROOT>/<model>/<drop>/);"
        " reports go to <out>/<model>/<week>/, the digest to <out>/fleet/<week>/index.html",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        metavar="URI",
        help="MLflow tracking server of an mlflow:// registry (default: MLFLOW_TRACKING_URI; its token:"
        " MLFLOW_TRACKING_TOKEN)",
    )
    parser.add_argument(
        "--storage-block",
        metavar="NAME",
        help="Prefect AwsCredentials / GcpCredentials block for an s3:// or gs:// registry"
        " (default: AWS_* / GOOGLE_APPLICATION_CREDENTIALS from the environment)",
    )


def _database_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `run` and `backfill` store the figures: a URL, or the name of a Prefect Secret block."""
    database = parser.add_mutually_exclusive_group()
    database.add_argument(
        "--db",
        metavar="URL",
        help=f"SQLAlchemy database URL, may hold a password: it reaches the flow through ${DB_URL_ENV},"
        f" never as a flow parameter (default: ${DB_URL_ENV}, else sqlite file <out>/drift-audit.db)",
    )
    database.add_argument(
        "--db-secret",
        metavar="NAME",
        help="Prefect Secret block holding the database URL (the flow parameter db_secret)",
    )


def _lease_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease",
        type=_lease,
        metavar="SECONDS",
        help="how long a drop's run stays `running` without a heartbeat (renewed every quarter of it);"
        " a killed run is marked `interrupted` by the next run after that (default 120)",
    )


def _lease(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds >= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 1")
    return seconds


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the method tasks run (`run` and `backfill`)."""
    parser.add_argument(
        "--task-runner",
        choices=RUNNER_KINDS,
        default="default",
        help="where the method tasks run: threads of this process (default) or a Dask cluster",
    )
    parser.add_argument(
        "--dask-address",
        metavar="ADDR",
        help="scheduler of a running Dask cluster, e.g. tcp://scheduler:8786 (env DRIFT_AUDIT_DASK_ADDRESS;"
        " default with --task-runner dask: a local cluster of 2 worker processes)",
    )


def _email_arguments(parser: argparse.ArgumentParser) -> None:
    """E-mail options of `run` and `backfill`; each unset option falls back to its DRIFT_AUDIT_* variable."""
    email = parser.add_argument_group("e-mail (sent when recipients are configured; see README)")
    email.add_argument(
        "--email", action=argparse.BooleanOptionalAction, default=True, help="e-mail the report (default on)"
    )
    email.add_argument(
        "--email-to", action="append", metavar="ADDR", help="recipient (repeatable; env DRIFT_AUDIT_EMAIL_TO)"
    )
    email.add_argument("--email-from", metavar="ADDR", help="sender address (env DRIFT_AUDIT_EMAIL_FROM)")
    email.add_argument("--smtp-host", metavar="HOST", help="SMTP server (env DRIFT_AUDIT_SMTP_HOST)")
    email.add_argument(
        "--smtp-port", type=_port, metavar="N", help="default 587, 465 with ssl (env DRIFT_AUDIT_SMTP_PORT)"
    )
    email.add_argument(
        "--smtp-security",
        choices=("starttls", "ssl", "none"),
        help="default starttls (env DRIFT_AUDIT_SMTP_SECURITY)",
    )
    email.add_argument(
        "--smtp-block",
        metavar="NAME",
        help="Prefect EmailServerCredentials block with server and login (env DRIFT_AUDIT_SMTP_BLOCK)",
    )
    email.add_argument(
        "--report-url",
        metavar="BASE",
        help="where <out> is published (http/https): the e-mail links <BASE>/<week>/report.html first",
    )
    email.add_argument(
        "--email-per-model",
        action="store_true",
        help="with several models, e-mail each model's report as well as the digest (default: digest only)",
    )
    email.add_argument(
        "--attach-report",
        action="store_true",
        help="attach report.html to the e-mail also when --report-url links it (default: only without)",
    )


def _alert_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `run` and `backfill` send verdicts (README, "Alerts")."""
    alerts = parser.add_argument_group("alerts (README: Alerts)")
    alerts.add_argument(
        "--notify",
        action="append",
        metavar="TARGET",
        help="Apprise URL (slack://..., msteams://..., json://host:port/path) or Prefect notification block"
        f" name (repeatable); URLs reach the flow through ${NOTIFY_ENV}, never as flow parameters",
    )
    alerts.add_argument(
        "--notify-on",
        choices=("alert", "warn", "always"),
        default="warn",
        help="which verdicts are sent: alert, warn (warn or alert; default) or always; a failure always is",
    )


def _email_parameters(args: argparse.Namespace) -> EmailParameters:
    """The flow's e-mail parameters from the options (None: the flow reads the environment).

    The server (--smtp-host/-port/-security) is not among them: see `_flow_environment`.
    """
    to = None if args.email_to is None else tuple(args.email_to)
    return EmailParameters(
        email_to=to,
        email_from=args.email_from,
        smtp_block=args.smtp_block,
        send_email=args.email,
        report_url=args.report_url,
        attach_report=args.attach_report,
    )


#: --smtp-* options -> the environment variables `flows.delivery` reads.
_SMTP_ENVIRONMENT = {
    "smtp_host": "DRIFT_AUDIT_SMTP_HOST",
    "smtp_port": "DRIFT_AUDIT_SMTP_PORT",
    "smtp_security": "DRIFT_AUDIT_SMTP_SECURITY",
}


def _flow_environment(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The options that must not be flow parameters, as the environment of the (in-process) flow.

    ``--db`` becomes ``DRIFT_AUDIT_DB_URL``: a URL may hold a password, and Prefect stores flow
    parameters with the run. ``--smtp-*`` become ``DRIFT_AUDIT_SMTP_*``: a password from the
    environment is only sent to DRIFT_AUDIT_SMTP_HOST, never to a host given as a flow parameter
    (anyone who can start a deployment run sets those); the operator's own --smtp-host is the
    environment's, so it stays allowed.
    """
    given = {
        name: str(getattr(args, option))
        for option, name in _SMTP_ENVIRONMENT.items()
        if getattr(args, option) is not None
    }
    if args.db is not None:
        given[DB_URL_ENV] = args.db
    urls = [value for value in getattr(args, "notify", None) or () if "://" in value]
    if urls:
        given[NOTIFY_ENV] = " ".join([*os.environ.get(NOTIFY_ENV, "").split(), *urls])
    return _environment(given)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in ``os.environ`` inside the block; the previous values restored after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _port(text: str) -> int:
    number = _positive(text)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return number


def _progress(quiet: bool) -> contextlib.AbstractContextManager[None]:
    """Progress bars on stderr while the flow runs (`--quiet` turns them off)."""
    from flows import progress

    return contextlib.nullcontext() if quiet else progress.reporting()


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return number


def _week(text: str) -> dt.date:
    week = parse_drop_date(text)
    if week is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD or YYYYMMDD)")
    return week


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _request(args: argparse.Namespace, scope: DropScope) -> AuditRequest:
    """The audit `run` or `backfill` asks for (of `scope`), from the options they share."""
    options = MethodOptions(
        methods=None if args.methods is None else tuple(args.methods),
        random_state=args.seed,
        trust_model_code=args.trust_model_code,
        custom_modules=tuple(args.custom_module),
    )
    if not args.registry and args.fleet is None:
        raise FleetUsageError("no registry: pass --registry DIR|URI (repeatable) or --fleet ROOT")
    several = len(args.registry) > 1
    return AuditRequest(
        registry=None if several or not args.registry else args.registry[0],
        out_dir=args.out,
        model_name=args.model_name,
        db_secret=args.db_secret,
        scope=scope,
        options=options,
        email=_email_parameters(args),
        source=SourceOptions(args.mlflow_tracking_uri, args.storage_block),
        lease_seconds=args.lease,
        fleet=FleetOptions(
            registries=tuple(args.registry) if several else None,
            fleet=args.fleet,
            email_per_model=args.email_per_model,
        ),
        alerts=AlertOptions(notify=_block_targets(args.notify), notify_on=args.notify_on),
    )


def _block_targets(notify: list[str] | None) -> tuple[str, ...] | None:
    """The ``--notify`` values that are block names (flow parameters); URLs go through the environment."""
    names = tuple(value for value in notify or () if "://" not in value)
    return names or None


def _run(args: argparse.Namespace) -> int:
    return _checked_audit(args, _request(args, DropScope(week=args.week)))


def _backfill(args: argparse.Namespace) -> int:
    scope = DropScope(from_week=args.from_week, to_week=args.to_week, redo=args.redo)
    return _checked_audit(args, _request(args, scope))


def _checked_audit(args: argparse.Namespace, request: AuditRequest) -> int:
    """Check `request` before Prefect starts (a typo answers in a second, with the registry's drops
    listed for a bad week or range), then run it with ``--db`` and ``--smtp-*`` in the environment."""
    runner = RunnerChoice(args.task_runner, args.dask_address)
    check_request(request, runner, args.db)
    with _flow_environment(args):
        if args.notify or os.environ.get(NOTIFY_ENV):
            from flows.alerts import parse_targets

            parse_targets(request.alerts.notify)  # a malformed URL answers before Prefect starts
        return _audit(request, runner, quiet=args.quiet)


def _demo(args: argparse.Namespace) -> int:
    from flows.demo import build_demo_registry

    registry = args.out / "registry"
    print(f"building the demo registry in {registry} (first run trains the weekly models)", file=sys.stderr)
    build_demo_registry(registry, progress=lambda message: print(message, file=sys.stderr))
    request = AuditRequest(registry=registry, out_dir=args.out / "reports", model_name="beijing-pm25")
    with _environment({DB_URL_ENV: default_db_url(args.out)}):
        return _audit(request, RunnerChoice(), quiet=args.quiet)


def _audit(request: AuditRequest, runner: RunnerChoice, *, quiet: bool) -> int:
    """Run the `weekly_audit` flow in this process; print the verdict and the report's path (a
    fleet: one line per model on stderr, the reports' and the digest's paths on stdout)."""
    from flows.runners import shared_api, task_runner
    from flows.weekly_audit import AuditResult, FleetResult, one_line, weekly_audit

    audit_flow = weekly_audit.with_options(task_runner=task_runner(runner.kind, runner.dask_address))
    parameters: dict[str, Any] = request.flow_parameters()
    several = len(request.registries) > 1 or request.fleet.fleet is not None
    # the progress bars follow the drops of one model; a fleet's models interleave
    with shared_api(runner.kind, runner.dask_address), _progress(quiet or several):
        state = audit_flow(**parameters, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, FleetResult):
        _print_fleet(result)
        if not result.failed:
            return 0
    elif isinstance(result, AuditResult):
        if result.verdict is not None:
            print(f"drift verdict: {result.verdict.value}", file=sys.stderr)
        if result.report_path is not None:
            print(result.report_path)
        return 0
    message = one_line(result) if isinstance(result, BaseException) else (state.message or state.name)
    print(f"drift-audit: error: {message}", file=sys.stderr)
    return 1


def _print_fleet(result: FleetResult) -> None:
    """One line per model on stderr (verdict or failure), the reports and the digest on stdout."""
    for model in result.models:
        if model.error is not None:
            print(f"{model.model_name}: failed: {model.error}", file=sys.stderr)
        else:
            verdict = "no verdict (first drop)" if model.verdict is None else model.verdict.value
            print(f"{model.model_name}: {verdict}", file=sys.stderr)
        if model.report_path is not None:
            print(model.report_path)
    if result.digest_path is not None:
        print(result.digest_path)


def _db_upgrade(args: argparse.Namespace) -> int:
    from storage.session import make_engine, redacted_url, upgrade_database

    db_url = command_database_url(args.db)
    if db_url is None:
        raise AuditError(f"no database to upgrade: pass --db URL or set {DB_URL_ENV}")
    upgrade_database(make_engine(db_url))
    print(f"database {redacted_url(db_url)} is at the newest schema revision", file=sys.stderr)
    return 0


def _prune(args: argparse.Namespace) -> int:
    from flows.retention import prune, summary

    db_url = command_database_url(args.db) or default_db_url(args.out)
    result = prune(
        db_url, args.out, args.keep_weeks, as_of=args.as_of, dry_run=args.dry_run, force=args.force
    )
    for line in summary(result, db_url):
        print(line)
    if result.not_removed:
        print(
            f"drift-audit: error: the database is pruned but {len(result.not_removed)} file(s) could not be"
            " removed (listed above); remove them by hand",
            file=sys.stderr,
        )
        return 1
    return 0


#: Columns of `drift-audit history`, in order.
_HISTORY_COLUMNS = ("week", "model", "method", "feature", "value", "std", "rank", "method_version", "verdict")


def _history(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from storage.history import HistoryFilter, load_history
    from storage.session import make_engine, redacted_url

    # the database of `run`: --db, else $DRIFT_AUDIT_DB_URL, else the SQLite file in --out
    db_url = command_database_url(args.db) or default_db_url(args.out)
    where = HistoryFilter(model=args.model, feature=args.feature, method=args.method, weeks=args.weeks)
    engine = make_engine(db_url, create=False)
    try:
        with Session(engine) as session:
            rows = load_history(session, where)
    except SQLAlchemyError as error:
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        raise AuditError(f"cannot read database {redacted_url(db_url)}: {reason}") from error
    finally:
        engine.dispose()
    records = [_history_record(row) for row in rows]
    {"table": _write_table, "csv": _write_csv, "json": _write_json}[args.format](records, sys.stdout)
    return 0


def _history_record(row: object) -> dict[str, object]:
    record = {name: getattr(row, name) for name in _HISTORY_COLUMNS}
    record["week"] = str(record["week"])
    return record


def _write_json(records: list[dict[str, object]], stream: TextIO) -> None:
    json.dump(records, stream, indent=1)
    stream.write("\n")


def _write_csv(records: list[dict[str, object]], stream: TextIO) -> None:
    writer = csv.DictWriter(stream, fieldnames=_HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)


def _write_table(records: list[dict[str, object]], stream: TextIO) -> None:
    """Aligned columns: text left, numbers right (values to 4 significant digits)."""
    numeric = {"value", "std", "rank", "method_version"}
    cells = [[_cell(record[name]) for name in _HISTORY_COLUMNS] for record in records]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(_HISTORY_COLUMNS)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if name in numeric else value.ljust(width)
            for name, value, width in zip(_HISTORY_COLUMNS, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    stream.write(line(_HISTORY_COLUMNS) + "\n")
    stream.write(line(["-" * width for width in widths]) + "\n")
    for row in cells:
        stream.write(line(row) + "\n")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
