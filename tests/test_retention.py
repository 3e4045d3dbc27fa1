"""Retention (`drift-audit prune`): which rows go, which drops stay and why, one transaction, files
after the commit; on SQLite and PostgreSQL (storage) and end to end through the command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.compare import compare_audits
from audit.types import Importance, MethodOutcome, MethodStatus, ModelFacts, RunStatus, Task
from storage import delivery_log, reads, writes
from storage.models import AuditRun, ModelDrop
from storage.retention import plan_prune
from storage.session import make_engine, upgrade_database

NAMES = ("a", "b", "c")
AS_OF = dt.date(2026, 3, 30)
M_WEEKS = [dt.date(2026, 2, 16) + dt.timedelta(weeks=i) for i in range(6)]  # 02-16 ... 03-23
OTHER_WEEKS = [dt.date(2025, 12, 29), dt.date(2026, 1, 5), dt.date(2026, 1, 12)]


def _outcomes(scale: float) -> tuple[MethodOutcome, ...]:
    perm = Importance("permutation", NAMES, np.array([0.9, 0.1, 0.3]) * scale, std=np.full(3, 0.01))
    saliency = Importance("saliency", NAMES, np.array([0.2, 0.5, 0.1]) * scale, profile=np.ones((4, 3)))
    return tuple(
        MethodOutcome(i.method, MethodStatus.OK, importance=i, seconds=0.1) for i in (perm, saliency)
    )


def _audit(
    session: Session, model: str, week: dt.date, model_hash: str, reports: Path = Path("/reports")
) -> int:
    """A stored audit of `week`, compared with the model's latest earlier one (as compare_task does)."""
    run_id = writes.start_run(session, model_name=model, week=week, model_path=f"/r/{week}/model.keras")
    facts = ModelFacts(Path(f"/r/{week}/model.keras"), model_hash, (None, 3), (None, 1), 7, Task.REGRESSION)
    writes.record_success(
        session,
        run_id,
        facts=facts,
        outcomes=_outcomes(1.0 + week.toordinal() % 7 / 10),
        eval_source=None,
        eval_hash=None,
        n_eval_samples=64,
        feature_names=NAMES,
    )
    current, previous = reads.load_audit(session, model, week), reads.previous_audit(session, model, week)
    if current is not None and previous is not None:
        writes.save_comparisons(session, run_id, previous.run_id, compare_audits(current, previous))
    report = reports / str(week) / "report.html"
    delivery_log.set_report_path(session, run_id, report)
    delivery_log.record_delivery(session, run_id, report, status=delivery_log.DeliveryStatus.WRITTEN)
    return run_id


def _counts(engine: sa.Engine, tables: list[str]) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: connection.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}


def _orphans(engine: sa.Engine, tables: list[str]) -> dict[str, int]:
    """Rows naming a run (or a previous run) that no longer exists: none may be left."""
    found = {}
    with engine.connect() as connection:
        for table in tables:
            columns = {c["name"] for c in sa.inspect(connection).get_columns(table)}
            for column in sorted({"run_id", "previous_run_id"} & columns):
                found[f"{table}.{column}"] = connection.execute(
                    sa.text(f"SELECT COUNT(*) FROM {table} WHERE {column} NOT IN (SELECT id FROM audit_runs)")
                ).scalar_one()
    return {name: count for name, count in found.items() if count}


@pytest.fixture
def history(db_url: str) -> sa.Engine:
    """Model m: six weekly drops; model other: three old drops and an old one being audited now."""
    engine = make_engine(db_url)
    upgrade_database(engine)
    with Session(engine) as session, session.begin():
        for index, week in enumerate(M_WEEKS):
            # 02-23 has the model file of 03-16 (a retrain that changed nothing): its cache entries stay
            _audit(session, "m", week, f"{'f' if index in (1, 4) else index}" * 64)
        failed = writes.start_run(session, model_name="m", week=M_WEEKS[2], model_path="/r/x")
        writes.record_failure(session, failed, "boom")
        killed = writes.start_run(
            session, model_name="m", week=M_WEEKS[1], model_path="/r/x", lease_seconds=5
        )
        session.get_one(AuditRun, killed).heartbeat_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        session.get_one(AuditRun, killed).source_hash = "ab" * 32
        for index, week in enumerate(OTHER_WEEKS):
            _audit(session, "other", week, f"{index + 7}" * 64)
        writes.start_run(session, model_name="other", week=dt.date(2026, 1, 19), model_path="/r/y")
        # two models writing into one --out: the kept week's report is the pruned week's file too
        session.get_one(AuditRun, reads.load_audit(session, "other", OTHER_WEEKS[0]).run_id).report_path = (  # type: ignore[union-attr]
            f"/reports/{M_WEEKS[-1]}/report.html"
        )
    return engine


TABLES = [
    "model_drops", "audit_runs", "method_results", "importances", "profiles", "comparisons",
    "features", "report_deliveries",
]  # fmt: skip


def test_prune_removes_old_runs_and_keeps_newest_baseline_and_running(history: sa.Engine) -> None:
    engine = history
    before = _counts(engine, TABLES)
    with Session(engine) as session, session.begin():  # a dry run: plan, then roll back
        dry = plan_prune(session, 2, AS_OF)
        session.rollback()
    assert _counts(engine, TABLES) == before
    with Session(engine) as session:
        assert session.scalar(sa.select(AuditRun.status).where(AuditRun.lease_seconds == 5)) == "running"

    with Session(engine) as session, session.begin():
        plan = plan_prune(session, 2, AS_OF)
        from storage.retention import apply_prune

        apply_prune(session, plan)
    assert plan.cutoff == dt.date(2026, 3, 16)
    assert plan.interrupted == 1  # the killed run of 02-23, its lease long expired
    assert plan.drops == (("m", M_WEEKS[0]), ("m", M_WEEKS[1]), ("m", M_WEEKS[2]), ("other", OTHER_WEEKS[0]))
    assert {(k.model_name, k.week, k.reason) for k in plan.kept} == {
        ("m", M_WEEKS[3], "baseline"),  # 03-16 (kept) was compared with 03-09
        ("other", OTHER_WEEKS[2], "newest"),
        ("other", OTHER_WEEKS[1], "baseline"),  # the newest was compared with it
        ("other", dt.date(2026, 1, 19), "running"),
    }
    after = _counts(engine, TABLES)
    removed = {t: before[t] - after[t] for t in TABLES if t != "model_drops"}
    assert removed == {t: plan.rows[t] for t in removed}
    assert dry.rows == plan.rows and dry.drops == plan.drops
    assert after["model_drops"] == before["model_drops"]  # kept as tombstones
    assert plan.rows["audit_runs"] == 3 + 2 + 1  # m: 3 audits, a failed and a killed run; other: 1
    # comparisons: the pruned runs' own and the baselines' comparisons with the pruned runs
    assert plan.rows["comparisons"] == 2 * (3 - 1) + 2 + 2
    assert _orphans(engine, [*TABLES[2:], "feature_drifts", "drop_verdicts", "input_drifts"]) == {}

    with Session(engine) as session:
        assert reads.audited_weeks(session, "m") == set(M_WEEKS[3:])
        assert reads.pruned_weeks(session, "m") == set(M_WEEKS[:3])
        assert reads.audited_weeks(session, "other") == set(OTHER_WEEKS[1:])
        baseline = reads.load_audit(session, "m", M_WEEKS[3])
        kept = reads.load_audit(session, "m", M_WEEKS[4])
        assert baseline is not None and kept is not None
        assert reads.previous_audit(session, "m", M_WEEKS[4]).run_id == baseline.run_id  # type: ignore[union-attr]
        with engine.connect() as connection:
            compared = connection.execute(sa.text("SELECT DISTINCT run_id, previous_run_id FROM comparisons"))
            pairs = {(row[0], row[1]) for row in compared}
        assert (kept.run_id, baseline.run_id) in pairs
        assert not any(run_id == baseline.run_id for run_id, _ in pairs)  # its comparison went
        pruned_at = session.scalars(sa.select(ModelDrop.pruned_at).where(ModelDrop.week == M_WEEKS[0])).one()
        assert pruned_at is not None

    # files: each pruned drop's report unless a kept run wrote the same file; model hashes no kept
    # drop has; the killed run's staged source
    assert plan.report_paths == tuple(f"/reports/{w}/report.html" for w in [OTHER_WEEKS[0], *M_WEEKS[:3]])
    assert plan.model_hashes == ("0" * 64, "2" * 64, "7" * 64)
    assert plan.source_hashes == ("ab" * 32,)

    with Session(engine) as session, session.begin():  # a second prune finds nothing more
        again = plan_prune(session, 2, AS_OF)
    assert again.drops == () and again.total_rows == 0


def test_a_reaudit_of_a_pruned_drop_restores_it(history: sa.Engine) -> None:
    from storage.retention import apply_prune

    with Session(history) as session, session.begin():
        apply_prune(session, plan_prune(session, 2, AS_OF))
    with Session(history) as session, session.begin():
        _audit(session, "m", M_WEEKS[0], "9" * 64)
    with Session(history) as session:
        assert M_WEEKS[0] in reads.audited_weeks(session, "m")
        assert M_WEEKS[0] not in reads.pruned_weeks(session, "m")
        statuses = session.scalars(
            sa.select(AuditRun.status).join(ModelDrop).where(ModelDrop.week == M_WEEKS[0])
        ).all()
        assert statuses == [RunStatus.SUCCEEDED]


def test_files_that_cannot_be_removed_after_the_commit_are_listed_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = make_engine(db_url)
    upgrade_database(engine)
    with Session(engine) as session, session.begin():
        for index, week in enumerate(M_WEEKS):
            _audit(session, "m", week, str(index) * 64, reports=tmp_path / "out")
    engine.dispose()
    for week in M_WEEKS:
        (tmp_path / "out" / str(week)).mkdir(parents=True)
        (tmp_path / "out" / str(week) / "report.html").write_text("<html></html>")
    stuck = tmp_path / "out" / str(M_WEEKS[0]) / "report.html"
    unlink = Path.unlink

    def refuse(
        path: Path, missing_ok: bool = False
    ) -> None:  # a busy share or a permission (root ignores modes)
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    argv = [
        "prune",
        "--db",
        db_url,
        "--out",
        str(tmp_path / "out"),
        "--as-of",
        str(AS_OF),
        "--keep-weeks",
        "2",
    ]
    assert main([*argv, "--force"]) == 1
    captured = capsys.readouterr()
    assert f"not removed: {stuck}: Permission denied" in captured.out
    assert "the database is pruned but 1 file(s) could not be removed" in captured.err
    assert stuck.is_file() and not (tmp_path / "out" / str(M_WEEKS[1])).exists()  # the others went
    with Session(make_engine(db_url)) as session:
        assert reads.pruned_weeks(session, "m") == set(M_WEEKS[:3])  # committed before the files


# --- end to end: the command line, files after the commit ---------------------------------------

CLI_WEEKS = [dt.date(2026, 3, 2), dt.date(2026, 3, 9), dt.date(2026, 3, 16)]


@pytest.mark.slow
def test_prune_command_removes_rows_then_files_and_the_next_run_leaves_the_drop_pruned(
    tmp_path: Path, prefect_harness: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cache_layout import drop_keys_file, read_drop_keys
    from flows.cli import main
    from tests.helpers import small_registry, table_counts

    out = tmp_path / "out"
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    run = ["run", "--db", db_url, "--out", str(out), "--methods", "weight_sum", "--quiet"]
    for n in range(1, len(CLI_WEEKS) + 1):  # one week at a time: each run writes its week's report
        registry = small_registry(tmp_path, CLI_WEEKS[:n])
        assert main([*run, "--registry", str(registry)]) == 0
    cache = out / ".cache" / "methods"
    with Session(make_engine(db_url)) as session:
        rows = session.execute(sa.select(ModelDrop.week, ModelDrop.content_hash)).all()
        hashes = {week: model_hash for week, model_hash in rows}
        old_run = reads.load_audit(session, "registry", CLI_WEEKS[0])
    assert old_run is not None
    lists = {week: drop_keys_file(cache, model_hash) for week, model_hash in hashes.items()}
    entries = {week: sorted(cache / key for key in read_drop_keys(path)) for week, path in lists.items()}
    assert all(entries.values()), f"every drop lists its method cache entries: {entries}"
    files = {path for path in cache.iterdir() if path.is_file()}
    assert files == {path for paths in entries.values() for path in paths}  # each entry listed, nothing else
    source = out / ".cache" / "sources" / "ab" / ("ab" * 32)
    (source / "drop").mkdir(parents=True)
    (source / "drop" / "model.keras").write_bytes(b"x" * 1000)
    engine = make_engine(db_url)
    with engine.begin() as connection:  # as if the oldest drop had been staged from an object store
        connection.execute(
            sa.text("UPDATE audit_runs SET source_hash = :key WHERE id = :id"),
            {"key": "ab" * 32, "id": old_run.run_id},
        )
    prune = ["prune", "--db", db_url, "--out", str(out), "--as-of", "2026-03-17", "--keep-weeks", "1"]
    capsys.readouterr()

    assert main(prune) == 1  # fewer weeks than the drift rule's history needs
    assert "--keep-weeks 9 or more, or --force" in capsys.readouterr().err

    before = table_counts(engine)
    assert main([*prune, "--force", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "dry run: drops dated before 2026-03-10" in dry and "would remove" in dry
    assert table_counts(engine) == before and source.is_dir() and (out / "2026-03-02").is_dir()

    assert main([*prune, "--force"]) == 0
    printed = capsys.readouterr().out
    assert "kept: registry 2026-03-09 (baseline)" in printed
    after = table_counts(engine)
    assert after["audit_runs"] == before["audit_runs"] - 1 and after["importances"] < before["importances"]
    assert not (out / "2026-03-02").exists()  # the report folder, now empty, went with its report
    assert (out / "2026-03-09" / "report.html").is_file() and (out / "2026-03-16" / "report.html").is_file()
    assert not any(path.exists() for path in entries[CLI_WEEKS[0]]) and not lists[CLI_WEEKS[0]].exists()
    assert all(path.exists() for week in CLI_WEEKS[1:] for path in entries[week])
    assert not source.exists() and not source.parent.exists()
    assert "dry run" not in printed and f"{len(entries[CLI_WEEKS[0]]) + 1} method cache file(s)" in printed

    # the next run finds the pruned drop in the registry and leaves it pruned
    assert main([*run, "--registry", str(registry)]) == 0
    with Session(engine) as session:
        assert reads.audited_weeks(session, "registry") == set(CLI_WEEKS[1:])
        assert reads.pruned_weeks(session, "registry") == {CLI_WEEKS[0]}
    engine.dispose()
