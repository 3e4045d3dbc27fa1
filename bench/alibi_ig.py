"""Integrated gradients: audit's implementation against Alibi's, same model file, same data, one run.

The issue's reference: an LSTM(16) regressor saved as .keras, 500 samples of (24 steps, 11
features), 32 Gauss-Legendre nodes, zero baseline (`_common.reference_ig_files`). Ours runs here,
in the project venv; Alibi runs in bench/.venv-alibi-<version> (made by bench/alibi.sh) as a
long-lived bench/alibi_worker.py, so that after one first call each, ours, our floor and Alibi at
each internal_batch_size are called round by round under the same load. Alibi runs eagerly
(nothing to trace), so batch sizes below `--single-run-below` (the slow default, 100) are timed by
their first call only. The target compares ours with Alibi's fastest batch size, as the median
over rounds of Alibi's time / ours.

Ours uses ``tolerance=inf`` so it evaluates exactly 32 nodes like Alibi (it still computes its
completeness delta and the target values F(x), F(baseline), which Alibi does not).

    .venv/bin/python bench/alibi_ig.py [--alibi-version 0.5.5] [--batch-sizes 100,1000,4000,16000]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import (
    IG_STEPS,
    RESULTS,
    Measured,
    Timing,
    Worker,
    WorkerUnavailable,
    interleave,
    load_model,
    log,
    prepare_forward,
    prepare_gradient,
    reference_ig_files,
    round_ratio,
    timed,
    write_result,
)

from audit.forward import rows_per_call
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk
from audit.methods.integrated_gradients import compute_integrated_gradients

TARGET_SPEEDUP = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alibi-version", default="0.5.5")
    parser.add_argument("--batch-sizes", default="100,1000,4000,16000")
    parser.add_argument("--single-run-below", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model_path, data_path = reference_ig_files()
    model = load_model(model_path)
    X = np.load(data_path)
    names = tuple(f"f{i}" for i in range(X.shape[-1]))
    found: list[Any] = []

    def ours() -> None:
        found.append(
            compute_integrated_gradients(
                model, X, feature_names=names, steps=IG_STEPS, tolerance=float("inf")
            )
        )

    log("[alibi_ig] ours, first call ...")
    ours_first = timed(ours)
    # Our floor, for context: N*S fwd+bwd rows + 2N fwd rows, chunked as ours chunks.
    samples_per_chunk = rows_per_chunk(X.shape[1:], DEFAULT_GRADIENT_CHUNK_BYTES, IG_STEPS)
    floor_parts = [
        prepare_gradient(model, len(X) * IG_STEPS, samples_per_chunk * IG_STEPS),
        prepare_forward(model, 2 * len(X), rows_per_call(X.shape[1:])),
    ]
    payload: dict[str, Any] = {
        "model": "LSTM(16) -> Dense(1), input (24, 11)",
        "n_samples": int(X.shape[0]),
        "steps": IG_STEPS,
        "alibi_requested_version": args.alibi_version,
        "target_speedup": TARGET_SPEEDUP,
        "alibi": None,
        "alibi_error": None,
    }
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    calls: dict[str, Any] = {"ours": ours, "floor": lambda: [part() for part in floor_parts]}
    try:
        worker = Worker(args.alibi_version, f"alibi-{args.alibi_version}")
        versions = worker.request(op="versions")
        worker.request(op="ig_setup", model=str(model_path), data=str(data_path), steps=IG_STEPS)
        firsts: dict[int, dict[str, Any]] = {}
        for size in sizes:
            log(f"[alibi_ig] alibi {versions['alibi']}, internal_batch_size={size}, first call ...")
            firsts[size] = worker.request(op="ig", batch_size=size)
            log(f"[alibi_ig]   {firsts[size]['wall']:.2f}s")
        for size in sizes:
            if size >= args.single_run_below:
                calls[f"alibi:{size}"] = lambda size=size: Measured(
                    **worker.request(op="ig", batch_size=size)
                )
    except WorkerUnavailable as error:
        worker, versions, firsts = None, {}, {}
        payload["alibi_error"] = str(error)
        log(f"[alibi_ig] Alibi unavailable: {str(error)[:300]}")
    log(f"[alibi_ig] {args.rounds} rounds of {', '.join(calls)} ...")
    timings, per_round = interleave(calls, args.rounds)
    ours_timing = timings["ours"]
    ours_timing.first, ours_timing.first_cpu = ours_first
    payload.update(ours=ours_timing.as_dict(), ours_floor=timings["floor"].as_dict(), rounds=per_round)
    log(f"[alibi_ig] ours: first {ours_first[0]:.3f}s steady {ours_timing.steady:.3f}s")
    if worker is not None:
        per_batch: dict[str, Any] = {}
        for size in sizes:
            key = f"alibi:{size}"
            timing = timings.get(key) or Timing(None, [firsts[size]["wall"]], None, [firsts[size]["cpu"]])
            timing.first, timing.first_cpu = firsts[size]["wall"], firsts[size]["cpu"]
            per_batch[str(size)] = {**timing.as_dict(), "one_call": key not in timings}
            log(f"[alibi_ig] alibi batch {size}: first {timing.first:.2f}s steady {timing.steady:.2f}s")
        fastest = min(sizes, key=lambda size: per_batch[str(size)]["steady"])
        key = f"alibi:{fastest}"
        if key in timings:
            speedup = round_ratio(per_round, key, "ours")
            speedup_cpu = round_ratio(per_round, key, "ours", cpu=True)
        else:
            speedup = per_batch[str(fastest)]["steady"] / ours_timing.steady
            speedup_cpu = per_batch[str(fastest)]["steady_cpu"] / (ours_timing.steady_cpu or 1e-9)
        attributions_path = RESULTS / f"alibi-{args.alibi_version}-attributions.npy"
        worker.request(op="ig", batch_size=fastest, save=str(attributions_path))
        worker.close()
        theirs = np.abs(np.load(attributions_path)).mean(axis=(0, 1))
        mine = found[-1].values
        payload.update(
            alibi={**versions, "per_batch_size": per_batch, "fastest_batch_size": fastest},
            speedup_vs_fastest=speedup,
            speedup_vs_fastest_cpu=speedup_cpu,
            speedup_vs_default_batch=per_batch[str(sizes[0])]["steady"] / ours_timing.steady,
            max_rel_difference_per_feature=float(
                np.max(np.abs(theirs - mine) / np.maximum(np.abs(theirs), 1e-12))
            ),
        )
        log(f"[alibi_ig] ours {speedup:.1f}x faster than Alibi at batch {fastest} (CPU {speedup_cpu:.1f}x)")
    write_result(f"alibi_ig-{args.alibi_version}", payload)


if __name__ == "__main__":
    main()
