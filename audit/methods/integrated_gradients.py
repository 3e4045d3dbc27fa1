"""Integrated gradients with a completeness check, and time x feature profiles for sequences.

Sundararajan, Taly & Yan (2017), "Axiomatic Attribution for Deep Networks", ICML. The attribution
of input element i is (x_i - b_i) * integral_0^1 dF(b + a (x - b))/dx_i da, with F the target
scalar (see audit/targets.py) and b a baseline. The integral is computed with `steps` nodes of
Gauss-Legendre quadrature on [0, 1] (default: exact for polynomials of degree 2 * steps - 1, so
far fewer nodes than a Riemann sum for smooth models) or the Riemann-trapezoid rule.

Completeness: the attributions of a sample sum to F(x) - F(b). The per-sample delta between the
two is always computed; when its median relative size exceeds `tolerance`, the steps are doubled
(up to `max_steps`) and the figures recomputed, and the result records that it did.

Per-feature importance = mean absolute attribution over samples (and time steps); for sequence
input (n_samples, n_steps, n_features) the profile (n_steps, n_features) is the mean absolute
attribution over samples: which lags of which feature the model relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
import numpy.typing as npt

from audit.forward import row_chunks
from audit.gradients import (
    DEFAULT_GRADIENT_CHUNK_BYTES,
    TargetGradients,
    rows_per_chunk,
    target_gradients,
)
from audit.methods.base import ElementSummary, MethodContext, MethodNotApplicable, register_method
from audit.options import Choices, Interval, option
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance

Rule = Literal["gauss_legendre", "trapezoid"]
BaselineKind = Literal["zeros", "mean"]
DEFAULT_STEPS = 32
DEFAULT_MAX_STEPS = 256
DEFAULT_TOLERANCE = 0.01


@dataclass(frozen=True)
class IntegratedGradientsOptions:
    """``[methods.integrated_gradients]`` in audit.toml."""

    baseline: BaselineKind = option(
        "zeros",
        Choices(("zeros", "mean")),
        doc='where the path starts: all zeros, or "mean" (each feature\'s mean over the sample, '
        "at every step)",
    )
    rule: Rule = option(
        "gauss_legendre",
        Choices(("gauss_legendre", "trapezoid")),
        doc="quadrature rule of the path integral",
    )
    steps: int = option(DEFAULT_STEPS, Interval(int, low=2), doc="quadrature nodes to start with")
    tolerance: float = option(
        DEFAULT_TOLERANCE,
        Interval(float, low=0.0),
        doc="median relative completeness delta above which the steps are doubled",
    )
    max_steps: int = option(
        DEFAULT_MAX_STEPS,
        Interval(int, low=2),
        doc="cap on that doubling: steps are never raised above it",
    )


@dataclass(frozen=True)
class Completeness:
    """How far attributions are from summing to F(x) - F(baseline), per sample and in summary."""

    deltas: FloatArray  # (n_samples,) sum of attributions - (F(x) - F(baseline))
    relative: FloatArray  # (n_samples,) |delta| / |F(x) - F(baseline)|

    @property
    def median_relative(self) -> float:
        return float(np.median(self.relative))


def quadrature(steps: int, rule: Rule) -> tuple[FloatArray, FloatArray]:
    """Nodes in [0, 1] and weights (summing to 1) of the chosen rule with `steps` nodes."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if rule == "trapezoid":
        nodes = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2.0
        return nodes, weights
    raise ValueError(f"rule must be 'gauss_legendre' or 'trapezoid', got {rule!r}")


def compute_integrated_gradients(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    baseline: BaselineKind | FloatArray = "zeros",
    steps: int = DEFAULT_STEPS,
    rule: Rule = "gauss_legendre",
    tolerance: float = DEFAULT_TOLERANCE,
    max_steps: int = DEFAULT_MAX_STEPS,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> Importance:
    """Integrated-gradients importance per feature, with a profile over time for sequences.

    Parameters
    ----------
    model : keras.Model
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ignored (attributions explain the model output, not the loss)
    feature_names : tuple of str
    target : OutputTarget
        Which scalar per sample is explained (regression mean, predicted class, ...).
    baseline : "zeros", "mean" or ndarray
        "mean" is the per-feature mean of X (over samples and steps), broadcast to every step; an
        array has the shape of one sample or of X.
    steps, rule : quadrature nodes and rule ("gauss_legendre" or "trapezoid").
    tolerance : median relative completeness delta above which steps are doubled.
    max_steps : cap on the doubling.
    chunk_bytes : memory budget of the path points of one model call.

    Returns
    -------
    Importance
        ``values`` (n_features,) mean |attribution|; ``profile`` (n_steps, n_features) for
        sequences; ``parameters`` hold the rule, the steps used, whether they were raised, and the
        completeness delta (median and max, absolute and relative).
    """
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    baseline_rows = _baseline(X, baseline)
    gradients = target_gradients(model, target)
    at_inputs, ids = gradients.value_and_classes(X)  # the class of each sample, chosen on it
    at_baseline = [
        gradients.value(baseline_rows(rows), ids[rows])
        for rows in row_chunks(len(X), gradients.forward_rows(X))
    ]
    gap = at_inputs - np.concatenate(at_baseline)
    used = steps
    summary, completeness = _attribute(gradients, X, baseline_rows, ids, gap, used, rule, chunk_bytes)
    while completeness.median_relative > tolerance and used * 2 <= max_steps:
        used *= 2
        summary, completeness = _attribute(gradients, X, baseline_rows, ids, gap, used, rule, chunk_bytes)
    return Importance(
        method="integrated_gradients",
        feature_names=feature_names,
        values=summary.values,
        std=summary.std,
        profile=summary.profile,
        parameters={
            "baseline": baseline if isinstance(baseline, str) else "given",
            "rule": rule,
            "steps_requested": steps,
            "steps": used,
            "steps_raised": used != steps,
            "tolerance": tolerance,
            "max_steps": max_steps,
            "target": target.describe(),
            "n_samples": int(X.shape[0]),
            "completeness_median_abs_delta": float(np.median(np.abs(completeness.deltas))),
            "completeness_max_abs_delta": float(np.max(np.abs(completeness.deltas))),
            "completeness_median_rel_delta": completeness.median_relative,
            "completeness_max_rel_delta": float(np.max(completeness.relative)),
        },
    )


BaselineRows = Callable[[slice], npt.NDArray[np.float32]]


def _baseline(X: FloatArray, baseline: BaselineKind | FloatArray) -> BaselineRows:
    """The baseline of the samples `rows`, as float32 (n_rows, ...), built chunk by chunk."""
    row_shape = tuple(X.shape[1:])

    def repeated(row: npt.NDArray[np.float32]) -> BaselineRows:
        return lambda rows: np.broadcast_to(row, (rows.stop - rows.start, *row_shape))

    if isinstance(baseline, str):
        if baseline == "zeros":
            return repeated(np.zeros(row_shape, np.float32))
        if baseline == "mean":
            mean = X.reshape(-1, X.shape[-1]).mean(axis=0, dtype=np.float64).astype(np.float32)
            return repeated(np.ascontiguousarray(np.broadcast_to(mean, row_shape)))
        raise ValueError(f"baseline must be 'zeros', 'mean' or an array, got {baseline!r}")
    given = np.asarray(baseline, dtype=np.float32)
    if given.shape == X.shape:
        return lambda rows: given[rows]
    if given.shape == row_shape:
        return repeated(given)
    raise ValueError(f"baseline has shape {given.shape}; expected {row_shape} or {X.shape}")


def _attribute(
    gradients: TargetGradients,
    X: FloatArray,
    baseline_rows: BaselineRows,
    ids: npt.NDArray[np.int32],
    gap: FloatArray,
    steps: int,
    rule: Rule,
    chunk_bytes: int,
) -> tuple[ElementSummary, Completeness]:
    """Attributions chunk by chunk, reduced as they come: |a| per sample and feature (and its
    profile over steps), and the sum of each sample's attributions for the completeness delta."""
    nodes, weights = quadrature(steps, rule)
    summary = ElementSummary(len(X), tuple(X.shape[1:]))
    sums = np.empty(len(X))
    for rows in row_chunks(len(X), rows_per_chunk(X.shape[1:], chunk_bytes, points_per_row=steps)):
        attributions = gradients.integrated(X[rows], baseline_rows(rows), ids[rows], nodes, weights)
        sums[rows] = attributions.reshape(len(attributions), -1).sum(axis=1)
        summary.add(rows, np.abs(attributions))
    deltas = sums - gap
    relative = np.abs(deltas) / np.maximum(np.abs(gap), 1e-12)
    return summary, Completeness(deltas=deltas, relative=relative)


@register_method(
    "integrated_gradients",
    needs_eval_sample=True,
    description="mean |integrated gradients| per feature (profile over time for sequences)",
    options=IntegratedGradientsOptions,
)
def _integrated_gradients(
    model: keras.Model,
    X: FloatArray | None,
    y: FloatArray | None,
    context: MethodContext[IntegratedGradientsOptions],
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    options = context.options
    return compute_integrated_gradients(
        model,
        X,
        feature_names=context.feature_names,
        target=context.target,
        baseline=options.baseline,
        steps=options.steps,
        rule=options.rule,
        tolerance=options.tolerance,
        max_steps=options.max_steps,
    )
