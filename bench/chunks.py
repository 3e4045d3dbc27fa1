"""Throughput of one model call against its size: is the rows-per-call cap well chosen?

audit/ sizes a call by its bytes of model *input* (64 MiB per forward call, audit/forward.py;
16 MiB per gradient call, audit/gradients.py) and caps it at `MAX_ROWS_PER_CALL` rows (8192).
The activations a call holds are many times larger than its input (500-wide layers behind 82
inputs, 32 GRU units or 32 channels behind 11 or 6 features), which is why the cap exists. This
sweep takes the rows of one call of the byte budget alone (no cap) and times them in calls of
2048, 4096 and 8192 rows and in that one call; the sizes take turns, three rounds, medians. The
default is the size audit/ uses now.

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

SIZES = (2048, 4096, 8192)


def sweep(model: Any, kind: str, budget_rows: int, default_rows: int) -> list[dict[str, Any]]:
    """Rows per second for the same `budget_rows` rows, called in chunks of several sizes (round-robin)."""
    prepare = prepare_gradient if kind == "forward+backward" else prepare_forward
    sizes = sorted({*(size for size in SIZES if size < budget_rows), budget_rows, default_rows})
    timings, _ = interleave({str(size): prepare(model, budget_rows, size) for size in sizes}, 3)
    points = []
    for size in sizes:
        rate = budget_rows / timings[str(size)].steady
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
        row_shape = tuple(model.inputs[0].shape)[1:]
        row_bytes = int(np.prod(row_shape)) * 4
        forward_budget = forward.DEFAULT_CHUNK_BYTES // row_bytes
        gradient_budget = gradients.DEFAULT_GRADIENT_CHUNK_BYTES // row_bytes
        forward_rows = forward.rows_per_call(row_shape)
        gradient_rows = gradients.rows_per_chunk(row_shape, gradients.DEFAULT_GRADIENT_CHUNK_BYTES)
        log(f"[chunks] workload {key}: defaults {forward_rows} forward rows, {gradient_rows} gradient rows")
        found[key] = {
            "forward": sweep(model, "forward", forward_budget, forward_rows),
            "forward+backward": sweep(model, "forward+backward", gradient_budget, gradient_rows),
        }
    write_result("chunks", {"sizes": SIZES, "workloads": found})


if __name__ == "__main__":
    main()
