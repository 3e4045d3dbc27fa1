"""Input-layer weight sums: sum of |W| over everything but the input-feature axis.

The figure teams compute by hand (seed 003): for the first layer that takes the input, add up the
absolute weights that connect each input feature to the layer. It reads weights only, so it runs
without an eval sample, and it is known to mislead for deep non-linear models (the other methods
exist for that reason). Kernel layouts: Dense (f, h) -> sum over h; Conv1D (k, f, c) -> over k and c;
SimpleRNN/LSTM/GRU input kernel (f, gates*h) -> over gates*h; Bidirectional adds both directions.

Layers that pass features through without mixing them (dropout, noise, masking, activations,
per-feature normalisation) are walked through to reach the first weighted layer; their names are
stored in the ``through`` parameter (`audit.keras_graph` lists them, and says why Garson and Olden
walk through fewer).
"""

from __future__ import annotations

import keras
import numpy as np

from audit.keras_graph import PASS_THROUGH_TO_FIRST_WEIGHTS, consumers
from audit.methods.base import MethodContext, MethodNotApplicable, register_method
from audit.options import NoOptions
from audit.types import FloatArray, Importance

_RECURRENT = (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU)


def compute_weight_sum(model: keras.Model, *, feature_names: tuple[str, ...]) -> Importance:
    """Sum of absolute first-layer weights per input feature.

    Parameters
    ----------
    model : keras.Model
        A single-input model whose input has shape (n_samples, n_features) or
        (n_samples, n_steps, n_features).
    feature_names : tuple of str
        One name per input feature (the last input axis).

    Returns
    -------
    Importance
        ``values`` (n_features,): sum of |W| of the connections leaving each feature.

    Raises
    ------
    MethodNotApplicable
        When the input feeds several layers, or the first weighted layer is of a kind whose
        kernel layout is not known.
    """
    layer, through = first_weighted_layer(model)
    values = np.sum([_feature_sums(kernel, axis) for kernel, axis in _kernels(layer)], axis=0)
    if values.shape != (len(feature_names),):
        raise MethodNotApplicable(
            f"first layer {layer.name} has {values.shape[0]} input features, "
            f"the sample names {len(feature_names)}"
        )
    return Importance(
        method="weight_sum",
        feature_names=feature_names,
        values=values,
        parameters={"layer": layer.name, "layer_type": type(layer).__name__, "through": through},
    )


def first_weighted_layer(model: keras.Model) -> tuple[keras.layers.Layer, list[str]]:
    """The first layer that applies weights to the model input, and the pass-through layers before it."""
    tensors: list[object] = [model.inputs[0]]
    through: list[str] = []
    while True:
        found = consumers(model, tensors)
        if len(found) != 1:
            raise MethodNotApplicable(
                f"the input feeds {len(found)} layers; weight sums need one first layer"
            )
        layer, outputs = found[0]
        if not isinstance(layer, PASS_THROUGH_TO_FIRST_WEIGHTS):
            return layer, through
        through.append(layer.name)
        tensors = outputs


def _kernels(layer: keras.layers.Layer) -> list[tuple[FloatArray, int]]:
    """(kernel, feature axis) pairs of a first layer."""
    if isinstance(layer, keras.layers.Bidirectional):
        return _kernels(layer.forward_layer) + _kernels(layer.backward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return _kernels(layer.layer)
    if isinstance(layer, _RECURRENT):
        return [(np.asarray(layer.cell.kernel), 0)]
    if isinstance(layer, keras.layers.Dense):
        return [(np.asarray(layer.kernel), 0)]
    if isinstance(layer, keras.layers.Conv1D):
        if layer.data_format != "channels_last":
            raise MethodNotApplicable(f"Conv1D {layer.name} is channels_first; only channels_last is read")
        return [(np.asarray(layer.kernel), 1)]
    raise MethodNotApplicable(
        f"first layer {layer.name} is a {type(layer).__name__}; weight sums read Dense, Conv1D, "
        "SimpleRNN, LSTM, GRU (or Bidirectional/TimeDistributed of them)"
    )


def _feature_sums(kernel: FloatArray, feature_axis: int) -> FloatArray:
    other_axes = tuple(axis for axis in range(kernel.ndim) if axis != feature_axis)
    return np.asarray(np.abs(kernel).sum(axis=other_axes), dtype=np.float64)


@register_method(
    "weight_sum",
    needs_eval_sample=False,
    description="sum of |W| of the first layer per input feature",
    options=NoOptions,
)
def _weight_sum(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[NoOptions]
) -> Importance:
    return compute_weight_sum(model, feature_names=context.feature_names)
