"""Time the documented SQL queries on 5 years of weekly audits, on SQLite and PostgreSQL (issue 6).

Fills a database with `--weeks` weekly drops (default 260 = 5 years) x `--features` features (100)
x 8 methods, time x feature profiles of `--steps` steps (30) for 2 of the methods, the previous
model's figures on each drop's data (frozen set, 5 data methods) and one report delivery per drop.
The fill goes through the repository functions the flow uses (`start_run`, `record_success`,
`save_assessment` with the real comparison and drift call of audit/, `record_delivery`), one
transaction per step as in the flow, and is timed. Then every ```sql block of docs/sql.md and
README.md, and the query of `drift-audit history` (defaults, and one feature), are timed: the
median of `--repeats` runs after one warm-up, with the row count and the query plan.

    .venv/bin/python bench/sql_history.py                 # both backends; ~10 min on 2 cores
    .venv/bin/python bench/sql_history.py --backends sqlite --weeks 52

PostgreSQL: `--pg-url` (default DRIFT_AUDIT_TEST_PG_URL or the test server), in a schema of its
own (`bench_sql_history`, dropped and recreated). Results: bench/results/sql_history.json and
bench/results/sql_history.md; the fill's timings also in bench/results/sql_history-fill-<backend>.json
as soon as it is done. `--keep --sqlite-file F` keeps both databases; `--reuse` then times the
queries again without refilling (the fill timings are read back from that file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit.compare import compare_audits  # noqa: E402
from audit.drift import assess_drift  # noqa: E402
from audit.types import (  # noqa: E402
    AuditSummary,
    DriftConfig,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelFacts,
    ModelImportances,
    Task,
)
from storage import delivery_log, writes  # noqa: E402
from storage.history import HistoryFilter, history_query  # noqa: E402
from storage.session import make_engine, upgrade_database  # noqa: E402

DOCS = [ROOT / "docs" / "sql.md", ROOT / "README.md"]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "bench_sql_history"
MODEL = "beijing-pm25"
FIRST_WEEK = dt.date(2021, 1, 4)
#: The 8 methods; (signed, has a profile, a data method scored on the frozen set too).
METHODS = {
    "weight_sum": (False, False, False),
    "garson": (False, False, False),
    "olden": (True, False, False),
    "permutation": (False, False, True),
    "perturbation": (False, False, True),
    "integrated_gradients": (False, True, True),
    "saliency": (True, True, True),
    "gradient_x_input": (False, False, True),
}


def feature_names(n_features: int) -> tuple[str, ...]:
    named = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws")
    return tuple(named[i] if i < len(named) else f"f{i:03d}" for i in range(n_features))


class Weeks:
    """Synthetic weekly figures: a slow random walk per feature and method, retraining noise, and a
    planted change (one feature x 4) every 13 weeks."""

    def __init__(self, n_features: int, n_steps: int, seed: int = 0) -> None:
        self.names = feature_names(n_features)
        self.n_steps = n_steps
        self.rng = np.random.default_rng(seed)
        self.level = {method: self.rng.lognormal(0.0, 1.0, n_features) for method in METHODS}
        self.lags = self.rng.uniform(0.5, 3.0, n_features)

    def importances(self, index: int, *, data_methods_only: bool = False) -> tuple[Importance, ...]:
        result = []
        for method, (signed, has_profile, data_method) in METHODS.items():
            if data_methods_only and not data_method:
                continue
            self.level[method] *= np.exp(self.rng.normal(0.0, 0.02, len(self.names)))
            values = self.level[method] * np.exp(self.rng.normal(0.0, 0.1, len(self.names)))
            if index % 13 == 12:
                values[index % len(self.names)] *= 4.0
            if signed:
                values = values * np.where(np.arange(len(self.names)) % 3 == 0, -1.0, 1.0)
            profile = None
            if has_profile:
                steps = np.arange(self.n_steps)[:, None]
                profile = np.abs(values)[None, :] * np.exp(-(self.n_steps - 1 - steps) / self.lags[None, :])
            std = None if method in ("weight_sum", "garson", "olden") else np.abs(values) * 0.05
            result.append(
                Importance(
                    method,
                    self.names,
                    values,
                    std=std,
                    profile=profile,
                    signed=signed,
                    parameters={"seed": 0},
                )
            )
        return tuple(result)


def _facts(week: dt.date, n_features: int) -> ModelFacts:
    return ModelFacts(
        Path(f"/registry/{week}/model.keras"),
        "0" * 64,
        (None, 24, n_features),
        (None, 1),
        12345,
        Task.REGRESSION,
    )


def fill(engine: sa.Engine, args: argparse.Namespace) -> dict[str, float]:
    """The fill, through the repository functions; seconds per step, summed over the drops."""
    weeks = Weeks(args.features, args.steps)
    seconds = {"start_run": 0.0, "record_success": 0.0, "compare_and_drift_call": 0.0, "save_assessment": 0.0}
    seconds["record_delivery"] = 0.0
    history: list[AuditSummary] = []
    config = DriftConfig()
    for index in range(args.weeks):
        week = FIRST_WEEK + dt.timedelta(weeks=index)
        facts = _facts(week, args.features)
        outcomes = tuple(
            MethodOutcome(i.method, MethodStatus.OK, importance=i, seconds=1.0)
            for i in weeks.importances(index)
        )
        frozen = None
        if history:
            frozen = ModelImportances(
                history[-1].week.isoformat(), weeks.importances(index, data_methods_only=True)
            )
        with _timed(seconds, "start_run"), Session(engine) as session, session.begin():
            run_id = writes.start_run(session, model_name=MODEL, week=week, model_path=facts.path)
        with _timed(seconds, "record_success"), Session(engine) as session, session.begin():
            writes.record_success(
                session,
                run_id,
                facts=facts,
                outcomes=outcomes,
                eval_source="eval.npz",
                eval_hash="1" * 64,
                n_eval_samples=2000,
                frozen=frozen,
                feature_names=weeks.names,
            )
        current = AuditSummary(MODEL, week, run_id, facts, 2000, "eval.npz", outcomes, frozen=frozen)
        if history:
            previous = history[-1]
            with _timed(seconds, "compare_and_drift_call"):
                comparisons = compare_audits(current, previous)
                assessment = assess_drift(current, previous, history[-1 - config.history_weeks : -1], config)
            with _timed(seconds, "save_assessment"), Session(engine) as session, session.begin():
                writes.save_assessment(session, run_id, previous.run_id, comparisons, assessment)
        with _timed(seconds, "record_delivery"), Session(engine) as session, session.begin():
            delivery_log.record_delivery(session, run_id, f"/out/{week}/report.html", status="written")
        history = [*history[-config.history_weeks :], current]
        if (index + 1) % 26 == 0:
            print(f"  {index + 1}/{args.weeks} drops", file=sys.stderr, flush=True)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    return seconds


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[key] += time.perf_counter() - start


def documented_queries() -> list[tuple[str, str]]:
    """(id, SQL) of every ```sql block, as tests/test_sql_docs.py finds them."""
    found = []
    for doc in DOCS:
        for index, block in enumerate(re.findall(r"```sql\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)):
            found.append((f"{doc.name}-{index}", block.strip().rstrip(";")))
    return found


def time_query(engine: sa.Engine, run: Callable[[sa.Connection], int], repeats: int) -> tuple[float, int]:
    """Median seconds over `repeats` runs after a warm-up, and the row count."""
    times = []
    with engine.connect() as connection:
        start = time.perf_counter()
        n_rows = run(connection)
        if time.perf_counter() - start > 20:  # a slow query: one timed run is enough
            repeats = 1
        for _ in range(repeats):
            start = time.perf_counter()
            run(connection)
            times.append(time.perf_counter() - start)
    return statistics.median(times), n_rows


def plan(engine: sa.Engine, sql: str, params: dict[str, object] | None = None) -> str:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        rows = connection.execute(sa.text(prefix + sql), params or {}).all()
    return "\n".join(str(row[-1]) for row in rows)


def measure(engine: sa.Engine, repeats: int) -> list[dict[str, object]]:
    results = []
    for query_id, sql in documented_queries():
        statement = sa.text(sql)
        seconds, n_rows = time_query(engine, lambda c, s=statement: len(c.execute(s).all()), repeats)
        results.append(
            {"id": query_id, "sql": sql, "seconds": seconds, "rows": n_rows, "plan": plan(engine, sql)}
        )
    for query_id, where in (
        ("history (defaults: 12 weeks)", HistoryFilter()),
        ("history --feature DEWP --weeks 260", HistoryFilter(feature="DEWP", weeks=260)),
        ("history --feature DEWP --method permutation", HistoryFilter(feature="DEWP", method="permutation")),
    ):
        query = history_query(where)
        seconds, n_rows = time_query(engine, lambda c, q=query: len(c.execute(q).all()), repeats)
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        results.append(
            {
                "id": query_id,
                "sql": str(compiled),
                "seconds": seconds,
                "rows": n_rows,
                "plan": plan(engine, str(compiled)),
            }
        )
    return results


def counts(engine: sa.Engine) -> dict[str, int]:
    tables = (
        "model_drops",
        "audit_runs",
        "importances",
        "profiles",
        "model_importances",
        "feature_drifts",
        "features",
    )
    with engine.connect() as connection:
        return {
            name: connection.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in tables
        }


@contextmanager
def database(backend: str, args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, str]]:
    """(url, where) of an empty database of `backend` (with `--reuse`, the kept one)."""
    if backend == "sqlite":
        path = args.sqlite_file or folder / "sql_history.db"
        if not args.reuse:
            path.unlink(missing_ok=True)
        yield f"sqlite:///{path}", "a file on local disk"
        return
    admin = sa.create_engine(args.pg_url)
    with admin.begin() as connection:
        if not args.reuse:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            connection.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
        version = connection.execute(sa.text("SHOW server_version")).scalar_one()
    separator = "&" if "?" in args.pg_url else "?"
    try:
        yield (
            f"{args.pg_url}{separator}options=-csearch_path%3D{SCHEMA}",
            f"PostgreSQL {version}, schema {SCHEMA}",
        )
    finally:
        if not args.keep:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{SCHEMA}" CASCADE'))
        admin.dispose()


def run_backend(backend: str, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    with database(backend, args, folder) as (url, where):
        engine = make_engine(url)
        upgrade_database(engine)
        fill_file = RESULTS / f"sql_history-fill-{backend}.json"
        if args.reuse:
            record = json.loads(fill_file.read_text())
            fill_seconds, steps = record["fill_seconds"], record["fill_steps_seconds"]
        else:
            print(f"{backend}: filling {args.weeks} drops ({where})", file=sys.stderr, flush=True)
            start = time.perf_counter()
            steps = fill(engine, args)
            fill_seconds = time.perf_counter() - start
            fill_file.parent.mkdir(parents=True, exist_ok=True)
            fill_file.write_text(
                json.dumps({"fill_seconds": fill_seconds, "fill_steps_seconds": steps}, indent=1)
            )
        print(f"{backend}: filled in {fill_seconds:.0f} s; timing the queries", file=sys.stderr, flush=True)
        queries = measure(engine, args.repeats)
        result = {
            "backend": backend,
            "where": where,
            "fill_seconds": fill_seconds,
            "fill_steps_seconds": steps,
            "rows": counts(engine),
            "queries": queries,
        }
        engine.dispose()
        return result


def markdown(results: list[dict[str, object]], args: argparse.Namespace, machine: str) -> str:
    lines = [
        f"{args.weeks} weekly drops x {args.features} features x {len(METHODS)} methods, profiles of "
        f"{args.steps} steps for 2 methods; {machine}; median of {args.repeats} runs after a warm-up.",
        "",
    ]
    header = "| | " + " | ".join(str(r["backend"]) for r in results) + " |"
    lines += [header, "| --- |" + " --- |" * len(results)]
    lines.append(
        "| fill, through the repository functions | "
        + " | ".join(f"{r['fill_seconds']:.0f} s" for r in results)
        + " |"
    )
    for step in results[0]["fill_steps_seconds"]:  # type: ignore[union-attr]
        cells = [f"{r['fill_steps_seconds'][step]:.1f} s" for r in results]  # type: ignore[index]
        lines.append(f"| &nbsp;&nbsp;of which `{step}` | " + " | ".join(cells) + " |")
    for name in results[0]["rows"]:  # type: ignore[union-attr]
        lines.append(f"| rows in `{name}` | " + " | ".join(f"{r['rows'][name]:,}" for r in results) + " |")  # type: ignore[index]
    for index, query in enumerate(results[0]["queries"]):  # type: ignore[arg-type]
        first_line = " ".join(str(query["sql"]).split())[:70]
        cells = [
            f"{r['queries'][index]['seconds'] * 1000:.1f} ms ({r['queries'][index]['rows']:,} rows)"  # type: ignore[index]
            for r in results
        ]
        lines.append(f"| `{query['id']}`: `{first_line}...` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    cpus = os.cpu_count()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else ""
    return f"{cpus} CPUs {model}, Python {platform.python_version()}, SQLAlchemy {sa.__version__}".replace(
        "  ", " "
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated (default both)")
    parser.add_argument("--weeks", type=int, default=260, help="weekly drops (default 260: 5 years)")
    parser.add_argument("--features", type=int, default=100, help="features per drop (default 100)")
    parser.add_argument("--steps", type=int, default=30, help="profile steps (default 30)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per query (default 5)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "DRIFT_AUDIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL server (default: DRIFT_AUDIT_TEST_PG_URL or the test server)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema afterwards")
    parser.add_argument("--sqlite-file", type=Path, help="SQLite database file (default: a temporary one)")
    parser.add_argument(
        "--reuse", action="store_true", help="time the queries on the kept databases, no fill"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "sql_history.json", help="JSON results")
    args = parser.parse_args(argv)
    machine = machine_description()
    results = []
    with tempfile.TemporaryDirectory(prefix="sql-history-") as folder:
        for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
            results.append(run_backend(backend, args, Path(folder)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": machine, "args": vars(args) | {"out": str(args.out)}, "results": results},
            indent=1,
            default=str,
        )
    )
    table = markdown(results, args, machine)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
