"""Traced gradient computations shared by the gradient methods (IG, GradientSHAP, saliency, Grad-CAM).

Each function is traced once per (model, target) with a ``None`` batch dimension, so chunks of any
size reuse one graph; all per-sample and per-step work happens inside TensorFlow as batched ops.
"""

from __future__ import annotations

import functools
from typing import cast

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from audit.forward import (
    DEFAULT_CHUNK_BYTES,
    MAX_ROWS_PER_CALL,
    Copies,
    as_float32,
    assemble_copies,
    copies_specs,
    input_spec,
    model_traces,
    row_chunks,
    rows_per_call,
)
from audit.targets import OutputTarget, check_class_index, chosen_classes, scalar_output
from audit.types import FloatArray

#: Memory budget for the model input of one gradient call (IG: its path points), in bytes.
#: Activations kept for the backward pass are several times larger, so this stays well below the
#: forward budget; rows per call are capped at `MAX_GRADIENT_ROWS_PER_CALL` as well.
DEFAULT_GRADIENT_CHUNK_BYTES = 16 * 1024 * 1024
#: Cap on the model inputs (rows, or IG path points) of one gradient call.
MAX_GRADIENT_ROWS_PER_CALL = MAX_ROWS_PER_CALL
Float32Array = npt.NDArray[np.float32]
Int32Array = npt.NDArray[np.int32]
AnyFloatArray = npt.NDArray[np.floating]


def rows_per_chunk(row_shape: tuple[int, ...], chunk_bytes: int, points_per_row: int = 1) -> int:
    """How many samples fit one gradient call when each becomes `points_per_row` model inputs:
    their float32 inputs within `chunk_bytes`, at most `MAX_GRADIENT_ROWS_PER_CALL` inputs (and
    at least one sample)."""
    row_bytes = max(1, int(np.prod(row_shape)) * 4 * points_per_row)
    return max(1, min(chunk_bytes // row_bytes, MAX_GRADIENT_ROWS_PER_CALL // max(1, points_per_row)))


def target_gradients(model: keras.Model, target: OutputTarget) -> TargetGradients:
    """The traced functions of (model, target), built once and shared by IG, saliency, ...
    (kept on the model: `model_traces`)."""
    check_class_index(model, target)
    traces = model_traces(model)
    key = ("gradients", target)
    if key not in traces:
        traces[key] = TargetGradients(model, target)
    return cast(TargetGradients, traces[key])


def explained_classes(model: keras.Model, inputs: AnyFloatArray, target: OutputTarget) -> Int32Array:
    """The class each sample's explanation is about, chosen on the sample itself (audit/targets.py)."""
    return target_gradients(model, target).value_and_classes(inputs)[1]


class TargetGradients:
    """Value and input gradient of the target scalar, and integrated gradients along straight paths.

    Build it through `target_gradients` so that every method reuses one trace per model. Inputs
    may be any float array (typically float64 chunks of the caller's X); each call converts only
    the rows it sends to float32.
    """

    def __init__(self, model: keras.Model, target: OutputTarget) -> None:
        x_spec = input_spec(model)
        ids_spec = tf.TensorSpec((None, None), tf.int32)
        vector = tf.TensorSpec((None,), tf.float32)
        self._value = tf.function(
            functools.partial(_value, model, target), input_signature=[x_spec, ids_spec]
        )
        self._value_and_classes = tf.function(
            functools.partial(_value_and_classes, model, target), input_signature=[x_spec]
        )
        self._value_of_copies = tf.function(
            functools.partial(_value_of_copies, model, target),
            input_signature=[*copies_specs(model), ids_spec],
        )
        self._gradient = tf.function(
            functools.partial(_value_and_gradient, model, target), input_signature=[x_spec]
        )
        self._path = tf.function(
            functools.partial(_integrated_path, model, target),
            input_signature=[x_spec, x_spec, ids_spec, vector, vector],
        )
        self._expected = tf.function(
            functools.partial(_expected_path, model, target),
            input_signature=[x_spec, x_spec, tf.TensorSpec((None,), tf.int32), ids_spec, vector],
        )

    @staticmethod
    def forward_rows(X: AnyFloatArray) -> int:
        """Rows of one forward call (`value`, `value_and_classes`) for samples shaped like X's."""
        return rows_per_call(tuple(X.shape[1:]), DEFAULT_CHUNK_BYTES)

    def value(self, X: AnyFloatArray, ids: Int32Array) -> FloatArray:
        """Target scalar per sample, shape (n_samples,), for the given classes."""
        values = [
            self._value(as_float32(X[rows]), tf.constant(ids[rows])).numpy()
            for rows in row_chunks(len(X), self.forward_rows(X))
        ]
        return np.asarray(np.concatenate(values), dtype=np.float64)

    def value_and_classes(self, X: AnyFloatArray) -> tuple[FloatArray, Int32Array]:
        """Target scalar per sample and the classes it was taken of, chosen on X (one forward pass)."""
        chunks = [
            self._value_and_classes(as_float32(X[rows])) for rows in row_chunks(len(X), self.forward_rows(X))
        ]
        values = np.concatenate([value.numpy() for value, _ in chunks])
        ids = np.concatenate([ids.numpy() for _, ids in chunks])
        return np.asarray(values, np.float64), np.asarray(ids, np.int32)

    def values_of_copies(self, copies: Copies, ids: Int32Array) -> FloatArray:
        """Target scalar of every copy of a chunk (`audit.forward.copies_by_chunk`), (n_jobs, n_rows);
        `ids` are the classes of the chunk's rows, (n_rows, n_output_steps), the same for every copy."""
        values = self._value_of_copies(copies.base, copies.features, copies.values, tf.constant(ids))
        return np.asarray(values.numpy(), np.float64).reshape(len(copies.jobs), copies.n_rows)

    def gradient(self, X: AnyFloatArray) -> tuple[FloatArray, FloatArray]:
        """Target scalar (n,) and its gradient with respect to the input, shaped like X; each
        sample's class is chosen on the sample in the same forward pass. One call: chunk X first."""
        value, gradient = self._gradient(as_float32(X))
        return np.asarray(value.numpy(), np.float64), np.asarray(gradient.numpy(), np.float64)

    def integrated(
        self,
        X: AnyFloatArray,
        baseline: AnyFloatArray,
        ids: Int32Array,
        alphas: FloatArray,
        weights: FloatArray,
    ) -> FloatArray:
        """(x - baseline) * sum_k weights[k] * grad F(baseline + alphas[k] (x - baseline)), per sample.
        One call of len(X) * len(alphas) path points: chunk X first."""
        result = self._path(
            as_float32(X),
            as_float32(baseline),
            tf.constant(ids),
            tf.constant(alphas, tf.float32),
            tf.constant(weights, tf.float32),
        )
        return np.asarray(result.numpy(), dtype=np.float64)

    def expected(
        self,
        X: AnyFloatArray,
        background: tf.Tensor,
        rows: Int32Array,
        ids: Int32Array,
        alphas: AnyFloatArray,
    ) -> FloatArray:
        """Expected gradients of a chunk: the mean over its m draws of (x - b) * grad F(b + t (x - b)).

        `background` is the float32 background (sent once per method call, gathered from in the
        graph); `rows` (m * c,) the background row and `alphas` (m * c,) the path point of each draw,
        draw-major: draw k of sample i is entry ``k * c + i``. One call of m * c model inputs: chunk X
        first.
        """
        result = self._expected(
            as_float32(X), background, tf.constant(rows), tf.constant(ids), tf.constant(alphas, tf.float32)
        )
        return np.asarray(result.numpy(), dtype=np.float64)


def _value(model: keras.Model, target: OutputTarget, x: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return scalar_output(model(x, training=False), ids, target)


def _value_of_copies(
    model: keras.Model,
    target: OutputTarget,
    base: tf.Tensor,
    features: tf.Tensor,
    values: tf.Tensor,
    ids: tf.Tensor,
) -> tf.Tensor:
    """Target scalar of each copy (job-major); every copy of a row keeps that row's classes."""
    outputs = model(assemble_copies(base, features, values), training=False)
    return scalar_output(outputs, tf.tile(ids, [tf.shape(features)[0], 1]), target)


def _value_and_classes(model: keras.Model, target: OutputTarget, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    outputs = model(x, training=False)
    ids = chosen_classes(outputs, target)
    return scalar_output(outputs, ids, target), ids


def _value_and_gradient(
    model: keras.Model, target: OutputTarget, x: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = model(x, training=False)
        ids = tf.stop_gradient(chosen_classes(outputs, target))
        value = scalar_output(outputs, ids, target)
    # Samples do not interact in inference, so the gradient of the batch sum is per-sample.
    return value, tape.gradient(value, x)


def _integrated_path(
    model: keras.Model,
    target: OutputTarget,
    x: tf.Tensor,
    baseline: tf.Tensor,
    ids: tf.Tensor,
    alphas: tf.Tensor,
    weights: tf.Tensor,
) -> tf.Tensor:
    """All path points of a chunk in one model call: (m * c) inputs for c samples and m nodes."""
    difference = x - baseline
    n_nodes = tf.shape(alphas)[0]
    rank = x.shape.rank
    node_scale = tf.reshape(alphas, [-1] + [1] * rank)  # (m, 1, ...)
    points = baseline[tf.newaxis] + node_scale * difference[tf.newaxis]  # (m, c, ...)
    flat = tf.reshape(points, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        value = scalar_output(model(flat, training=False), tf.tile(ids, [n_nodes, 1]), target)
    gradients = tf.reshape(tape.gradient(value, flat), tf.shape(points))
    mean_gradient = tf.tensordot(weights, gradients, axes=1)  # (c, ...)
    return difference * mean_gradient


def _expected_path(
    model: keras.Model,
    target: OutputTarget,
    x: tf.Tensor,
    background: tf.Tensor,
    rows: tf.Tensor,
    ids: tf.Tensor,
    alphas: tf.Tensor,
) -> tf.Tensor:
    """All draws of a chunk in one model call: (m * c) inputs for c samples and m draws, each draw
    with its own baseline (a row of `background`) and point on the straight path to the sample."""
    n_samples = tf.shape(x)[0]
    n_draws = tf.shape(rows)[0] // n_samples
    rank = x.shape.rank
    baselines = tf.gather(background, rows)  # (m * c, ...)
    repeated = tf.tile(x, tf.concat([[n_draws], tf.ones([rank - 1], tf.int32)], axis=0))  # (m * c, ...)
    difference = repeated - baselines
    points = baselines + tf.reshape(alphas, [-1] + [1] * (rank - 1)) * difference
    with tf.GradientTape() as tape:
        tape.watch(points)
        value = scalar_output(model(points, training=False), tf.tile(ids, [n_draws, 1]), target)
    products = difference * tape.gradient(value, points)
    shape = tf.concat([[n_draws, n_samples], tf.shape(x)[1:]], axis=0)
    return tf.reduce_mean(tf.reshape(products, shape), axis=0)  # (c, ...)
