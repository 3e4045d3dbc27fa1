"""1-D Grad-CAM: which time steps the last convolution's evidence comes from.

Selvaraju et al. (2017), "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV, applied to a Conv1D layer as in the PM2.5 write-up (seed 000) and for the
1-D CNNs of seed 004. For the last Conv1D layer (or the one named by the ``layer`` option) with
activations A (n_samples, t', channels):

- channel weights alpha_c = mean over t' of dF/dA[:, :, c] (F: the target scalar, audit/targets.py);
- map = ReLU(sum_c alpha_c A[:, :, c]), shape (n_samples, t');
- the map is linearly upsampled to the input length (cell centres aligned) and averaged over samples.

The result is a time profile for all features at once (profile column "*"), not a per-feature
importance; it is stored in the profiles table. Maps are not normalised per sample (the write-up
scales each to [0, 1] for display): raw maps stay comparable from week to week.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import keras
import numpy as np
import tensorflow as tf

from audit.forward import as_float32, input_spec, model_traces, row_chunks
from audit.gradients import DEFAULT_GRADIENT_CHUNK_BYTES, rows_per_chunk
from audit.methods.base import MethodContext, MethodNotApplicable, register_method
from audit.options import Text, option
from audit.targets import REGRESSION_TARGET, OutputTarget, check_class_index, chosen_classes, scalar_output
from audit.types import FloatArray, Importance

ALL_FEATURES = "*"


@dataclass(frozen=True)
class GradCamOptions:
    """``[methods.grad_cam]`` in audit.toml."""

    layer: str | None = option(
        None,
        Text(),
        doc="name of the Conv1D layer to explain; a name the model lacks skips the method, saying so",
        default_doc="the last Conv1D",
    )


def compute_grad_cam(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    target: OutputTarget = REGRESSION_TARGET,
    layer_name: str | None = None,
    chunk_bytes: int = DEFAULT_GRADIENT_CHUNK_BYTES,
) -> Importance:
    """Mean Grad-CAM map over samples, upsampled to the input's time steps.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_steps, n_features)
    y : ignored
    target : which scalar per sample is explained.
    layer_name : the Conv1D layer to explain (default: the last Conv1D of the model).

    Returns
    -------
    Importance
        Profile-only: ``profile`` (n_steps, 1) with column "*", no per-feature values.
    """
    if X.ndim != 3:
        raise MethodNotApplicable("grad_cam needs sequence input (n_samples, n_steps, n_features)")
    layer = _conv_layer(model, layer_name)
    check_class_index(model, target)
    maps_of = _traced_maps(model, layer, target)
    # Upsampling is linear, so the mean of the upsampled maps is the upsampled mean map.
    map_sum: FloatArray = np.zeros(0)
    for rows in row_chunks(len(X), rows_per_chunk(X.shape[1:], chunk_bytes)):
        maps = maps_of(as_float32(X[rows])).numpy().astype(np.float64)  # (n_rows, t')
        map_sum = maps.sum(axis=0) + (map_sum if map_sum.size else 0.0)
    mean_map = map_sum / len(X)
    return Importance(
        method="grad_cam",
        feature_names=(),
        values=np.zeros(0),
        profile=upsample(mean_map[np.newaxis], X.shape[1])[0][:, np.newaxis],
        profile_features=(ALL_FEATURES,),
        parameters={
            "layer": layer.name,
            "layer_steps": int(mean_map.shape[0]),
            "target": target.describe(),
            "n_samples": int(X.shape[0]),
        },
    )


def upsample(maps: FloatArray, length: int) -> FloatArray:
    """Linear interpolation of (n, t') maps to (n, length), aligning the centres of the cells."""
    source = maps.shape[1]
    positions = np.clip((np.arange(length) + 0.5) * source / length - 0.5, 0, source - 1)
    left = np.floor(positions).astype(int)
    right = np.minimum(left + 1, source - 1)
    fraction = positions - left
    return np.asarray(maps[:, left] * (1 - fraction) + maps[:, right] * fraction, dtype=np.float64)


def _conv_layer(model: keras.Model, layer_name: str | None) -> keras.layers.Layer:
    if layer_name is not None:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise MethodNotApplicable(f"no layer named {layer_name!r} in the model") from None
        if not isinstance(layer, keras.layers.Conv1D):
            raise MethodNotApplicable(f"layer {layer_name!r} is a {type(layer).__name__}, not a Conv1D")
        return layer
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    if not convolutions:
        raise MethodNotApplicable("the model has no Conv1D layer (grad_cam explains a 1-D convolution)")
    return convolutions[-1]


def _traced_maps(
    model: keras.Model, layer: keras.layers.Layer, target: OutputTarget
) -> Callable[[tf.Tensor], tf.Tensor]:
    """One traced function per (model, layer, target), kept on the model: the ReLU'd, channel-weighted
    activation map per sample, (n, t')."""
    traces = model_traces(model)
    key = ("grad_cam", layer.name, target)
    if key not in traces:
        probe = keras.Model(model.inputs, [layer.output, model.outputs[0]])
        maps = functools.partial(_maps, probe, target)
        traces[key] = tf.function(maps, input_signature=[input_spec(model)])
    return cast(Callable[[tf.Tensor], tf.Tensor], traces[key])


def _maps(probe: keras.Model, target: OutputTarget, x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        activations, outputs = probe(x, training=False)
        ids = tf.stop_gradient(chosen_classes(outputs, target))  # each sample's class, chosen on it
        value = scalar_output(outputs, ids, target)
    gradients = tape.gradient(value, activations)  # (n, t', channels)
    weights = tf.reduce_mean(gradients, axis=1)  # (n, channels)
    # sum_c weights[:, c] * A[:, :, c] as one batched matrix-vector product (no (n, t', c) temporary)
    return tf.nn.relu(tf.linalg.matvec(activations, weights))


@register_method(
    "grad_cam",
    needs_eval_sample=True,
    description="1-D Grad-CAM time profile of the last Conv1D layer",
    options=GradCamOptions,
)
def _grad_cam(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[GradCamOptions]
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_grad_cam(model, X, target=context.target, layer_name=context.options.layer)
