"""Time `drift-audit prune` on a year of demo-sized weekly audits, on SQLite and PostgreSQL (issue 19).

Fills a database with `--weeks` weekly drops (default 52) of the demo's size (11 features, profiles
of 24 steps, 8 methods, the frozen set, a drift call and a delivery per drop) through the repository
functions the flow uses (`bench/sql_history.py`'s fill), then times `flows.retention.prune` keeping
`--keep-weeks` (default 9, the least the default drift rule allows): first with ``dry_run``, then
for real. Prints rows removed per table and seconds; nothing is written to the repository.

    .venv/bin/python bench/prune.py                       # both backends, ~1 min on 2 cores
    .venv/bin/python bench/prune.py --backends sqlite --weeks 260
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sql_history import FIRST_WEEK, fill  # noqa: E402

from flows.retention import prune  # noqa: E402
from storage.session import make_engine, upgrade_database  # noqa: E402
from tests.databases import fresh_database  # noqa: E402


def run_backend(backend: str, args: argparse.Namespace, folder: Path) -> None:
    with fresh_database(backend, folder) as url:
        engine = make_engine(url)
        upgrade_database(engine)
        started = time.perf_counter()
        fill(engine, argparse.Namespace(weeks=args.weeks, features=11, steps=24))
        filled = time.perf_counter() - started
        with engine.connect() as connection:
            runs = connection.execute(sa.text("SELECT COUNT(*) FROM audit_runs")).scalar_one()
        engine.dispose()
        as_of = FIRST_WEEK + dt.timedelta(weeks=args.weeks)  # the day after the last drop's week
        print(f"{backend}: {args.weeks} weekly drops ({runs} runs) filled in {filled:.1f} s")
        for dry_run in (True, False):
            result = prune(url, folder / "out", args.keep_weeks, as_of=as_of, dry_run=dry_run)
            label = "dry run" if dry_run else "prune"
            print(
                f"  {label}: {len(result.plan.drops)} drops, {result.plan.total_rows} rows in "
                f"{result.seconds:.2f} s"
            )
        print("  rows removed: " + ", ".join(f"{name} {n}" for name, n in result.plan.rows.items() if n))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated (default both)")
    parser.add_argument("--weeks", type=int, default=52, help="weekly drops (default 52)")
    parser.add_argument("--keep-weeks", type=int, default=9, help="weeks kept (default 9)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as folder:
        for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
            run_backend(backend, args, Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
