"""The ``drift-audit`` command line: ``run``, ``demo``, ``db upgrade`` and ``history``.

Exit status: 0 when the audit succeeded (whether or not anything drifted), 1 with a one-line error
on stderr when it failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from audit.registry import parse_drop_date
from audit.types import AuditError

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
    run.add_argument("--registry", required=True, type=Path, help="folder holding one folder per drop")
    run.add_argument("--db", help="SQLAlchemy database URL (default: sqlite file <out>/drift-audit.db)")
    run.add_argument("--out", type=Path, default=Path("drift-audit-output"), help="report folder")
    run.add_argument("--week", type=_week, help="re-audit only this drop (YYYY-MM-DD or YYYYMMDD)")
    run.add_argument("--model-name", help="name stored with the figures (default: registry folder name)")
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
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="build the Beijing PM2.5 demo registry and audit it")
    demo.add_argument("--out", type=Path, default=DEMO_OUT, help=f"demo folder (default {DEMO_OUT})")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate the schema to the newest revision")
    upgrade.add_argument("--db", required=True, help="SQLAlchemy database URL")
    upgrade.set_defaults(handler=_db_upgrade)

    history = commands.add_parser(
        "history", help="print the importance history of the latest audited weeks, with drift calls"
    )
    history.add_argument("--db", help="SQLAlchemy database URL (default: sqlite file <out>/drift-audit.db)")
    history.add_argument(
        "--out",
        type=Path,
        default=Path("drift-audit-output"),
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
    return parser


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


def _run(args: argparse.Namespace) -> int:
    return _audit(
        registry=args.registry,
        db_url=args.db,
        out_dir=args.out,
        week=args.week,
        model_name=args.model_name,
        methods=args.methods,
        random_state=args.seed,
        trust_model_code=args.trust_model_code,
        custom_modules=args.custom_module,
    )


def _demo(args: argparse.Namespace) -> int:
    from flows.demo import build_demo_registry

    registry = args.out / "registry"
    print(f"building the demo registry in {registry} (first run trains the weekly models)", file=sys.stderr)
    build_demo_registry(registry, progress=lambda message: print(message, file=sys.stderr))
    db_url = f"sqlite:///{(args.out / 'drift-audit.db').resolve()}"
    return _audit(registry=registry, db_url=db_url, out_dir=args.out / "reports", model_name="beijing-pm25")


def _audit(
    *,
    registry: Path,
    db_url: str | None,
    out_dir: Path,
    week: dt.date | None = None,
    model_name: str | None = None,
    methods: list[str] | None = None,
    random_state: int = 0,
    trust_model_code: bool = False,
    custom_modules: list[str] | None = None,
) -> int:
    from flows.weekly_audit import AuditResult, one_line, weekly_audit

    state = weekly_audit(
        registry=str(registry),
        db_url=db_url,
        out_dir=str(out_dir),
        week=week,
        model_name=model_name,
        methods=methods,
        random_state=random_state,
        trust_model_code=trust_model_code,
        custom_modules=custom_modules,
        return_state=True,
    )
    result = state.result(raise_on_failure=False)
    if isinstance(result, AuditResult):
        if result.verdict is not None:
            print(f"drift verdict: {result.verdict.value}", file=sys.stderr)
        if result.report_path is not None:
            print(result.report_path)
        return 0
    message = one_line(result) if isinstance(result, BaseException) else (state.message or state.name)
    print(f"drift-audit: error: {message}", file=sys.stderr)
    return 1


def _db_upgrade(args: argparse.Namespace) -> int:
    from storage.session import make_engine, redacted_url, upgrade_database

    upgrade_database(make_engine(args.db))
    print(f"database {redacted_url(args.db)} is at the newest schema revision", file=sys.stderr)
    return 0


#: Columns of `drift-audit history`, in order.
_HISTORY_COLUMNS = ("week", "model", "method", "feature", "value", "std", "rank", "verdict")


def _history(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from storage.history import HistoryFilter, load_history
    from storage.session import make_engine, redacted_url

    # the default of `run` (flows.weekly_audit.default_db_url), without importing the flow
    db_url = args.db or f"sqlite:///{args.out.resolve() / 'drift-audit.db'}"
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
    numeric = {"value", "std", "rank"}
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
