"""Gradient saliency: the mean |gradient| of the target per feature (with its signed mean as the
direction), and mean |gradient x input|.

Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional Networks", ICLR workshop: the
saliency of an input element is the magnitude of dF/dx (also Captum's ``Saliency`` default,
``abs=True``). Two methods share one gradient pass:

- ``saliency`` (method version 2): mean |dF/dx| over samples and steps. The signed mean dF/dx (the
  "gradient importance" of the PM2.5 write-up, seed 000, and this method's version 1) is kept as
  its `direction`: positive when the feature pushes the output up. Signs cancel in a signed mean:
  on an LSTM whose output is the product of two inputs (seed 002's task), an input the model relies
  on scored -0.0037 +- 0.0037, 3.4x an input it ignores, where the magnitude does not cancel. For a
  linear model the value is |w| and the direction w.
- ``gradient_x_input``: mean |dF/dx * x| over samples and steps, the first-order contribution of
  each feature's actual values (Shrikumar et al. 2016).

For sequences the profile (n_steps, n_features) keeps the mean over samples only (of |dF/dx| for
saliency).
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from audit.forward import row_chunks
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk, target_gradients
from audit.methods.base import (
    ElementSummary,
    MethodContext,
    MethodNotApplicable,
    per_sample_importance,
    register_method,
    standard_error,
)
from audit.options import NoOptions
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance

#: Version of `saliency`'s definition: 1 was the signed mean gradient, 2 the mean |gradient|.
SALIENCY_VERSION = 2


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
    """Mean |gradient| per feature, its signed mean as the direction, profile over time for sequences.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ignored
    target : which scalar per sample is differentiated (see audit/targets.py).

    Returns
    -------
    Importance
        ``values`` (n_features,) mean |dF/dx|; ``std`` its standard error over samples;
        ``direction`` (n_features,) the mean dF/dx (signed); ``profile`` (n_steps, n_features) the
        mean |dF/dx| over samples, for sequences; ``method_version`` `SALIENCY_VERSION`.
    """
    _check_names(X, feature_names)
    magnitude = ElementSummary(len(X), tuple(X.shape[1:]))
    signed = np.empty((len(X), X.shape[-1]))  # each sample's mean gradient (over steps): no profile
    for rows, gradient in _gradient_chunks(model, X, target, chunk_bytes):
        magnitude.add(rows, np.abs(gradient))
        signed[rows] = per_sample_importance(gradient)
    return Importance(
        method="saliency",
        feature_names=feature_names,
        values=magnitude.values,
        std=magnitude.std,
        profile=magnitude.profile,
        parameters={
            "target": target.describe(),
            "n_samples": magnitude.n_samples,
            # the signed mean's own standard error: how sure its sign is
            "direction_std": [float(v) for v in standard_error(signed)],
        },
        method_version=SALIENCY_VERSION,
        direction=np.asarray(signed.mean(axis=0), np.float64),
    )


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
    summary = _summary_or_skip(model, X, feature_names, target, chunk_bytes)
    return Importance(
        method="gradient_x_input",
        feature_names=feature_names,
        values=summary.values,
        std=summary.std,
        profile=summary.profile,
        parameters={"target": target.describe(), "n_samples": summary.n_samples},
    )


def _check_names(X: FloatArray, feature_names: tuple[str, ...]) -> None:
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")


def _summary_or_skip(
    model: keras.Model,
    X: FloatArray,
    feature_names: tuple[str, ...],
    target: OutputTarget,
    chunk_bytes: int,
) -> ElementSummary:
    """|dF/dx * x| reduced chunk by chunk: the full per-element array is never held."""
    _check_names(X, feature_names)
    summary = ElementSummary(len(X), tuple(X.shape[1:]))
    for rows, gradient in _gradient_chunks(model, X, target, chunk_bytes):
        summary.add(rows, np.abs(gradient * X[rows]))
    return summary


@register_method(
    "saliency",
    needs_eval_sample=True,
    description="mean |gradient| of the output per feature (signed mean kept as the direction)",
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
