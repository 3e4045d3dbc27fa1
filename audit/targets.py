"""Which number per sample the output-based methods explain, and how it is computed.

Gradient methods (integrated gradients, saliency, Grad-CAM) and the sweep need one scalar per
sample. The rules, stored with every result as ``target``:

- regression: the mean over all outputs (a vector output, or one value per step of a sequence
  output), or the single output ``output_index`` of the flattened output when given;
- classification with a softmax over the last axis: the probability of the class the model
  predicts for that sample (per output step, averaged over steps), or of ``class_index`` when given;
- classification with one sigmoid unit (per step): the probability of the predicted class, i.e.
  p when p >= 0.5, else 1 - p; with ``class_index`` 1 it is p, with 0 it is 1 - p.

The class of each sample is chosen on the sample itself, and kept fixed along an IG path.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from audit.types import AuditError, Task


@dataclass(frozen=True)
class OutputTarget:
    """How the model output becomes one scalar per sample (see the module docstring).

    `activation` is the model's output activation: with "sigmoid" every output unit is an
    independent binary probability; otherwise class probabilities lie along the last axis.
    """

    task: Task
    activation: str = "linear"
    output_index: int | None = None
    class_index: int | None = None

    def describe(self) -> str:
        if self.task is Task.REGRESSION:
            return "mean of outputs" if self.output_index is None else f"output {self.output_index}"
        return "predicted class" if self.class_index is None else f"class {self.class_index}"


#: The default target: a regression model's mean output.
REGRESSION_TARGET = OutputTarget(Task.REGRESSION)


def output_activation(model: keras.Model) -> str:
    """Name of the activation that produces the output, looking back through layers without one
    (Flatten, Reshape, Dropout...): an LSTM(1, sigmoid) followed by Flatten ends in "sigmoid"."""
    for layer in reversed(model.layers):
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return str(getattr(activation, "__name__", "linear"))
        if isinstance(layer, keras.layers.Activation):
            return str(layer.get_config().get("activation", "linear"))
    return "linear"


def chosen_classes(outputs: tf.Tensor, target: OutputTarget) -> tf.Tensor:
    """The class explained for each sample and output step, (n_samples, n_output_steps) int32.

    Computed in the graph from the outputs of the samples themselves, so gradient methods choose
    the predicted class in the same forward pass they differentiate. Regression: zeros, unused.
    """
    n = tf.shape(outputs)[0]
    if target.task is Task.REGRESSION:
        return tf.zeros((n, 1), tf.int32)
    if target.activation == "sigmoid":
        per_unit = tf.reshape(outputs, (n, -1))
        if target.class_index is not None:
            return tf.fill(tf.shape(per_unit), target.class_index)
        return tf.cast(per_unit >= 0.5, tf.int32)
    per_step = tf.reshape(outputs, (n, -1, tf.shape(outputs)[-1]))
    if target.class_index is not None:
        return tf.fill(tf.shape(per_step)[:2], target.class_index)
    return tf.argmax(per_step, axis=-1, output_type=tf.int32)


def scalar_output(outputs: tf.Tensor, ids: tf.Tensor, target: OutputTarget) -> tf.Tensor:
    """One scalar per sample from `outputs` (n, ...) and the class ids (n, n_output_steps)."""
    n = tf.shape(outputs)[0]
    if target.task is Task.REGRESSION:
        flat = tf.reshape(outputs, (n, -1))
        if target.output_index is None:
            return tf.reduce_mean(flat, axis=1)
        return flat[:, target.output_index]
    if target.activation == "sigmoid":
        p = tf.reshape(outputs, (n, -1))
        chosen = tf.where(ids == 1, p, 1.0 - p)
    else:
        per_step = tf.reshape(outputs, (n, tf.shape(ids)[1], tf.shape(outputs)[-1]))
        chosen = tf.gather(per_step, ids, axis=2, batch_dims=2)
    return tf.reduce_mean(chosen, axis=1)


def check_output_index(model: keras.Model, target: OutputTarget) -> None:
    n_outputs = int(np.prod([d or 1 for d in tuple(model.outputs[0].shape)[1:]]))
    if target.output_index is not None and not 0 <= target.output_index < n_outputs:
        raise AuditError(f"output_index {target.output_index} is outside the model's {n_outputs} outputs")


def check_class_index(model: keras.Model, target: OutputTarget) -> None:
    """Raise `AuditError` when `class_index` is not one of the model's classes."""
    if target.class_index is None or target.task is Task.REGRESSION:
        return
    last = tuple(model.outputs[0].shape)[-1] or 1
    n_classes = 2 if target.activation == "sigmoid" or last == 1 else last
    if not 0 <= target.class_index < n_classes:
        raise AuditError(f"class_index {target.class_index} is outside the model's {n_classes} classes")
