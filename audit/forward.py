"""Batched forward passes through one traced function, and the losses data methods score with.

Every data method calls the model through a `Predictor`: one `tf.function` per model with a
``None`` batch dimension, so chunks of any size reuse the same trace instead of retracing.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from audit.types import FloatArray, Task

#: Default memory budget for one chunk of model input, in bytes.
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
_EPSILON = 1e-7


class Predictor:
    """Calls `model` in inference mode on float32 chunks; outputs come back as (n, n_outputs)."""

    def __init__(self, model: keras.Model, *, batch_size: int | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self._call = traced_forward(model)

    def predict(self, X: npt.NDArray[np.floating]) -> FloatArray:
        """Model outputs for every row of X, flattened to (n_samples, n_outputs)."""
        rows = self._rows_per_call(X)
        chunks = [
            self._call(tf.constant(X[start : start + rows], dtype=tf.float32)).numpy()
            for start in range(0, X.shape[0], rows)
        ]
        outputs = np.concatenate(chunks, axis=0).astype(np.float64)
        return outputs.reshape(outputs.shape[0], -1)

    def _rows_per_call(self, X: npt.NDArray[np.floating]) -> int:
        if self.batch_size is not None:
            return max(1, self.batch_size)
        row_bytes = max(1, int(np.prod(X.shape[1:])) * 4)
        return max(1, DEFAULT_CHUNK_BYTES // row_bytes)


_FORWARD_CACHE: weakref.WeakKeyDictionary[keras.Model, Callable[[tf.Tensor], tf.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def traced_forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model's inference call as one traced function, shared by every method (cached weakly)."""
    if model not in _FORWARD_CACHE:
        spec = tf.TensorSpec(shape=(None, *tuple(model.inputs[0].shape)[1:]), dtype=tf.float32)
        # A partial (not a lambda): TensorFlow counts traces per code object, so one lambda shared
        # by every model would look like retracing and warn, though each model is traced once.
        _FORWARD_CACHE[model] = tf.function(functools.partial(_infer, model), input_signature=[spec])
    return _FORWARD_CACHE[model]


def _infer(model: keras.Model, x: tf.Tensor) -> tf.Tensor:
    return model(x, training=False)


def per_sample_loss(outputs: FloatArray, y: FloatArray, task: Task, *, sigmoid: bool = False) -> FloatArray:
    """Loss of each sample: squared error (mean over outputs) or cross-entropy of the true class.

    outputs: (n_samples, n_outputs) model outputs; for classification these are probabilities:
    a softmax over classes (per output step, flattened), or (`sigmoid`) independent binary
    probabilities, one per output unit; y: targets, or class labels (one per output step, or one
    per unit for sigmoid). Cross-entropies of several steps or units are averaged.
    """
    if task is Task.REGRESSION:
        target = y.reshape(y.shape[0], -1)
        return np.asarray(np.mean((outputs - target) ** 2, axis=1), dtype=np.float64)
    if sigmoid or outputs.shape[1] == 1:
        positive = y.reshape(y.shape[0], -1)
        p = np.clip(outputs, _EPSILON, 1 - _EPSILON)
        entropy = -(positive * np.log(p) + (1 - positive) * np.log(1 - p))
        return np.asarray(entropy.mean(axis=1), dtype=np.float64)
    # softmax: one label per output step; flattened outputs are (n, steps * classes)
    classes = y.reshape(y.shape[0], -1).astype(np.int64)
    per_step = outputs.reshape(outputs.shape[0], classes.shape[1], -1)
    p_true = np.take_along_axis(per_step, classes[:, :, None], axis=2)[:, :, 0]
    return np.asarray(-np.log(np.clip(p_true, _EPSILON, 1.0)).mean(axis=1), dtype=np.float64)


def check_labels(y: FloatArray, n_outputs: int, *, sigmoid: bool = False) -> str | None:
    """A reason why y cannot be class labels for a model with `n_outputs` outputs, else None."""
    n_classes = 2 if sigmoid or n_outputs == 1 else n_outputs
    if not np.all(np.equal(np.mod(y, 1), 0)):
        return "classification labels must be integers"
    if y.min() < 0 or y.max() >= n_classes:
        return f"labels span {int(y.min())}..{int(y.max())} but the model has {n_classes} classes"
    return None


Job = tuple[int, int]


def copies_by_chunk(
    X: npt.NDArray[np.floating],
    jobs: Sequence[Job],
    replace_feature: Callable[[Job], npt.NDArray[np.floating] | float],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[Sequence[Job], npt.NDArray[np.float32]]]:
    """Copies of X, one per job, in which one feature is replaced; several copies per chunk.

    A job is (anything, feature index); `replace_feature(job)` returns the new values of that
    feature, shaped like ``X[..., feature]`` (or one value for all of them). It is called once per
    job in `jobs` order, so a random draw inside it gives the same numbers whatever the chunk
    size. Copies are built from a float32 copy of X (the caller's array is never modified);
    yields (chunk jobs, copies of shape (n_jobs, *X.shape)), as many copies per chunk as fit
    `chunk_bytes`.
    """
    base = np.asarray(X, dtype=np.float32)
    per_chunk = max(1, chunk_bytes // max(1, base.nbytes))
    for start in range(0, len(jobs), per_chunk):
        chunk_jobs = jobs[start : start + per_chunk]
        stacked = np.repeat(base[np.newaxis], len(chunk_jobs), axis=0)
        for index, job in enumerate(chunk_jobs):
            stacked[index, ..., job[1]] = replace_feature(job)
        yield chunk_jobs, stacked
