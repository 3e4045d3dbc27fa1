"""Listing and staging a year of weekly drops from S3: what the first run downloads, and that the
second downloads nothing.

Starts moto's S3 server on 127.0.0.1 (the one the tests use), uploads `--weeks` weekly drops of a
small MLP (``model.keras`` + a ``eval.npz`` of `--rows` rows + a ``notes.txt`` that is not part of
the contract), then, with `flows.sources.object_store.ObjectStoreSource` as the flow uses it:

1. lists the prefix and stages every drop into an empty cache (the first run);
2. lists and stages them again into the same cache (a second run: nothing should be downloaded);

and prints, for each run, the wall time of the listing and of the staging, the files and bytes the
staging code counted, and the GET requests the server answered (from its access log). Writes
``bench/results/sources.json``.

    .venv/bin/python bench/sources.py [--weeks 52] [--rows 256]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sets TF's log level and Keras' home before TF is imported)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.sources import source_for  # noqa: E402
from tests.helpers import mlp_ignoring  # noqa: E402
from tests.source_checks import s3_client  # noqa: E402
from tests.source_servers import s3_server  # noqa: E402

BUCKET = "bench-models"
PREFIX = "pm25"


def _upload(server: object, weeks: int, rows: int, folder: Path) -> int:
    """`weeks` weekly drops under s3://BUCKET/PREFIX/; returns the bytes of the contract's files."""
    client = s3_client(server)  # type: ignore[arg-type]
    client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    first = dt.date(2025, 1, 6)
    contract_bytes = 0
    for index in range(weeks):
        week = (first + dt.timedelta(weeks=index)).isoformat()
        model = mlp_ignoring(8, 7, seed=index)
        model.save(folder / "model.keras")
        np.savez(folder / "eval.npz", X=rng.normal(size=(rows, 8)).astype(np.float32))
        (folder / "notes.txt").write_text("training log, not read by the auditor\n" * 200)
        for name in ("model.keras", "eval.npz", "notes.txt"):
            body = (folder / name).read_bytes()
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{week}/{name}", Body=body)  # type: ignore[attr-defined]
            contract_bytes += len(body) if name != "notes.txt" else 0
    return contract_bytes


def _run(uri: str, cache: Path, server: object) -> dict[str, float | int]:
    gets_before = len(server.object_gets(BUCKET))  # type: ignore[attr-defined]
    requests_before = len(server.requests)  # type: ignore[attr-defined]
    started = time.perf_counter()
    source = source_for(uri)
    listing = source.list_drops()
    listed = time.perf_counter()
    staged = [source.stage(drop, cache) for drop in listing.drops]
    done = time.perf_counter()
    return {
        "drops": len(listing.drops),
        "list_seconds": round(listed - started, 3),
        "stage_seconds": round(done - listed, 3),
        "total_seconds": round(done - started, 3),
        "files_downloaded": sum(s.files_downloaded for s in staged),
        "bytes_downloaded": sum(s.bytes_downloaded for s in staged),
        "object_gets": len(server.object_gets(BUCKET)) - gets_before,  # type: ignore[attr-defined]
        "requests": len(server.requests) - requests_before,  # type: ignore[attr-defined]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as scratch, s3_server() as server:
        os.environ.update(server.environment())
        contract_bytes = _upload(server, args.weeks, args.rows, Path(scratch))
        cache = Path(scratch) / "cache"
        uri = f"s3://{BUCKET}/{PREFIX}"
        first = _run(uri, cache, server)
        second = _run(uri, cache, server)
    result = {
        "weeks": args.weeks,
        "rows": args.rows,
        "contract_bytes": contract_bytes,
        "first": first,
        "second": second,
    }
    out = ROOT / "bench" / "results" / "sources.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, run in (("first run", first), ("second run", second)):
        print(
            f"{name}: {run['drops']} drops listed in {run['list_seconds']} s,"
            f" staged in {run['stage_seconds']} s;"
            f" {run['files_downloaded']} files, {run['bytes_downloaded']} bytes downloaded;"
            f" {run['object_gets']} object GETs, {run['requests']} requests to the server"
        )
    print(f"contract files in the bucket: {contract_bytes} bytes; results in {out}")


if __name__ == "__main__":
    main()
