"""GradientSHAP (expected gradients): audit's batched implementation against its floor and against
``shap.GradientExplainer`` on the same work (issue 18, item 6).

Model and data: the IG reference, an LSTM(16) regressor on (24 steps, 11 features), 500 samples
(`_common.reference_ig_files`). Work: the method's defaults, 32 draws of (baseline, path point) per
sample, baselines from a background of 100 rows drawn from the sample.

- **Floor**: the passes the method must do, as traced calls on prepared tensors, chunked as the
  method chunks: forward + backward on 500 x 32 path points, one forward pass of the 500 samples
  (the value explained and the class) and one of the 100 background rows (mean F(baselines), for
  the additivity gap). Ours and the floor alternate for at least 3 rounds; the ratio is the median
  over rounds of ours / floor.
- **shap.GradientExplainer** (shap 0.51, `nsamples=32`, the same 100 background rows, the same 500
  samples, its default `batch_size=50`): per sample, 32 draws in one batch, one eager gradient call
  each. Timed alternately with ours for `--shap-rounds` rounds (after one first call each); the
  speedup is the median over rounds of shap / ours.

    .venv/bin/python bench/gradient_shap.py [--rounds 3] [--shap-rounds 2]
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
from _common import (
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

from audit.forward import DEFAULT_CHUNK_BYTES, rows_per_call
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk
from audit.methods.gradient_shap import (
    DEFAULT_BACKGROUND_SIZE,
    DEFAULT_DRAWS,
    background_rows,
    compute_gradient_shap,
)

TARGET_RATIO = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shap-rounds", type=int, default=2)
    args = parser.parse_args()
    import shap

    load_before = os.getloadavg()
    model_path, data_path = reference_ig_files()
    model = load_model(model_path)
    X = np.load(data_path).astype(np.float64)
    names = tuple(f"f{i}" for i in range(X.shape[-1]))
    n_draws, size = DEFAULT_DRAWS, DEFAULT_BACKGROUND_SIZE
    background = X[background_rows(len(X), size, np.random.default_rng(0))].astype(np.float32)
    results: list[object] = []

    def ours() -> None:
        results.append(compute_gradient_shap(model, X, feature_names=names, random_state=0))

    per_chunk = rows_per_chunk(X.shape[1:], DEFAULT_GRADIENT_CHUNK_BYTES, points_per_row=n_draws)
    gradient = prepare_gradient(model, len(X) * n_draws, per_chunk * n_draws)
    forward_rows = rows_per_call(X.shape[1:], DEFAULT_CHUNK_BYTES)
    inputs_forward = prepare_forward(model, len(X), forward_rows)
    background_forward = prepare_forward(model, size, forward_rows)

    def floor() -> None:
        gradient()
        inputs_forward()
        background_forward()

    log("[gradient_shap] first calls ...")
    first_ours = timed(ours)
    timed(floor)
    log("[gradient_shap] ours vs floor ...")
    timings, per_round = interleave({"ours": ours, "floor": floor}, rounds=args.rounds)
    floor_ratio = round_ratio(per_round, "ours", "floor")
    floor_cpu_ratio = round_ratio(per_round, "ours", "floor", cpu=True)

    shap_model = load_model(model_path)
    explainer = shap.GradientExplainer(shap_model, background)
    X32 = X.astype(np.float32)
    shap_values: list[np.ndarray] = []

    def reference() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras: "structure of inputs doesn't match"
            shap_values.append(np.asarray(explainer.shap_values(X32, nsamples=n_draws, rseed=0)))

    log("[gradient_shap] shap.GradientExplainer first call ...")
    first_shap = timed(reference)
    log("[gradient_shap] ours vs shap ...")
    shap_timings, shap_rounds = interleave(
        {"ours": ours, "shap": reference}, rounds=args.shap_rounds, min_seconds=0.0
    )
    speedup = round_ratio(shap_rounds, "shap", "ours")
    load_after = os.getloadavg()
    theirs = np.abs(shap_values[-1][..., 0]).mean(axis=(0, 1))
    mine = results[-1].values  # type: ignore[attr-defined]
    log(
        f"[gradient_shap] ours {timings['ours'].steady:.3f} s, floor {timings['floor'].steady:.3f} s "
        f"(ratio {floor_ratio:.2f}, CPU {floor_cpu_ratio:.2f}); shap {shap_timings['shap'].steady:.2f} s "
        f"(ours {speedup:.1f}x faster); load {load_before} -> {load_after}"
    )
    write_result(
        "gradient_shap",
        {
            "workload": "LSTM(16) > Dense(1), (24, 11), 500 samples (the IG reference)",
            "n_draws": n_draws,
            "background_size": size,
            "target_ratio": TARGET_RATIO,
            "first_call": {"ours": first_ours[0], "shap": first_shap[0]},
            "ours": timings["ours"].as_dict(),
            "floor": timings["floor"].as_dict(),
            "floor_parts": {
                "gradient_rows": len(X) * n_draws,
                "gradient_rows_per_call": per_chunk * n_draws,
                "forward_rows": len(X) + size,
            },
            "ratio_to_floor": floor_ratio,
            "cpu_ratio_to_floor": floor_cpu_ratio,
            "rounds": per_round,
            "shap_version": shap.__version__,
            "shap": shap_timings["shap"].as_dict(),
            "ours_beside_shap": shap_timings["ours"].as_dict(),
            "shap_rounds": shap_rounds,
            "speedup_over_shap": speedup,
            "mean_abs_attribution": {"ours": list(mine), "shap": list(theirs)},
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
