"""Shared checks of the source tests: uploading a registry to S3, and looking for a leaked secret in
everything a run leaves behind (SQL, reports, the Prefect API's flow-run parameters and logs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from storage.models import Base
from storage.session import make_engine
from tests.source_servers import REGION, S3Server


def s3_client(server: S3Server) -> object:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.key,
        aws_secret_access_key=server.secret,
        region_name=REGION,
    )


def upload_registry(server: S3Server, registry: Path, bucket: str, prefix: str) -> None:
    """Every file of a local registry folder to ``s3://<bucket>/<prefix>/`` (bucket created)."""
    client = s3_client(server)
    existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}  # type: ignore[attr-defined]
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    for path in sorted(registry.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(registry).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())  # type: ignore[attr-defined]


def nothing_stored(out_dir: Path) -> bool:
    """Whether the run with ``--out out_dir`` stored nothing: the command line refused it before the
    flow (no database file), or the flow stored no row (every table of its database empty)."""
    from tests.helpers import table_counts

    database = out_dir / "drift-audit.db"
    if not database.exists():
        return True
    engine = make_engine(f"sqlite:///{database}")
    try:
        return set(table_counts(engine).values()) <= {0}
    finally:
        engine.dispose()


def everything_stored(db_url: str) -> str:
    """Every value of every table, as text ("" for a SQLite file the run never created)."""
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return ""
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return repr([list(connection.execute(sa.select(table))) for table in Base.metadata.sorted_tables])
    finally:
        engine.dispose()


def prefect_record() -> str:
    """The parameters of every flow run and every log line the Prefect API holds, as text."""
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs()
            logs = await client.read_logs()
        return repr([run.parameters for run in runs]) + "\n".join(log.message for log in logs)

    return asyncio.run(read())


def files_text(folder: Path) -> str:
    """The text of every report (html, txt) under `folder`."""
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(folder.rglob("*"))
        if path.suffix in (".html", ".txt", ".md") and path.is_file()
    )


def assert_not_leaked(secret: str, *, db_url: str, out_dir: Path, printed: str) -> None:
    """`secret` is nowhere: not in SQL, reports, the Prefect API's parameters and logs, nor output."""
    assert secret not in everything_stored(db_url)
    assert secret not in files_text(out_dir)
    assert secret not in prefect_record()
    assert secret not in printed
