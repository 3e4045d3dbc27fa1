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

import keras
import numpy as np

from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk, target_gradients
from audit.methods.base import (
    MethodContext,
    MethodNotApplicable,
    per_sample_importance,
    register_method,
    standard_error,
)
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance


def input_gradients(
    model: keras.Model,
    X: FloatArray,
    target: OutputTarget,
    *,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> FloatArray:
    """dF/dx of the target scalar for every sample, shaped like X."""
    inputs = X.astype(np.float32)
    gradients = target_gradients(model, target)
    rows = rows_per_chunk(inputs.shape[1:], chunk_bytes)
    return np.concatenate([gradients.gradient(inputs[s : s + rows])[1] for s in range(0, len(inputs), rows)])


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
    gradient = _gradients_or_skip(model, X, feature_names, target, chunk_bytes)
    return _summarise("saliency", gradient, feature_names, target, signed=True)


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
    gradient = _gradients_or_skip(model, X, feature_names, target, chunk_bytes)
    return _summarise("gradient_x_input", np.abs(gradient * X), feature_names, target, signed=False)


def _gradients_or_skip(
    model: keras.Model, X: FloatArray, feature_names: tuple[str, ...], target: OutputTarget, chunk_bytes: int
) -> FloatArray:
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    return input_gradients(model, X, target, chunk_bytes=chunk_bytes)


def _summarise(
    method: str,
    per_element: FloatArray,
    feature_names: tuple[str, ...],
    target: OutputTarget,
    *,
    signed: bool,
) -> Importance:
    flat = per_element.reshape(-1, per_element.shape[-1])
    return Importance(
        method=method,
        feature_names=feature_names,
        values=flat.mean(axis=0),
        std=standard_error(per_sample_importance(per_element)),
        profile=per_element.mean(axis=0) if per_element.ndim == 3 else None,
        parameters={"target": target.describe(), "n_samples": int(per_element.shape[0])},
        signed=signed,
    )


@register_method("saliency", needs_eval_sample=True, description="mean gradient of the output per feature")
def _saliency(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_saliency(model, X, feature_names=context.feature_names, target=context.target)


@register_method(
    "gradient_x_input", needs_eval_sample=True, description="mean |gradient x input| per feature"
)
def _gradient_x_input(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_gradient_x_input(model, X, feature_names=context.feature_names, target=context.target)
