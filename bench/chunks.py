"""Throughput of one model call against its size: is the chunk budget well chosen?

audit/ sizes its chunks by the bytes of model *input*: 64 MiB per forward call (audit/forward.py)
and 16 MiB of path points per gradient call (audit/gradients.py). The activations a call holds
are many times larger than its input (500-wide layers behind 82 inputs, 32 GRU units or 32
channels behind 11 or 6 features), so this sweep times the rows of one default-sized call again
in calls of 2048 and 8192 rows (fwd+bwd: 2048); the sizes take turns, three rounds, medians.

    .venv/bin/python bench/chunks.py [--workloads a,b,c]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import (
    RESULTS,
    WORKLOADS,
    build_model,
    interleave,
    load_model,
    log,
    prepare_forward,
    prepare_gradient,
    write_result,
)

from audit import forward, gradients

SIZES = (2048, 8192)


def sweep(model: Any, kind: str, default_rows: int) -> list[dict[str, Any]]:
    """Rows per second for the same `default_rows` rows, called in chunks of several sizes (round-robin)."""
    prepare = prepare_gradient if kind == "forward+backward" else prepare_forward
    chosen = SIZES if kind == "forward" else SIZES[:1]
    sizes = sorted({*(size for size in chosen if size < default_rows), default_rows})
    timings, _ = interleave({str(size): prepare(model, default_rows, size) for size in sizes}, 3)
    points = []
    for size in sizes:
        rate = default_rows / timings[str(size)].steady
        points.append({"rows_per_call": size, "is_default": size == default_rows, "rows_per_second": rate})
        log(f"[chunks] {kind} {size} rows/call: {rate:,.0f} rows/s")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", default="a,b,c")
    args = parser.parse_args()
    found: dict[str, Any] = {}
    for key in args.workloads.split(","):
        model = load_model(build_model(WORKLOADS[key].build, RESULTS / "models" / f"{key}.keras"))
        row_bytes = int(np.prod(tuple(model.inputs[0].shape)[1:])) * 4
        forward_rows = forward.DEFAULT_CHUNK_BYTES // row_bytes
        gradient_rows = gradients.DEFAULT_GRADIENT_CHUNK_BYTES // row_bytes
        log(f"[chunks] workload {key}: defaults {forward_rows} forward rows, {gradient_rows} gradient rows")
        found[key] = {
            "forward": sweep(model, "forward", forward_rows),
            "forward+backward": sweep(model, "forward+backward", gradient_rows),
        }
    write_result("chunks", {"sizes": SIZES, "workloads": found})


if __name__ == "__main__":
    main()
