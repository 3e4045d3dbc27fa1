"""Integrated gradients: audit's batched implementation against the naive per-sample GradientTape loop.

Model and data: the issue's reference, an LSTM(16) regressor on (24 steps, 11 features), 500
samples, 32 Gauss-Legendre nodes, zero baseline (`_common.reference_ig_files`, shared with
alibi_ig.py). The naive loop builds the 32 path points of one sample, runs the model on them under
one GradientTape, and weights the gradients with the same nodes: what one writes without batching.

Ours runs with ``tolerance=inf`` so that it evaluates exactly 32 nodes like the loop (it still
computes its completeness delta). The loop is timed on the first `--loop-samples` samples and
scaled to all 500: every sample costs the same, one eager call on 32 points (checked once: a full
500-sample pass took 62.0 s, the scaled 50-sample pass 64.5 s). After one first call each, the two
alternate for three rounds; the speedup is the median over rounds of loop time / ours.

    .venv/bin/python bench/ig_vs_loop.py [--loop-samples 50]
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf
from _common import (
    IG_STEPS,
    Timing,
    interleave,
    load_model,
    log,
    reference_ig_files,
    round_ratio,
    timed,
    write_result,
)

from audit.methods.integrated_gradients import compute_integrated_gradients, quadrature

TARGET_SPEEDUP = 20.0


def naive_loop(model: tf.keras.Model, X: np.ndarray, steps: int) -> np.ndarray:
    """Per-sample integrated gradients: one GradientTape and one eager model call per sample."""
    nodes, weights = quadrature(steps, "gauss_legendre")
    alphas = tf.constant(nodes.reshape(-1, 1, 1), tf.float32)
    node_weights = tf.constant(weights, tf.float32)
    attributions = np.empty_like(X)
    for index in range(X.shape[0]):
        x = tf.constant(X[index])
        baseline = tf.zeros_like(x)
        points = baseline[tf.newaxis] + alphas * (x - baseline)[tf.newaxis]
        with tf.GradientTape() as tape:
            tape.watch(points)
            value = tf.reduce_sum(model(points, training=False)[:, 0])
        gradient = tape.gradient(value, points)
        attributions[index] = ((x - baseline) * tf.tensordot(node_weights, gradient, axes=1)).numpy()
    return attributions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop-samples", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model_path, data_path = reference_ig_files()
    model = load_model(model_path)
    X = np.load(data_path)
    names = tuple(f"f{i}" for i in range(X.shape[-1]))
    ours_result: list[object] = []

    def ours() -> None:
        ours_result.append(
            compute_integrated_gradients(
                model, X, feature_names=names, steps=IG_STEPS, tolerance=float("inf")
            )
        )

    loop_model = load_model(model_path)
    subset = X[: args.loop_samples]
    scale = X.shape[0] / subset.shape[0]
    loop_attributions: list[np.ndarray] = []

    def loop() -> None:
        loop_attributions.append(naive_loop(loop_model, subset, IG_STEPS))

    log("[ig_vs_loop] first calls ...")
    ours_first, loop_first = timed(ours), timed(loop)
    log(f"[ig_vs_loop] {args.rounds} rounds of ours and the loop on {subset.shape[0]} samples ...")
    timings, per_round = interleave({"ours": ours, "loop": loop}, args.rounds)
    ours_timing = timings["ours"]
    ours_timing.first, ours_timing.first_cpu = ours_first
    subset_timing = timings["loop"]
    loop_timing = Timing(
        loop_first[0] * scale,
        [seconds * scale for seconds in subset_timing.runs],
        loop_first[1] * scale,
        [seconds * scale for seconds in subset_timing.cpu_runs],
    )
    speedup = round_ratio(per_round, "loop", "ours") * scale
    speedup_cpu = round_ratio(per_round, "loop", "ours", cpu=True) * scale
    log(f"[ig_vs_loop] ours: first {ours_timing.first:.3f}s steady {ours_timing.steady:.3f}s")
    log(f"[ig_vs_loop] loop (scaled): first {loop_timing.first:.2f}s steady {loop_timing.steady:.2f}s")
    log(f"[ig_vs_loop] speedup {speedup:.0f}x (CPU time {speedup_cpu:.0f}x)")

    # Agreement: the loop's mean |attribution| per feature against ours (same nodes, same baseline).
    ours_check = compute_integrated_gradients(
        model, subset, feature_names=names, steps=IG_STEPS, tolerance=float("inf")
    )
    loop_values = np.abs(loop_attributions[-1]).mean(axis=(0, 1))
    ours_values = ours_check.values
    write_result(
        "ig_vs_loop",
        {
            "model": "LSTM(16) -> Dense(1), input (24, 11)",
            "n_samples": int(X.shape[0]),
            "steps": IG_STEPS,
            "loop_samples_timed": int(subset.shape[0]),
            "ours": ours_timing.as_dict(),
            "loop": loop_timing.as_dict(),
            "loop_subset": subset_timing.as_dict(),
            "speedup": speedup,
            "speedup_cpu": speedup_cpu,
            "target_speedup": TARGET_SPEEDUP,
            "max_rel_difference_per_feature": float(
                np.max(np.abs(loop_values - ours_values) / np.maximum(np.abs(loop_values), 1e-12))
            ),
            "ours_parameters": dict(ours_result[-1].parameters),  # type: ignore[attr-defined]
        },
    )


if __name__ == "__main__":
    main()
