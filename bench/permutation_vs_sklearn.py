"""Permutation importance: audit's against scikit-learn's, same model file, data, repeats and score.

Workload (b), the 82-feature MLP 82 -> 500 -> 500 -> 500 -> 2 softmax with random weights, saved
as .keras; `--samples` rows with random class labels; `--n-repeats` shuffles per feature on both
sides; score: cross-entropy of the true class (audit's loss increase; scikit-learn's
permutation_importance with a log-loss scorer). Ours runs here, in the project venv;
scikit-learn runs in bench/.venv-alibi-<version> through bench/alibi_worker.py, with the model
wrapped as a minimal estimator (fit does nothing) whose predict_proba is either one traced call
on all rows (the fastest way to call the model: the target compares with this one) or, with
``--keras-predict``, Keras' ``model.predict`` at its default batch of 32 (what a plain wrapper
does; one call, about a minute, so it is left out of run_all.sh). Ours also runs a second time
with its public ``batch_size`` (``--what-if-batch-size``, 8192 by default: since audit/ caps its
calls at 8,192 rows this is its default call size too, so the two should agree within noise).

    .venv/bin/python bench/permutation_vs_sklearn.py [--samples 2000] [--n-repeats 2] [--keras-predict]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import (
    RESULTS,
    WORKLOADS,
    Measured,
    Timing,
    Worker,
    WorkerUnavailable,
    build_model,
    interleave,
    load_model,
    log,
    make_data,
    round_ratio,
    timed,
    write_result,
)

from audit.methods.permutation import compute_permutation
from audit.targets import OutputTarget, output_activation
from audit.types import Task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--n-repeats", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of ours / sklearn after the first calls"
    )
    parser.add_argument("--alibi-version", default="0.5.5", help="the bench venv that holds scikit-learn")
    parser.add_argument("--keras-predict", action="store_true", help="also time the model.predict wrapper")
    parser.add_argument(
        "--what-if-batch-size", type=int, default=8192, help="ours again with this public batch_size"
    )
    args = parser.parse_args()
    workload = WORKLOADS["b"]
    model_path = build_model(workload.build, RESULTS / "models" / "b.keras")
    model = load_model(model_path)
    X, y = make_data(model, args.samples, workload.n_classes)
    X_path, y_path = RESULTS / "permutation-X.npy", RESULTS / "permutation-y.npy"
    np.save(X_path, X)
    np.save(y_path, y)
    target = OutputTarget(Task.CLASSIFICATION, activation=output_activation(model))
    names = tuple(f"f{i}" for i in range(X.shape[-1]))
    found: list[Any] = []

    def ours() -> None:
        found.append(
            compute_permutation(
                model, X, y, feature_names=names, target=target, n_repeats=args.n_repeats, random_state=0
            )
        )

    def ours_small_calls() -> None:
        compute_permutation(
            model,
            X,
            y,
            feature_names=names,
            target=target,
            n_repeats=args.n_repeats,
            random_state=0,
            batch_size=args.what_if_batch_size,
        )

    log(f"[permutation_vs_sklearn] {args.samples} samples x {args.n_repeats} repeats; first calls ...")
    ours_first = timed(ours)
    timed(ours_small_calls)
    calls: dict[str, Any] = {"ours": ours, "ours_small_calls": ours_small_calls}
    payload: dict[str, Any] = {
        "model": workload.title,
        "n_samples": args.samples,
        "n_features": int(X.shape[-1]),
        "n_repeats": args.n_repeats,
        "forward_rows": args.n_repeats * X.shape[-1] * args.samples + args.samples,
        "sklearn": None,
        "sklearn_error": None,
    }
    answers: dict[str, list[dict[str, Any]]] = {"traced": [], "keras_predict": []}
    worker = None
    try:
        worker = Worker(args.alibi_version, "sklearn-permutation")
        versions = worker.request(op="versions")
        worker.request(
            op="permutation_setup",
            model=str(model_path),
            X=str(X_path),
            y=str(y_path),
            n_repeats=args.n_repeats,
        )
        answers["traced"].append(worker.request(op="permutation", mode="traced"))
        if args.keras_predict:
            log("[permutation_vs_sklearn] sklearn with model.predict (one call) ...")
            answers["keras_predict"].append(worker.request(op="permutation", mode="keras_predict"))

        def theirs() -> Measured:
            answer = worker.request(op="permutation", mode="traced")  # type: ignore[union-attr]
            answers["traced"].append(answer)
            return Measured(answer["wall"], answer["cpu"])

        calls["sklearn"] = theirs
    except WorkerUnavailable as error:
        payload["sklearn_error"] = str(error)
        log(f"[permutation_vs_sklearn] scikit-learn unavailable: {str(error)[:300]}")
    log(f"[permutation_vs_sklearn] {args.rounds} rounds of {', '.join(calls)} ...")
    timings, per_round = interleave(calls, args.rounds)
    ours_timing = timings["ours"]
    ours_timing.first, ours_timing.first_cpu = ours_first
    payload.update(
        ours=ours_timing.as_dict(),
        ours_small_calls=timings["ours_small_calls"].as_dict(),
        what_if_batch_size=args.what_if_batch_size,
        rounds=per_round,
    )
    log(f"[permutation_vs_sklearn] ours: first {ours_first[0]:.2f}s steady {ours_timing.steady:.2f}s")
    if worker is not None and "sklearn" in timings:
        worker.close()
        traced = timings["sklearn"]
        traced.first, traced.first_cpu = answers["traced"][0]["wall"], answers["traced"][0]["cpu"]
        variants: dict[str, Any] = {"traced": traced.as_dict()}
        if answers["keras_predict"]:
            answer = answers["keras_predict"][0]
            variants["keras_predict"] = Timing(
                answer["wall"], [answer["wall"]], answer["cpu"], [answer["cpu"]]
            ).as_dict()
            payload["speedup_vs_keras_predict"] = answer["wall"] / ours_timing.steady
        log(f"[permutation_vs_sklearn] sklearn: first {traced.first:.2f}s steady {traced.steady:.2f}s")
        theirs_values = np.asarray(answers["traced"][-1]["importances_mean"])
        mine = found[-1].values
        payload.update(
            sklearn={**versions, "variants": variants},
            speedup_vs_traced=round_ratio(per_round, "sklearn", "ours"),
            what_if_speedup_vs_traced=round_ratio(per_round, "sklearn", "ours_small_calls"),
            speedup_vs_traced_cpu=round_ratio(per_round, "sklearn", "ours", cpu=True),
            importance_rank_correlation=float(
                np.corrcoef(np.argsort(np.argsort(theirs_values)), np.argsort(np.argsort(mine)))[0, 1]
            ),
        )
        log(f"[permutation_vs_sklearn] sklearn time / ours: {payload['speedup_vs_traced']:.2f}")
    write_result("permutation_vs_sklearn", payload)


if __name__ == "__main__":
    main()
