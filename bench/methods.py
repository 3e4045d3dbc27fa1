"""Every registered method against its floor on the reference workloads (a), (b), (c), with traces.

The floor of a method is the cost of the forward/backward passes it must do, run as traced calls
on prepared input tensors, chunked as the method chunks (see `floor_for`). Each method runs on a
freshly loaded copy of the workload's model, so its first call pays its own tracing; then three
more calls give the steady-state median. Every `tf.function` created by audit/ is wrapped to count
its calls and traces (`_common.install_trace_recorder`).

    .venv/bin/python bench/methods.py [--workloads a,b,c] [--methods name,...] [--repeats 3]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _common
import keras
import numpy as np
from _common import (
    WORKLOADS,
    Workload,
    build_model,
    install_trace_recorder,
    interleave,
    load_model,
    log,
    make_data,
    prepare_forward,
    prepare_gradient,
    round_ratio,
    time_calls,
    timed,
    write_result,
)

RECORDER = install_trace_recorder()  # before audit is imported, so its tf.functions are counted

from audit import forward, gradients  # noqa: E402
from audit.methods import MethodNotApplicable, MethodSpec, registered_methods  # noqa: E402
from audit.targets import REGRESSION_TARGET, OutputTarget, output_activation  # noqa: E402
from audit.types import Task  # noqa: E402

TARGET_RATIO = 1.2
MIN_SECONDS = 8.0
#: Options that keep the whole run within its time budget; stated in the results.
OPTIONS: dict[tuple[str, str], dict[str, object]] = {
    ("b", "permutation"): {"n_repeats": 1},
    ("b", "perturbation"): {"n_repeats": 1},
}


@dataclass
class FloorPart:
    kind: str  # "forward" or "forward+backward"
    rows: int
    rows_per_call: int
    run: Callable[[], None]
    layer: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "rows_per_call": self.rows_per_call,
            "layer": self.layer,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", default="a,b,c")
    parser.add_argument("--methods", default="", help="comma-separated; default: every registered method")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    methods = registered_methods()
    chosen = [name for name in args.methods.split(",") if name] or list(methods)
    warm_up()
    rows: list[dict[str, Any]] = []
    for key in args.workloads.split(","):
        workload = WORKLOADS[key]
        path = build_model(workload.build, _common.RESULTS / "models" / f"{key}.keras")
        for name in chosen:
            rows.append(bench_method(workload, path, methods[name], args.repeats))
    write_result(
        "methods",
        {
            "registered_methods": list(methods),
            "workloads": {key: {"title": w.title, "n_samples": w.n_samples} for key, w in WORKLOADS.items()},
            "target_ratio": TARGET_RATIO,
            "chunk_bytes": {
                "forward": forward.DEFAULT_CHUNK_BYTES,
                "gradient": gradients.DEFAULT_GRADIENT_CHUNK_BYTES,
            },
            "max_rows_per_call": {
                "forward": forward.MAX_ROWS_PER_CALL,
                "gradient": gradients.MAX_GRADIENT_ROWS_PER_CALL,
            },
            "rows": rows,
        },
    )


def warm_up() -> None:
    """TensorFlow's one-off start-up costs (thread pools, first kernels) land here, not in a method."""
    model = load_model(build_model(WORKLOADS["a"].build, _common.RESULTS / "models" / "a.keras"))
    prepare_gradient(model, 64, 64)()
    prepare_forward(model, 64, 64)()


def target_of(model: keras.Model, workload: Workload) -> OutputTarget:
    if not workload.is_classification:
        return REGRESSION_TARGET
    return OutputTarget(Task.CLASSIFICATION, activation=output_activation(model))


def bench_method(workload: Workload, path: Any, spec: MethodSpec, repeats: int) -> dict[str, Any]:
    model = load_model(path)
    X, y = make_data(model, workload.n_samples, workload.n_classes)
    options = OPTIONS.get((workload.key, spec.name), {})
    context = spec.context(
        tuple(f"f{i}" for i in range(X.shape[-1])),
        target_of(model, workload),
        random_state=0,
        options=options,
    )
    row: dict[str, Any] = {"workload": workload.key, "method": spec.name, "options": options}
    results: list[Any] = []
    windows: list[dict[str, Any]] = []

    def call() -> None:
        with RECORDER.window() as counts:
            results.append(spec.compute(model, X if spec.needs_eval_sample else None, y, context))
        windows.append(counts)

    log(f"[methods] {workload.key}/{spec.name} ...")
    try:
        first = timed(call)
    except MethodNotApplicable as reason:
        log(f"[methods] {workload.key}/{spec.name}: not applicable: {reason}")
        return {**row, "status": "not applicable", "reason": str(reason)}
    parameters = dict(results[-1].parameters)
    floor = floor_for(spec, model, X, parameters)
    row.update(status="ok", n_samples=int(X.shape[0]), parameters=_scalars(parameters))
    if floor is None:
        timing = time_calls(call, repeats, first=False)
        row["floor"] = None
    else:
        description, parts = floor
        # Short methods get more rounds (at least MIN_SECONDS of rounds): the machine may be shared.
        timings, per_round = interleave(
            {"method": call, "floor": lambda: [part.run() for part in parts]},
            repeats,
            min_seconds=MIN_SECONDS,
        )
        timing = timings["method"]
        row["floor"] = {
            "description": description,
            "parts": [part.describe() for part in parts],
            **timings["floor"].as_dict(),
        }
        ratios = [r["method"] / r["floor"] for r in per_round]
        row.update(
            ratio=round_ratio(per_round, "method", "floor"),
            ratio_cpu=round_ratio(per_round, "method", "floor", cpu=True),
            ratio_of_minima=min(timings["method"].runs) / min(timings["floor"].runs),
            ratio_range=[min(ratios), max(ratios)],
            rounds=per_round,
        )
    timing.first, timing.first_cpu = first
    row.update(timing=timing.as_dict(), first_counts=windows[0], steady_counts=windows[1:])
    log(
        f"[methods] {workload.key}/{spec.name}: first {timing.first:.3f}s steady {timing.steady:.3f}s"
        + (
            f" floor {row['floor']['steady']:.3f}s ratio {row['ratio']:.2f} (CPU {row['ratio_cpu']:.2f})"
            if floor
            else ""
        )
        + f" traces first {windows[0]['traces']} steady {[w['traces'] for w in windows[1:]]}"
    )
    return row


def _scalars(parameters: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in parameters.items() if not isinstance(value, list)}


def floor_for(
    spec: MethodSpec, model: keras.Model, X: np.ndarray, parameters: dict[str, Any]
) -> tuple[str, list[FloorPart]] | None:
    """The passes the method must do, timed as traced calls; None for weight-only or unknown methods.

    Calls are as big as the method's (the same audit/ functions size them): forward calls of
    `forward.rows_per_call` rows (64 MiB of input, at most `forward.MAX_ROWS_PER_CALL` rows);
    copies of X (permutation, perturbation, the sweep) as `forward.copies_by_chunk` groups them
    (whole copies per call, or one copy split by samples); gradient calls of
    `gradients.rows_per_chunk` samples.
    """
    n = X.shape[0]
    row_shape = tuple(X.shape[1:])
    forward_rows = forward.rows_per_call(row_shape)
    gradient_rows = gradients.rows_per_chunk(row_shape, gradients.DEFAULT_GRADIENT_CHUNK_BYTES)
    name = spec.name
    if name in ("permutation", "perturbation"):
        repeats = int(parameters["n_repeats"])
        features = X.shape[-1]
        if name == "perturbation":  # constant features are skipped by the method
            features = int(np.sum(np.std(X.reshape(-1, X.shape[-1]), axis=0) > 0))
        rows = repeats * features * n + n
        description = f"R*F*N+N = {repeats}*{features}*{n}+{n} forward rows"
        copies = _forward(model, repeats * features * n, copy_calls(n, repeats * features, forward_rows))
        return description, [copies, _forward(model, n, forward_rows)]
    if name == "integrated_gradients":
        tried = [int(parameters["steps_requested"])]
        while tried[-1] < int(parameters["steps"]):
            tried.append(tried[-1] * 2)
        chunk_bytes = int(gradients.DEFAULT_GRADIENT_CHUNK_BYTES)
        parts = [
            _gradient(model, n * steps, gradients.rows_per_chunk(row_shape, chunk_bytes, steps) * steps)
            for steps in tried
        ]
        parts.append(_forward(model, 2 * n, forward_rows))
        steps_text = "+".join(str(s) for s in tried)
        return f"N*S fwd+bwd + 2N fwd, N={n}, S={steps_text}", parts
    if name == "gradient_shap":
        draws, background = int(parameters["n_draws"]), int(parameters["background_size"])
        outputs = model.predict(X, verbose=0).reshape(n, -1)
        # F of the background is computed once per distinct explained class (regression: one)
        classes = len(np.unique(outputs.argmax(axis=1))) if outputs.shape[1] > 1 else 1
        per_chunk = gradients.rows_per_chunk(row_shape, gradients.DEFAULT_GRADIENT_CHUNK_BYTES, draws)
        description = f"N*M fwd+bwd + N fwd + C*B fwd, N={n}, M={draws}, B={background}, C={classes}"
        return description, [
            _gradient(model, n * draws, per_chunk * draws),
            _forward(model, n, forward_rows),
            _forward(model, classes * background, forward_rows),
        ]
    if name in ("saliency", "gradient_x_input"):
        return f"N fwd+bwd, N={n}", [_gradient(model, n, gradient_rows)]
    if name == "grad_cam":
        layer = str(parameters["layer"])
        return f"N fwd+bwd to layer {layer}, N={n}", [_gradient(model, n, gradient_rows, layer=layer)]
    if name == "sensitivity_sweep":
        pivots, quantiles, features = int(parameters["n_rows"]), int(parameters["n_quantiles"]), X.shape[-1]
        rows = pivots * quantiles * features
        description = f"rows*Q*F = {pivots}*{quantiles}*{features} forward rows"
        return description, [_forward(model, rows, copy_calls(pivots, quantiles * features, forward_rows))]
    return None


def copy_calls(n_samples: int, n_copies: int, rows_per_call: int) -> list[int]:
    """Rows of each model call when `n_copies` copies of `n_samples` rows are scored as
    `audit.forward.copies_by_chunk` groups them."""
    if n_samples <= rows_per_call:
        per_call = rows_per_call // n_samples
        return [min(per_call, n_copies - start) * n_samples for start in range(0, n_copies, per_call)]
    split = [rows.stop - rows.start for rows in forward.row_chunks(n_samples, rows_per_call)]
    return split * n_copies


def _forward(model: keras.Model, rows: int, rows_per_call: int | list[int]) -> FloorPart:
    largest = max(rows_per_call) if isinstance(rows_per_call, list) else min(rows, rows_per_call)
    return FloorPart("forward", rows, largest, prepare_forward(model, rows, rows_per_call))


def _gradient(model: keras.Model, rows: int, rows_per_call: int, layer: str | None = None) -> FloorPart:
    run = prepare_gradient(model, rows, rows_per_call, layer=layer)
    return FloorPart("forward+backward", rows, min(rows, rows_per_call), run, layer)


if __name__ == "__main__":
    main()
