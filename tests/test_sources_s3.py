"""Drops in S3 (``--registry s3://bucket/prefix``) against a real S3 server on 127.0.0.1 (moto's
server mode with IAM authentication on; tests/source_servers.py), read by s3fs: the same figures as the
same drops in a folder, nothing downloaded twice, and the bad inputs of docs/reliability.md."""

from __future__ import annotations

import datetime as dt
import os
import stat
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from flows.cli import main
from flows.sources import STAGING_DIR, source_for
from flows.weekly_audit import AuditResult, weekly_audit
from storage.session import make_engine
from tests.helpers import mlp_ignoring, small_registry, table_counts
from tests.source_checks import assert_not_leaked, nothing_stored, upload_registry
from tests.source_servers import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

WEEKS = [dt.date(2014, 10, 27), dt.date(2014, 11, 3), dt.date(2014, 11, 10)]
LATER = dt.date(2014, 11, 17)
METHODS = ["weight_sum", "permutation", "integrated_gradients"]
FIGURES = "SELECT week, method, feature, value FROM importance_history ORDER BY week, method, feature"
FROZEN = (
    "SELECT d.week, m.method, m.feature, m.value FROM model_importances m"
    " JOIN audit_runs r ON r.id = m.run_id JOIN model_drops d ON d.id = r.drop_id"
    " WHERE r.status = 'succeeded' ORDER BY 1, 2, 3"
)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with its credentials in the standard AWS environment variables."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server


def _bucket() -> str:
    return f"models-{uuid.uuid4().hex[:8]}"


def _rows(db_url: str, query: str) -> tuple[list[tuple[object, ...]], np.ndarray]:
    engine = make_engine(db_url)
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(sa.text(query))]
    engine.dispose()
    return [tuple(str(v) for v in row[:-1]) for row in rows], np.array([row[-1] for row in rows], float)


def _assert_same_figures(folder_db: str, s3_db: str) -> None:
    for query in (FIGURES, FROZEN):
        keys, values = _rows(folder_db, query)
        s3_keys, s3_values = _rows(s3_db, query)
        assert s3_keys == keys and len(keys) > 0
        np.testing.assert_allclose(s3_values, values, rtol=1e-6)


def test_an_s3_registry_gives_the_folder_figures_and_is_downloaded_once(s3: S3Server, tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS)
    (registry / WEEKS[0].isoformat() / "notes.txt").write_text("not part of the contract")
    (registry / "latest").mkdir()
    (registry / "latest" / "model.keras").write_bytes(b"not a drop: the name is not a date")
    bucket = _bucket()
    upload_registry(s3, registry, bucket, "team/pm25")
    uri = f"s3://{bucket}/team/pm25"
    folder_db, s3_db = f"sqlite:///{tmp_path / 'folder.db'}", f"sqlite:///{tmp_path / 's3.db'}"
    out = tmp_path / "s3-out"

    local = weekly_audit(
        registry=str(registry), db_url=folder_db, out_dir=str(tmp_path / "f"), methods=METHODS
    )
    remote = weekly_audit(registry=uri, db_url=s3_db, out_dir=str(out), methods=METHODS)

    assert isinstance(local, AuditResult) and isinstance(remote, AuditResult)
    assert remote.audited_weeks == tuple(WEEKS)
    _assert_same_figures(folder_db, s3_db)
    fetched = s3.object_gets(bucket)
    # each drop's model and eval sample, once (the frozen set reuses the staged copy); never notes.txt
    assert sorted(line.split(" ", 1)[1] for line in fetched) == sorted(
        f"/{bucket}/team/pm25/{week.isoformat()}/{name}"
        for week in WEEKS
        for name in ("eval.npz", "model.keras")
    )
    staged = sorted((out / STAGING_DIR).rglob("model.keras"))
    assert len(staged) == 3 and all(
        not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP) for path in staged
    )
    with make_engine(s3_db).connect() as connection:
        runs = connection.execute(
            sa.text("SELECT source_uri, source_hash, source_etags FROM audit_runs ORDER BY id")
        ).all()
        names = connection.execute(sa.text("SELECT DISTINCT model_name FROM model_drops")).scalars().all()
    assert names == ["pm25"]  # the prefix's last segment
    assert [run.source_uri for run in runs] == [f"{uri}/{week.isoformat()}" for week in WEEKS]
    head = _head(s3, bucket, f"team/pm25/{WEEKS[-1].isoformat()}/model.keras")
    assert f'"model.keras": "{head}"' in runs[-1].source_etags and len(runs[-1].source_hash) == 64
    assert remote.report_path is not None
    html = remote.report_path.read_text(encoding="utf-8")
    assert f"{uri}/{WEEKS[-1].isoformat()}" in html and head in html

    # nothing new: nothing is downloaded, not even for the report's audit.toml or the frozen set
    again = weekly_audit(registry=uri, db_url=s3_db, out_dir=str(out), methods=METHODS)
    assert isinstance(again, AuditResult) and again.audited_weeks == ()
    assert s3.object_gets(bucket) == fetched
    # a re-audit of an unchanged drop reads its staged copy
    redo = weekly_audit(registry=uri, db_url=s3_db, out_dir=str(out), methods=METHODS, week=WEEKS[1])
    assert isinstance(redo, AuditResult) and s3.object_gets(bucket) == fetched

    # a new week: only its two files are downloaded
    later = small_registry(tmp_path / "later", [*WEEKS, LATER])  # the same first weeks, and one more
    _put_drop(s3, bucket, "team/pm25", later / LATER.isoformat())
    newer = weekly_audit(registry=uri, db_url=s3_db, out_dir=str(out), methods=METHODS)
    assert isinstance(newer, AuditResult) and newer.audited_weeks == (LATER,)
    assert len(s3.object_gets(bucket)) == len(fetched) + 2


def _put_drop(server: S3Server, bucket: str, prefix: str, folder: Path) -> None:
    from tests.source_checks import s3_client

    client = s3_client(server)
    for path in sorted(folder.iterdir()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{folder.name}/{path.name}", Body=path.read_bytes())  # type: ignore[attr-defined]


def _head(server: S3Server, bucket: str, key: str) -> str:
    from tests.source_checks import s3_client

    return str(s3_client(server).head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')  # type: ignore[attr-defined]


def test_wrong_credentials_and_an_unreachable_endpoint_are_one_line_errors(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = _bucket()
    upload_registry(s3, small_registry(tmp_path, WEEKS[:1]), bucket, "pm25")
    uri = f"s3://{bucket}/pm25"
    out = tmp_path / "out"
    db_url = f"sqlite:///{out / 'drift-audit.db'}"
    wrong = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)

    assert main(["run", "--registry", uri, "--out", str(out), "--methods", "weight_sum", "--quiet"]) == 1
    printed = capsys.readouterr()
    (line,) = [text for text in printed.err.splitlines() if text.startswith("drift-audit: error:")]
    assert f"registry {uri}: access denied" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert nothing_stored(out)  # no drop: nothing written
    assert_not_leaked(wrong, db_url=db_url, out_dir=out, printed=printed.out + printed.err)
    assert_not_leaked(s3.secret, db_url=db_url, out_dir=out, printed=printed.out + printed.err)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    closed = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    assert main(["run", "--registry", uri, "--out", str(out), "--methods", "weight_sum", "--quiet"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"drift-audit: error: registry {uri}: cannot reach the object store")
    assert "AWS_ENDPOINT_URL" in last
    assert nothing_stored(out)
    # a deployment run has no command line before it: the flow lists (retrying twice) and fails
    state = weekly_audit(registry=uri, out_dir=str(out), methods=["weight_sum"], return_state=True)
    error = state.result(raise_on_failure=False)
    assert state.is_failed() and f"registry {uri}: cannot reach the object store" in str(error)
    assert nothing_stored(out)


def _closed_port() -> int:
    from tests.helpers import free_port

    return free_port()


def test_a_broken_model_in_s3_fails_its_drop_naming_the_uri(s3: S3Server, tmp_path: Path) -> None:
    registry = small_registry(tmp_path, WEEKS[:2])
    (registry / WEEKS[1].isoformat() / "model.keras").write_bytes(b"not a zip")
    bucket = _bucket()
    upload_registry(s3, registry, bucket, "pm25")
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    state = weekly_audit(
        registry=f"s3://{bucket}/pm25",
        db_url=db_url,
        out_dir=str(tmp_path / "out"),
        methods=["weight_sum"],
        return_state=True,
    )
    assert state.is_failed()
    with make_engine(db_url).connect() as connection:
        runs = connection.execute(
            sa.text("SELECT status, error, source_uri FROM audit_runs ORDER BY id")
        ).all()
    assert [run.status for run in runs] == ["succeeded", "failed"]
    drop_uri = f"s3://{bucket}/pm25/{WEEKS[1].isoformat()}"
    assert runs[1].source_uri == drop_uri
    assert runs[1].error.startswith(f"{drop_uri}: ") and "cannot load the model" in runs[1].error
    assert table_counts(make_engine(db_url))["importances"] == 4  # the good drop's weight_sum only


def test_an_aws_credentials_block_replaces_the_environment(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect_aws import AwsCredentials

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    block = f"moto-{uuid.uuid4().hex[:6]}"
    AwsCredentials(
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3_server.endpoint},
    ).save(block)
    bucket = _bucket()
    upload_registry(s3_server, small_registry(tmp_path, WEEKS[:1]), bucket, "pm25")
    uri = f"s3://{bucket}/pm25"
    assert [drop.week for drop in source_for(uri, storage_block=block).list_drops().drops] == WEEKS[:1]
    out = tmp_path / "out"
    args = ["run", "--registry", uri, "--storage-block", block, "--out", str(out), "--methods", "weight_sum"]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr()
    assert_not_leaked(
        s3_server.secret,
        db_url=f"sqlite:///{out / 'drift-audit.db'}",
        out_dir=out,
        printed=printed.out + printed.err,
    )


@pytest.mark.skipif(os.environ.get("DRIFT_AUDIT_SKIP_DASK") == "1", reason="DRIFT_AUDIT_SKIP_DASK=1")
def test_dask_workers_read_the_staged_drops(s3: S3Server, tmp_path: Path) -> None:
    """With --task-runner dask, the workers load the staged copies by path (same machine here; on a
    remote cluster, --out on a shared filesystem: README, "Where models come from")."""
    registry = small_registry(tmp_path, WEEKS[:2])
    mlp_ignoring(4, 3, seed=11).save(registry / WEEKS[1].isoformat() / "model_seed1.keras")
    bucket = _bucket()
    upload_registry(s3, registry, bucket, "pm25")
    folder_db, dask_db = f"sqlite:///{tmp_path / 'folder.db'}", f"sqlite:///{tmp_path / 'dask.db'}"
    methods = ["weight_sum", "permutation"]
    assert isinstance(
        weekly_audit(registry=str(registry), db_url=folder_db, out_dir=str(tmp_path / "f"), methods=methods),
        AuditResult,
    )
    args = ["run", "--registry", f"s3://{bucket}/pm25", "--db", dask_db, "--out", str(tmp_path / "dask")]
    assert main([*args, "--methods", ",".join(methods), "--task-runner", "dask", "--quiet"]) == 0
    _assert_same_figures(folder_db, dask_db)
    kinds = FROZEN.replace("m.method, m.feature", "m.kind, m.method, m.feature")
    kinds = kinds.replace("1, 2, 3", "1, 2, 3, 4")
    copies = _rows(dask_db, kinds)[0]
    assert {key[1] for key in copies} == {"copy", "frozen"}
