"""`drift-audit prune`: remove what is older than N weeks, rows in one transaction, then the files.

Which rows and which files: `storage.retention` (the newest audited drop of a model, the baseline
of the oldest kept week and drops with an audit running always stay). The files of the pruned runs
are found from the rows, before they are deleted: the report files they wrote (and their week
folder, once empty), their method cache entries that no kept drop uses (the lists of
`flows.cache_layout`) and their staged sources (``<out>/.cache/sources/<key[:2]>/<key>``).

Order: the rows are deleted and committed first, the files removed after the commit. A failed
commit removes no file. A file that cannot be removed after the commit (permissions, a busy
network share) is listed with its reason and the command exits 1: the database is pruned, and the
listed files are orphans to remove by hand (nothing reads them any more: a cache entry or a staged
copy would only be reused by a re-audit of the same content; a report is a static file).

Light: no Prefect, no TensorFlow (the command line imports it at start-up).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from audit.config import read_drop_config
from audit.registry import CONFIG_FILE
from audit.types import AuditError, DriftConfig, RunStatus
from flows.cache_layout import DROP_KEYS_DIR, METHOD_CACHE_DIR, read_drop_keys
from flows.sources import STAGING_DIR
from flows.sources.staging import staged_folder
from storage.models import AuditRun, ModelDrop
from storage.retention import PrunePlan, apply_prune, plan_prune
from storage.session import make_engine, redacted_url, require_current_schema


@dataclass(frozen=True)
class PruneFiles:
    """The files of a prune: report files, method cache files (entries and the drops' key lists),
    staged source folders, and bytes."""

    reports: tuple[Path, ...]
    method_entries: tuple[Path, ...]
    sources: tuple[Path, ...]
    bytes: int

    @property
    def report_folders(self) -> tuple[Path, ...]:
        return tuple(sorted({path.parent for path in self.reports}))


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    files: PruneFiles
    dry_run: bool
    #: Files or folders that could not be removed after the commit, with the reason.
    not_removed: tuple[tuple[Path, str], ...] = ()
    seconds: float = 0.0


def required_weeks(session: Session) -> tuple[int, str]:
    """The fewest weeks a prune may keep (``history_weeks + 1`` of the drift rule), and where that
    ``history_weeks`` comes from: the newest drop's ``audit.toml`` of each model when it can be read
    (the largest), else the default."""
    history, source = DriftConfig().history_weeks, "the default"
    newest = (
        select(ModelDrop.model_name, func.max(ModelDrop.week).label("week"))
        .join(AuditRun, AuditRun.drop_id == ModelDrop.id)
        .where(AuditRun.status == RunStatus.SUCCEEDED.value)
        .group_by(ModelDrop.model_name)
        .subquery()
    )
    paths = session.scalars(
        select(ModelDrop.path).join(
            newest, (newest.c.model_name == ModelDrop.model_name) & (newest.c.week == ModelDrop.week)
        )
    )
    for path in paths:
        config = Path(path).parent / CONFIG_FILE
        try:
            weeks = read_drop_config(config).drift.history_weeks if config.is_file() else None
        except AuditError:  # an unreadable config is the audit's business, not the prune's
            weeks = None
        if weeks is not None and weeks > history:
            history, source = weeks, str(config)
    return history + 1, f"history_weeks = {history} ({source})"


def prune(
    db_url: str,
    out_dir: Path,
    keep_weeks: int,
    *,
    as_of: dt.date | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> PruneResult:
    """Remove the drops dated more than `keep_weeks` weeks before `as_of` (default today, UTC): rows
    in one transaction, then files. `dry_run` rolls the transaction back and removes nothing.

    Fewer weeks than the drift rule's ``history_weeks + 1`` is an `AuditError` unless `force`.
    """
    started = time.perf_counter()
    engine = make_engine(db_url, create=False)
    try:
        require_current_schema(engine)
        with Session(engine) as session:
            minimum, why = required_weeks(session)
        if keep_weeks < minimum and not force:
            raise AuditError(
                f"--keep-weeks {keep_weeks} keeps fewer weeks than the drift rule learns its noise bands "
                f"from ({why}): pass --keep-weeks {minimum} or more, or --force to accept cold noise bands"
            )
        plan, files = _prune_rows(
            engine, keep_weeks, as_of or dt.datetime.now(dt.UTC).date(), out_dir, dry_run
        )
    finally:
        engine.dispose()
    not_removed = () if dry_run else tuple(_remove(files))
    return PruneResult(plan, files, dry_run, not_removed, time.perf_counter() - started)


def _prune_rows(
    engine: Engine, keep_weeks: int, as_of: dt.date, out_dir: Path, dry_run: bool
) -> tuple[PrunePlan, PruneFiles]:
    """Plan and (unless `dry_run`) delete the rows, in one transaction; the files of the plan."""
    with Session(engine) as session:
        if engine.dialect.name == "sqlite":  # a writer from the start: the plan holds until the commit
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        try:
            plan = plan_prune(session, keep_weeks, as_of)
            files = _files(plan, out_dir)
            if dry_run:
                session.rollback()
            else:
                apply_prune(session, plan)
                session.commit()
        except BaseException:
            session.rollback()
            raise
    return plan, files


def _files(plan: PrunePlan, out_dir: Path) -> PruneFiles:
    reports = tuple(path for path in (Path(p) for p in plan.report_paths) if path.is_file())
    entries = _cache_entries(out_dir / METHOD_CACHE_DIR, plan.model_hashes)
    staging = out_dir / STAGING_DIR
    sources = tuple(
        folder
        for folder in (staged_folder(staging, key, "drop").parent for key in plan.source_hashes)
        if folder.is_dir()
    )
    total = sum(_size(path) for path in (*reports, *entries, *sources))
    return PruneFiles(reports, entries, sources, total)


def _cache_entries(cache: Path, model_hashes: Sequence[str]) -> tuple[Path, ...]:
    """The method cache entries of the pruned drops that no other drop's list names, and the pruned
    drops' lists themselves (`flows.cache_layout`)."""
    lists = {path.stem: path for path in (cache / DROP_KEYS_DIR).glob("*.keys")}
    pruned = [lists[model_hash] for model_hash in model_hashes if model_hash in lists]
    kept_keys: set[str] = set()
    for model_hash, path in lists.items():
        if model_hash not in model_hashes:
            kept_keys |= read_drop_keys(path)
    keys = set().union(*(read_drop_keys(path) for path in pruned)) - kept_keys
    return tuple(sorted(path for path in (cache / key for key in keys) if path.is_file())) + tuple(pruned)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


def _remove(files: PruneFiles) -> Iterable[tuple[Path, str]]:
    """Remove the files (and report folders and staged-source groups left empty); yield failures."""
    for path in (*files.reports, *files.method_entries):
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            yield path, error.strerror or str(error)
    for folder in files.sources:
        try:
            shutil.rmtree(folder)
        except OSError as error:
            yield folder, error.strerror or str(error)
    _remove_empty(files.report_folders)
    _remove_empty({folder.parent for folder in files.sources})


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):  # only when empty: another file (another report) keeps it
            folder.rmdir()


def summary(result: PruneResult, db_url: str) -> Sequence[str]:
    """The lines `drift-audit prune` prints: rows per table, files, bytes, what was kept."""
    plan, files = result.plan, result.files
    verb = "would remove" if result.dry_run else "removed"
    lines = [
        f"{'dry run: ' if result.dry_run else ''}drops dated before {plan.cutoff} ({plan.keep_weeks} weeks "
        f"before {plan.as_of}) in {redacted_url(db_url)}: {len(plan.drops)} drop(s)",
        f"{verb} rows (model_drops: marked pruned, not deleted):",
    ]
    width = max(len(name) for name in plan.rows)
    lines += [f"  {name.ljust(width)}  {count:>9}" for name, count in plan.rows.items()]
    lines.append(f"  {'total'.ljust(width)}  {plan.total_rows:>9}")
    lines.append(
        f"{verb} files: {len(files.reports)} report(s) in {len(files.report_folders)} folder(s), "
        f"{len(files.method_entries)} method cache file(s), "
        f"{len(files.sources)} staged source(s); {files.bytes} bytes"
    )
    lines += [f"kept: {kept.model_name} {kept.week} ({kept.reason})" for kept in plan.kept]
    if plan.interrupted:
        marked = "would be marked" if result.dry_run else "marked"
        lines.append(f"{plan.interrupted} running audit(s) with an expired lease {marked} interrupted")
    lines += [f"not removed: {path}: {reason}" for path, reason in result.not_removed]
    return lines
