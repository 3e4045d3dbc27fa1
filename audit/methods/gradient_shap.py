"""GradientSHAP (expected gradients): integrated gradients averaged over baselines drawn from the data.

Erion, Janizek, Sturmfels, Lundberg & Lee (2021), "Improving performance of deep learning models
with axiomatic attribution priors and expected gradients", Nature Machine Intelligence; the
estimator of SHAP's ``GradientExplainer`` and Captum's ``GradientShap``. The attribution of input
element i of sample x is

    phi_i(x) = E_{b ~ D, t ~ U(0, 1)} [ (x_i - b_i) * dF(b + t (x - b))/dx_i ]

with D the background: `background_size` rows drawn (without replacement, seeded) from the eval
sample itself. It is estimated with `n_draws` draws of (b, t) per sample, all of a chunk's draws in
one model call (audit/gradients.py), chunked under the same memory budget as integrated gradients.

Additivity: the attributions of a sample sum, in expectation, to F(x) - E_b F(b), the SHAP
efficiency property. The per-sample gap ``sum_i phi_i - (F(x) - mean_k F(b_k))`` over the sample's
own drawn baselines is always computed and stored, like IG's completeness delta: it is the Monte
Carlo error of the draws of t, and falls as 1/sqrt(n_draws).

Per-feature importance = mean |phi| over samples (and time steps), the ranking SageMaker Clarify
and Vertex AI monitor; for sequences the profile (n_steps, n_features) is the mean |phi| over
samples. The result's nDCG against the previous drop is Clarify's attribution-drift figure
(`audit.compare.ndcg`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt

from audit.forward import as_float32, row_chunks
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, TargetGradients, rows_per_chunk, target_gradients
from audit.methods.base import ElementSummary, MethodContext, MethodNotApplicable, register_method
from audit.options import Interval, option
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance

DEFAULT_BACKGROUND_SIZE = 100
DEFAULT_DRAWS = 32


@dataclass(frozen=True)
class GradientShapOptions:
    """``[methods.gradient_shap]`` in audit.toml."""

    background_size: int = option(
        DEFAULT_BACKGROUND_SIZE,
        Interval(int, low=1),
        doc="rows of the eval sample drawn as the background the baselines come from (all rows "
        "when it has no more)",
    )
    n_draws: int = option(
        DEFAULT_DRAWS,
        Interval(int, low=1),
        doc="(baseline, point on the path) draws per sample; the additivity gap falls as 1/sqrt(n_draws)",
    )
    seed: int | None = option(
        None,
        Interval(int, low=0),
        doc="seed of the background and the draws",
        default_doc="the run's `random_state`",
    )


@dataclass(frozen=True)
class Draws:
    """Which background row and which point on the path each draw of each sample uses."""

    rows: npt.NDArray[np.int64]  # (n_samples, n_draws) index into the background
    alphas: npt.NDArray[np.float32]  # (n_samples, n_draws) in [0, 1)


def draw(n_samples: int, n_background: int, n_draws: int, rng: np.random.Generator) -> Draws:
    """All draws at once, so the figures do not depend on how the samples are chunked."""
    rows = rng.integers(0, n_background, size=(n_samples, n_draws))
    alphas = rng.random((n_samples, n_draws), dtype=np.float32)
    return Draws(rows=rows, alphas=alphas)


def background_rows(n_samples: int, size: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Rows of the sample drawn as the background: `size` of them without replacement, in sample
    order (all rows when there are no more)."""
    if size >= n_samples:
        return np.arange(n_samples)
    return np.sort(rng.choice(n_samples, size=size, replace=False))


def expected_gradients(
    model: keras.Model,
    X: FloatArray,
    background: FloatArray,
    *,
    target: OutputTarget = REGRESSION_TARGET,
    n_draws: int = DEFAULT_DRAWS,
    random_state: int | np.random.Generator | None = None,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> FloatArray:
    """Per-sample expected-gradients attributions against `background`, shaped like X (float64).

    Holds every attribution; `compute_gradient_shap` reduces chunk by chunk instead.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    background : ndarray, shape (n_background, ...) like X's rows: the baselines' distribution.
    n_draws : draws of (baseline, path point) per sample.
    """
    gradients = target_gradients(model, target)
    _, ids = gradients.value_and_classes(X)
    draws = draw(len(X), len(background), n_draws, np.random.default_rng(random_state))
    bg = np.asarray(background, np.float32)
    return np.concatenate([a for _, a in _attribution_chunks(gradients, X, bg, ids, draws, chunk_bytes)])


def compute_gradient_shap(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    background_size: int = DEFAULT_BACKGROUND_SIZE,
    n_draws: int = DEFAULT_DRAWS,
    random_state: int | np.random.Generator | None = None,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> Importance:
    """GradientSHAP importance per feature, with a profile over time for sequences.

    Parameters
    ----------
    model : keras.Model
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ignored (attributions explain the model output, not the loss)
    feature_names : tuple of str
    target : OutputTarget
        Which scalar per sample is explained (regression mean, predicted class, ...).
    background_size : rows of X drawn as the background (all of X when it has no more).
    n_draws : draws of (baseline, path point) per sample.
    random_state : seed of the background and the draws (stored with the figure when an int).
    chunk_bytes : memory budget of the model inputs of one call (n_draws points per sample).

    Returns
    -------
    Importance
        ``values`` (n_features,) mean |attribution|; ``std`` its standard error over samples;
        ``profile`` (n_steps, n_features) for sequences; ``parameters`` hold the background size,
        draws and seed, and the additivity gap (median and max, absolute and relative).
    """
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    if len(X) < 1:
        raise MethodNotApplicable("needs at least one eval sample")
    rng = np.random.default_rng(random_state)
    background = np.asarray(X[background_rows(len(X), background_size, rng)], np.float32)
    draws = draw(len(X), len(background), n_draws, rng)
    gradients = target_gradients(model, target)
    at_inputs, ids = gradients.value_and_classes(X)
    summary = ElementSummary(len(X), tuple(X.shape[1:]))
    sums = np.empty(len(X))
    for rows, attributions in _attribution_chunks(gradients, X, background, ids, draws, chunk_bytes):
        sums[rows] = attributions.reshape(len(attributions), -1).sum(axis=1)
        summary.add(rows, np.abs(attributions))
    at_baselines, expected_value = _baseline_values(gradients, background, ids, draws)
    gap = at_inputs - at_baselines
    deltas = sums - gap
    relative = np.abs(deltas) / np.maximum(np.abs(gap), 1e-12)
    return Importance(
        method="gradient_shap",
        feature_names=feature_names,
        values=summary.values,
        std=summary.std,
        profile=summary.profile,
        parameters={
            "background_size": len(background),
            "background_size_requested": background_size,
            "n_draws": n_draws,
            "seed": random_state if isinstance(random_state, int) else None,
            "target": target.describe(),
            "n_samples": int(X.shape[0]),
            "expected_value": expected_value,
            "additivity_median_abs_gap": float(np.median(np.abs(deltas))),
            "additivity_max_abs_gap": float(np.max(np.abs(deltas))),
            "additivity_median_rel_gap": float(np.median(relative)),
            "additivity_max_rel_gap": float(np.max(relative)),
        },
    )


def _attribution_chunks(
    gradients: TargetGradients,
    X: FloatArray,
    background: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int32],
    draws: Draws,
    chunk_bytes: int,
) -> Iterator[tuple[slice, FloatArray]]:
    """(rows, attributions of those rows) for consecutive chunks of X, one model call each."""
    n_draws = draws.rows.shape[1]
    background_tensor = as_float32(background)  # sent to the device once; gathered from in the graph
    for rows in row_chunks(len(X), rows_per_chunk(X.shape[1:], chunk_bytes, points_per_row=n_draws)):
        # draw-major, as the traced function expects: draw k of the chunk's sample i is entry k * c + i
        baseline_rows = draws.rows[rows].T.reshape(-1).astype(np.int32)
        alphas = draws.alphas[rows].T.reshape(-1)
        yield rows, gradients.expected(X[rows], background_tensor, baseline_rows, ids[rows], alphas)


def _baseline_values(
    gradients: TargetGradients,
    background: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int32],
    draws: Draws,
) -> tuple[FloatArray, float | None]:
    """Each sample's mean F over its own drawn baselines (for its class), and the background's mean
    F when every sample explains the same class (regression: the SHAP expected value), else None.

    F of the background is computed once per distinct class row, not once per draw.
    """
    classes, which = np.unique(ids, axis=0, return_inverse=True)
    table = np.stack(
        [gradients.value(background, np.tile(row, (len(background), 1)).astype(np.int32)) for row in classes]
    )  # (n_classes, n_background)
    per_sample = table[which.reshape(-1)[:, None], draws.rows].mean(axis=1)
    expected_value = float(table[0].mean()) if len(classes) == 1 else None
    return np.asarray(per_sample, np.float64), expected_value


@register_method(
    "gradient_shap",
    needs_eval_sample=True,
    description="mean |GradientSHAP (expected gradients)| per feature, baselines drawn from the eval "
    "sample (profile over time for sequences)",
    options=GradientShapOptions,
)
def _gradient_shap(
    model: keras.Model,
    X: FloatArray | None,
    y: FloatArray | None,
    context: MethodContext[GradientShapOptions],
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    options = context.options
    return compute_gradient_shap(
        model,
        X,
        feature_names=context.feature_names,
        target=context.target,
        background_size=options.background_size,
        n_draws=options.n_draws,
        random_state=context.random_state if options.seed is None else options.seed,
    )
