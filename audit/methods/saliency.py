"""Gradient saliency: the mean gradient of the target per feature, and mean |gradient x input|.

Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional Networks", ICLR workshop; the
per-feature mean over samples and time steps is the "gradient importance" of the PM2.5 write-up
(seed 000). Two methods share one gradient pass:

- ``saliency``: mean gradient dF/dx over samples and steps, signed (a feature that lowers the
  output has a negative value; features are ranked by magnitude). For a linear model it is w.
- ``gradient_x_input``: mean |dF/dx * x| over samples and steps, the first-order contribution of
  each feature's actual values (Shrikumar et al. 2016).

For sequences the profile (n_steps, n_features) keeps the mean over samples only.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from audit.forward import row_chunks
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk, target_gradients
from audit.methods.base import ElementSummary, MethodContext, MethodNotApplicable, register_method
from audit.options import NoOptions
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance


def input_gradients(
    model: keras.Model,
    X: FloatArray,
    target: OutputTarget,
    *,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> FloatArray:
    """dF/dx of the target scalar for every sample, shaped like X (float64: holds all of it;
    the methods below reduce chunk by chunk instead)."""
    return np.concatenate([gradient for _, gradient in _gradient_chunks(model, X, target, chunk_bytes)])


def _gradient_chunks(
    model: keras.Model, X: FloatArray, target: OutputTarget, chunk_bytes: int
) -> Iterator[tuple[slice, FloatArray]]:
    """(rows, dF/dx of those rows) for consecutive chunks of X, one gradient call each."""
    gradients = target_gradients(model, target)
    for rows in row_chunks(len(X), rows_per_chunk(X.shape[1:], chunk_bytes)):
        yield rows, gradients.gradient(X[rows])[1]


def compute_saliency(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> Importance:
    """Mean gradient per feature (signed), profile over time for sequences.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ignored
    target : which scalar per sample is differentiated (see audit/targets.py).

    Returns
    -------
    Importance
        ``values`` (n_features,) mean dF/dx; ``std`` its standard error over samples;
        ``profile`` (n_steps, n_features) for sequences; ``signed=True``.
    """
    summary = _summary_or_skip(model, X, feature_names, target, chunk_bytes, times_input=False)
    return _result("saliency", summary, feature_names, target, signed=True)


def compute_gradient_x_input(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> Importance:
    """Mean |dF/dx * x| per feature, profile over time for sequences (shapes as `compute_saliency`)."""
    summary = _summary_or_skip(model, X, feature_names, target, chunk_bytes, times_input=True)
    return _result("gradient_x_input", summary, feature_names, target, signed=False)


def _summary_or_skip(
    model: keras.Model,
    X: FloatArray,
    feature_names: tuple[str, ...],
    target: OutputTarget,
    chunk_bytes: int,
    *,
    times_input: bool,
) -> ElementSummary:
    """dF/dx (or |dF/dx * x|) reduced chunk by chunk: the full per-element array is never held."""
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    summary = ElementSummary(len(X), tuple(X.shape[1:]))
    for rows, gradient in _gradient_chunks(model, X, target, chunk_bytes):
        summary.add(rows, np.abs(gradient * X[rows]) if times_input else gradient)
    return summary


def _result(
    method: str,
    summary: ElementSummary,
    feature_names: tuple[str, ...],
    target: OutputTarget,
    *,
    signed: bool,
) -> Importance:
    return Importance(
        method=method,
        feature_names=feature_names,
        values=summary.values,
        std=summary.std,
        profile=summary.profile,
        parameters={"target": target.describe(), "n_samples": summary.n_samples},
        signed=signed,
    )


@register_method(
    "saliency",
    needs_eval_sample=True,
    description="mean gradient of the output per feature",
    options=NoOptions,
)
def _saliency(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[NoOptions]
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_saliency(model, X, feature_names=context.feature_names, target=context.target)


@register_method(
    "gradient_x_input",
    needs_eval_sample=True,
    description="mean |gradient x input| per feature",
    options=NoOptions,
)
def _gradient_x_input(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[NoOptions]
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_gradient_x_input(model, X, feature_names=context.feature_names, target=context.target)
