"""Sensitivity sweep: how far the explained output moves when one feature sweeps its range.

The retrain-free "pivot" check of seed 003, in the form of individual conditional expectation
curves (Goldstein, Kapelner, Bleich & Pitkin (2015), "Peeking Inside the Black Box: Visualizing
Statistical Learning With Plots of Individual Conditional Expectation", Journal of Computational
and Graphical Statistics 24(1), 44-65): take `n_rows` rows of the eval sample as pivots; for each
feature f set f, at every time step, to each of `n_quantiles` quantiles of f's distribution over
the eval sample (all samples and steps), the other features staying as they are in the row; the
row's spread is the max - min of the explained scalar (see `audit.targets`) across the quantiles.
The value is the mean spread over rows, `std` its standard deviation over rows.

The quantile levels run evenly from 5 % to 95 % by default (the range scikit-learn's partial
dependence grids use), so a single extreme value does not set the sweep's width. For
classification the class explained for a row is the one the model predicts on the unmodified row,
kept fixed across the sweep.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from audit.forward import DEFAULT_CHUNK_BYTES
from audit.methods.base import MethodContext, MethodNotApplicable, register_method
from audit.targets import REGRESSION_TARGET, OutputTarget, class_ids, scalar_output
from audit.types import FloatArray, Importance

DEFAULT_PERCENTILES = (0.05, 0.95)


def compute_sensitivity_sweep(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    n_rows: int = 200,
    n_quantiles: int = 7,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    random_state: int | np.random.Generator | None = None,
    batch_size: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Importance:
    """Mean spread of the explained output when one feature is set to each of its quantiles.

    Parameters
    ----------
    model : keras.Model
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ndarray, optional
        Unused (the sweep reads outputs only); accepted for the shared signature.
    feature_names : tuple of str
        One name per feature (last axis of X).
    target : OutputTarget
        Which scalar per row is swept (regression mean or output, class probability).
    n_rows : int
        Pivot rows, drawn without replacement (all rows when X has no more than this).
    n_quantiles : int
        Values per feature: quantiles at levels evenly spaced over `percentiles` (>= 2).
    percentiles : pair of float
        Lowest and highest quantile level, 0 <= low < high <= 1.
    random_state : int, Generator or None
        Converted once with ``np.random.default_rng``; used to draw the pivot rows.
    batch_size : int, optional
        Rows per model call (default: every copy of a chunk in one call).
    chunk_bytes : int
        Memory budget for the swept copies of the pivot rows built at once.

    Returns
    -------
    Importance
        ``values`` (n_features,) mean over rows of max - min across quantiles; ``std`` over rows
        (ddof 1).

    References
    ----------
    Goldstein, Kapelner, Bleich & Pitkin (2015), J. Computational and Graphical Statistics 24(1),
    44-65.
    """
    low, high = _check_options(n_rows, n_quantiles, percentiles)
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    rng = np.random.default_rng(random_state)
    n_features = X.shape[-1]
    levels = np.linspace(low, high, n_quantiles)
    grid = np.quantile(X.reshape(-1, n_features), levels, axis=0).T  # (n_features, n_quantiles)
    rows = X if X.shape[0] <= n_rows else X[np.sort(rng.choice(X.shape[0], size=n_rows, replace=False))]
    rows32 = rows.astype(np.float32)
    ids = class_ids(_outputs(model, rows32, batch_size, chunk_bytes), target)  # fixed for the sweep
    swept = np.empty((n_features, n_quantiles, rows.shape[0]))
    scalar_of = _ScalarFunction(model, target, rows32.shape[1:], ids.shape[1])
    jobs = [(f, q) for f in range(n_features) for q in range(n_quantiles)]
    for chunk_jobs, stacked in _swept_copies(rows32, grid, jobs, chunk_bytes):
        values = scalar_of(stacked.reshape(-1, *rows32.shape[1:]), ids, batch_size)
        for (feature, quantile), row_values in zip(
            chunk_jobs, values.reshape(len(chunk_jobs), -1), strict=True
        ):
            swept[feature, quantile] = row_values
    spreads = swept.max(axis=1) - swept.min(axis=1)  # (n_features, n_rows)
    n_used = rows.shape[0]
    return Importance(
        method="sensitivity_sweep",
        feature_names=feature_names,
        values=spreads.mean(axis=1),
        std=spreads.std(axis=1, ddof=1) if n_used > 1 else np.zeros(n_features),
        parameters={
            "n_rows": int(n_used),
            "n_quantiles": n_quantiles,
            "quantile_levels": [float(level) for level in levels],
            "random_state": random_state if isinstance(random_state, int) else None,
            "target": target.describe(),
            "score": "mean_spread_over_rows",
            "n_samples": int(X.shape[0]),
        },
    )


def _check_options(n_rows: int, n_quantiles: int, percentiles: Sequence[float]) -> tuple[float, float]:
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if n_quantiles < 2:
        raise ValueError(f"n_quantiles must be >= 2 (a spread needs two values), got {n_quantiles}")
    if len(percentiles) != 2 or not 0.0 <= percentiles[0] < percentiles[1] <= 1.0:
        raise ValueError(
            f"percentiles must be [low, high] with 0 <= low < high <= 1, got {list(percentiles)}"
        )
    return float(percentiles[0]), float(percentiles[1])


def _outputs(
    model: keras.Model, rows: npt.NDArray[np.float32], batch_size: int | None, chunk_bytes: int
) -> FloatArray:
    """Model outputs of the unmodified rows, in their own shape (n_rows, ...), for `class_ids`."""
    row_bytes = max(1, rows[:1].nbytes)
    step = max(1, batch_size if batch_size is not None else chunk_bytes // row_bytes)
    chunks = [
        np.asarray(model(rows[start : start + step], training=False)) for start in range(0, len(rows), step)
    ]
    return np.concatenate(chunks).astype(np.float64)


def _swept_copies(
    rows: npt.NDArray[np.float32], grid: FloatArray, jobs: list[tuple[int, int]], chunk_bytes: int
) -> Iterator[tuple[list[tuple[int, int]], npt.NDArray[np.float32]]]:
    """Copies of the pivot rows with feature f set to its quantile q (every step), one per job.

    Yields the jobs of one chunk and their copies, shape (n_jobs, *rows.shape).
    """
    copies_per_chunk = max(1, chunk_bytes // max(1, rows.nbytes))
    for start in range(0, len(jobs), copies_per_chunk):
        chunk_jobs = jobs[start : start + copies_per_chunk]
        stacked = np.repeat(rows[np.newaxis], len(chunk_jobs), axis=0)
        for index, (feature, quantile) in enumerate(chunk_jobs):
            stacked[index, ..., feature] = grid[feature, quantile]
        yield chunk_jobs, stacked


class _ScalarFunction:
    """The explained scalar per row, model and `scalar_output` in one traced function.

    Copies of the pivot rows come in job-major order, so the class ids of the rows are tiled to
    match: row i of copy c uses the ids of pivot row i.
    """

    def __init__(
        self, model: keras.Model, target: OutputTarget, row_shape: tuple[int, ...], n_ids: int
    ) -> None:
        specs = [
            tf.TensorSpec(shape=(None, *row_shape), dtype=tf.float32),
            tf.TensorSpec(shape=(None, n_ids), dtype=tf.int32),
        ]
        # A partial (not a lambda), as in `Predictor`: one trace per model, no retracing warnings.
        self._call = tf.function(functools.partial(_explained, model, target), input_signature=specs)

    def __call__(
        self, inputs: npt.NDArray[np.float32], ids: npt.NDArray[np.int32], batch_size: int | None
    ) -> FloatArray:
        n_rows = ids.shape[0]
        tiled = np.tile(ids, (inputs.shape[0] // n_rows, 1))
        step = inputs.shape[0] if batch_size is None else max(1, batch_size)
        chunks = [
            self._call(
                tf.constant(inputs[start : start + step]), tf.constant(tiled[start : start + step])
            ).numpy()
            for start in range(0, inputs.shape[0], step)
        ]
        return np.concatenate(chunks).astype(np.float64)


def _explained(model: keras.Model, target: OutputTarget, x: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return scalar_output(model(x, training=False), ids, target)


@register_method(
    "sensitivity_sweep",
    needs_eval_sample=True,
    description="mean spread of the explained output when one feature sweeps its 5-95% quantiles",
)
def _sensitivity_sweep(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    percentiles = context.option("percentiles", list(DEFAULT_PERCENTILES), list)
    if not all(isinstance(level, int | float) and not isinstance(level, bool) for level in percentiles):
        raise ValueError(f"option percentiles must be two numbers [low, high], got {percentiles!r}")
    return compute_sensitivity_sweep(
        model,
        X,
        y,
        feature_names=context.feature_names,
        target=context.target,
        n_rows=context.option("n_rows", 200, int),
        n_quantiles=context.option("n_quantiles", 7, int),
        percentiles=[float(level) for level in percentiles],
        random_state=context.random_state,
    )
