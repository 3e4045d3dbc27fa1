"""Batched forward passes under a memory budget, copies of X scored without building them, and
the losses data methods score with.

Every data method calls the model through traced functions with a ``None`` batch dimension (one
trace per model and function, shared by every call and chunk). One call holds at most
`chunk_bytes` of float32 model input and at most `MAX_ROWS_PER_CALL` rows: the activations of a
row are 10 to 16 times its input, and calls of about 8k rows run fastest per row
(docs/benchmarks.md), so a bigger budget would only hold more memory.

Permutation, perturbation and the sensitivity sweep score copies of X in which one feature is
replaced. They do not build the copies: a call receives rows of X once, and per copy the feature
it replaces and that feature's new values (a 1/n_features share of a copy); the copies are
assembled inside the traced function. A copy that does not fit one call is split by rows, so
memory does not grow with the sample beyond the caller's X and vectors of one value per sample.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from audit.types import FloatArray, Task

#: Default memory budget for the model input of one call, in bytes.
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
#: Cap on the rows of one model call, whatever the budget (bench/chunks.py: ~8k rows per call are
#: 1.2x to 1.5x faster per row than calls of 64 MiB of input, whose activations fall out of cache).
MAX_ROWS_PER_CALL = 8192
_EPSILON = 1e-7

#: A copy of X to score: (anything, index of the feature it replaces).
Job = tuple[int, int]
#: New values of a job's feature on some rows: shaped like ``X[rows, ..., feature]``, or one value.
ReplaceFeature = Callable[[Job, slice], "npt.NDArray[np.floating] | float"]


def rows_per_call(
    row_shape: tuple[int, ...], chunk_bytes: int = DEFAULT_CHUNK_BYTES, batch_size: int | None = None
) -> int:
    """Rows of one model call: `batch_size` when given, else as many float32 rows of `row_shape`
    as fit `chunk_bytes`, at most `MAX_ROWS_PER_CALL` (and at least one)."""
    if batch_size is not None:
        return max(1, batch_size)
    row_bytes = max(1, int(np.prod(row_shape)) * 4)
    return max(1, min(chunk_bytes // row_bytes, MAX_ROWS_PER_CALL))


def row_chunks(n_rows: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of at most `rows` rows covering ``range(n_rows)``."""
    step = max(1, rows)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def as_float32(X: npt.NDArray[np.floating]) -> tf.Tensor:
    """A float32 tensor of X (typically a chunk of the caller's array, which is never modified)."""
    return tf.constant(np.asarray(X, dtype=np.float32))


class Predictor:
    """Calls `model` in inference mode on float32 chunks; outputs come back as (n, n_outputs)."""

    def __init__(
        self, model: keras.Model, *, batch_size: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.chunk_bytes = chunk_bytes
        self._call = traced_forward(model)
        self._copies = traced_copies_forward(model)

    def rows_per_call(self, X: npt.NDArray[np.floating]) -> int:
        """Rows of one model call for samples shaped like X's."""
        return rows_per_call(tuple(X.shape[1:]), self.chunk_bytes, self.batch_size)

    def predict(self, X: npt.NDArray[np.floating]) -> FloatArray:
        """Model outputs for every row of X, flattened to (n_samples, n_outputs)."""
        chunks = [
            self._call(as_float32(X[rows])).numpy() for rows in row_chunks(len(X), self.rows_per_call(X))
        ]
        outputs = np.concatenate(chunks, axis=0).astype(np.float64)
        return outputs.reshape(outputs.shape[0], -1)

    def predict_copies(
        self, X: npt.NDArray[np.floating], jobs: Sequence[Job], replace_feature: ReplaceFeature
    ) -> Iterator[tuple[Copies, FloatArray]]:
        """Model outputs of the copies of X the jobs describe (see `copies_by_chunk`), one call per
        chunk; yields each chunk and its outputs, shape (n_jobs, n_rows, n_outputs)."""
        for copies in copies_by_chunk(X, jobs, replace_feature, self.rows_per_call(X)):
            outputs = self._copies(copies.base, copies.features, copies.values).numpy()
            yield copies, outputs.reshape(len(copies.jobs), copies.n_rows, -1).astype(np.float64)


#: Attribute of a model that holds its traced functions (`model_traces`).
_TRACES_ATTRIBUTE = "_drift_audit_traces"


def model_traces(model: keras.Model) -> dict[Hashable, Any]:
    """The traced functions built for `model` (forward calls, gradients, Grad-CAM maps), kept on
    the model itself so that they die with it.

    Not a `weakref.WeakKeyDictionary` keyed by the model: each traced function holds its model,
    so such an entry never goes and every model ever audited stayed alive with its graphs (six
    Keras models per drop in a fleet run, the RSS growth of bench/fleet.py). The model and its
    functions form a cycle, freed by the garbage collector. Set past Keras' attribute tracking.
    """
    traces = model.__dict__.get(_TRACES_ATTRIBUTE)
    if traces is None:
        traces = {}
        object.__setattr__(model, _TRACES_ATTRIBUTE, traces)
    return cast(dict[Hashable, Any], traces)


def input_spec(model: keras.Model) -> tf.TensorSpec:
    """float32 model input with any number of rows."""
    return tf.TensorSpec(shape=(None, *tuple(model.inputs[0].shape)[1:]), dtype=tf.float32)


def copies_specs(model: keras.Model) -> list[tf.TensorSpec]:
    """Input signature of the functions that assemble copies: rows of X, features, new values."""
    row_shape = tuple(model.inputs[0].shape)[1:]
    return [
        input_spec(model),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None, None, *row_shape[:-1]), tf.float32),
    ]


def traced_forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model's inference call as one traced function, shared by every method (`model_traces`)."""
    traces = model_traces(model)
    if "forward" not in traces:
        # A partial (not a lambda): TensorFlow counts traces per code object, so one lambda shared
        # by every model would look like retracing and warn, though each model is traced once.
        traces["forward"] = tf.function(functools.partial(_infer, model), input_signature=[input_spec(model)])
    return cast(Callable[[tf.Tensor], tf.Tensor], traces["forward"])


def traced_copies_forward(model: keras.Model) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """The model's inference call on copies assembled in the graph (`assemble_copies`), traced once
    per model (kept on the model: `model_traces`)."""
    traces = model_traces(model)
    if "copies" not in traces:
        traces["copies"] = tf.function(
            functools.partial(_infer_copies, model), input_signature=copies_specs(model)
        )
    return cast(Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor], traces["copies"])


def _infer(model: keras.Model, x: tf.Tensor) -> tf.Tensor:
    return model(x, training=False)


def _infer_copies(model: keras.Model, base: tf.Tensor, features: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    return model(assemble_copies(base, features, values), training=False)


def assemble_copies(base: tf.Tensor, features: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """Copies of `base` (r, ..., f), one per job, job-major: (k * r, ..., f).

    Copy j is `base` with feature ``features[j]`` replaced by ``values[j]`` (k, r, ...); every
    other element is `base`'s own value, exactly (a select, not arithmetic).
    """
    n_features = tf.shape(base)[-1]
    rank = base.shape.rank
    hit = tf.equal(features[:, tf.newaxis], tf.range(n_features)[tf.newaxis])  # (k, f)
    hit = tf.reshape(hit, [-1, *([1] * (rank - 1)), n_features])  # (k, 1, ..., f)
    copies = tf.where(hit, values[..., tf.newaxis], base[tf.newaxis])  # (k, r, ..., f)
    row_shape = [
        size if size is not None else tf.shape(base)[axis + 1] for axis, size in enumerate(base.shape[1:])
    ]
    return tf.reshape(copies, [-1, *row_shape])


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


def per_sample_accuracy(outputs: FloatArray, y: FloatArray, *, sigmoid: bool = False) -> FloatArray:
    """1 where the predicted class is the label, per sample (several steps or sigmoid units: the
    share right).

    Same layouts as `per_sample_loss`: softmax probabilities (n_samples, n_steps * n_classes) with
    one label per step, or independent sigmoid units (or one unit) with one 0/1 label per unit.
    """
    labels = y.reshape(y.shape[0], -1)
    if sigmoid or outputs.shape[1] == 1:
        predicted = outputs >= 0.5
        return np.asarray(np.mean(predicted == (labels >= 0.5), axis=1), dtype=np.float64)
    per_step = outputs.reshape(outputs.shape[0], labels.shape[1], -1)
    return np.asarray(
        np.mean(np.argmax(per_step, axis=2) == labels.astype(np.int64), axis=1), dtype=np.float64
    )


def check_labels(
    y: FloatArray, outputs: int | tuple[int | None, ...], *, sigmoid: bool = False
) -> str | None:
    """A reason why y cannot be class labels for the model's outputs, else None.

    `outputs` is the model's output shape per sample: (n_classes,), or (n_steps, n_classes) for a
    model that gives a class distribution per step (an LSTM returning sequences into a softmax).
    Classes lie on the last axis, and y holds one label per step: (n_samples,) or
    (n_samples, n_steps). A sigmoid output, or a single unit, is binary (labels 0 and 1). An int
    is the flattened number of outputs: the steps are then read off y, as `per_sample_loss` reads
    them (n_outputs / labels per sample classes per step).
    """
    if not np.all(np.equal(np.mod(y, 1), 0)):
        return "classification labels must be integers"
    labels_per_sample = int(np.prod(y.shape[1:], dtype=np.int64))
    if isinstance(outputs, int):
        binary = sigmoid or outputs == 1
        if not binary and outputs % max(1, labels_per_sample) != 0:
            return (
                f"y has {labels_per_sample} labels per sample, which do not split the model's "
                f"{outputs} outputs into steps of classes"
            )
        n_steps, n_classes = labels_per_sample, 2 if binary else outputs // max(1, labels_per_sample)
    else:
        sizes = [size or 1 for size in outputs] or [1]
        binary = sigmoid or sizes[-1] == 1
        n_steps, n_classes = int(np.prod(sizes[:-1], dtype=np.int64)), 2 if binary else sizes[-1]
        if not binary and labels_per_sample != n_steps:
            return (
                f"the model gives {n_steps} steps of {n_classes} classes, so y needs one label per step, "
                f"shape (n_samples, {n_steps}); it has {labels_per_sample} per sample"
            )
    if y.min() < 0 or y.max() >= n_classes:
        per_step = f" per step ({n_steps} steps)" if n_steps > 1 and not binary else ""
        return f"labels span {int(y.min())}..{int(y.max())} but the model has {n_classes} classes{per_step}"
    return None


@dataclass(frozen=True)
class Copies:
    """The input of one call that scores copies of X (assembled in the graph by `assemble_copies`)."""

    jobs: Sequence[Job]
    #: The rows of X every copy of the chunk covers.
    rows: slice
    #: ``X[rows]`` as float32, (n_rows, ...).
    base: tf.Tensor
    #: The feature each job replaces, (n_jobs,) int32.
    features: tf.Tensor
    #: Their new values, (n_jobs, n_rows, ...) float32: ``X[rows, ..., feature]``'s shape per job.
    values: tf.Tensor

    @property
    def n_rows(self) -> int:
        return int(self.rows.stop - self.rows.start)


def copies_by_chunk(
    X: npt.NDArray[np.floating],
    jobs: Sequence[Job],
    replace_feature: ReplaceFeature,
    rows_per_call: int,
) -> Iterator[Copies]:
    """Chunks of the copies of X in which each job's feature is replaced, one model call each.

    A job is (anything, feature index). Chunks are job-major and hold at most `rows_per_call`
    rows of copies: as many whole copies as fit, or, when one copy of X does not fit, one job on
    consecutive rows (the copy is split by samples). `replace_feature(job, rows)` returns the new
    values of the job's feature on `rows`, shaped like ``X[rows, ..., feature]`` (or one value
    for all of them); it is called in job order, rows ascending, so random draws inside it (a
    permutation at a job's first rows, noise rows by rows) give the same numbers whatever the
    chunking. Only chunks of X are converted to float32 (X itself is never modified), once for
    all chunks when a copy is whole.
    """
    n_samples = len(X)
    if n_samples == 0:
        return
    groups: Iterator[tuple[Sequence[Job], slice]]
    if n_samples <= rows_per_call:
        per_call = rows_per_call // n_samples
        everything = slice(0, n_samples)
        groups = ((jobs[start : start + per_call], everything) for start in range(0, len(jobs), per_call))
    else:
        groups = (((job,), rows) for job in jobs for rows in row_chunks(n_samples, rows_per_call))
    base_rows, base = None, None
    for chunk_jobs, rows in groups:
        if base is None or rows != base_rows:
            base_rows, base = rows, as_float32(X[rows])
        values = np.empty((len(chunk_jobs), rows.stop - rows.start, *X.shape[1:-1]), np.float32)
        for index, job in enumerate(chunk_jobs):
            values[index] = replace_feature(job, rows)
        features = tf.constant(np.array([job[1] for job in chunk_jobs], dtype=np.int32))
        yield Copies(chunk_jobs, rows, base, features, tf.constant(values))


def per_sample_by_job(
    chunks: Iterable[tuple[Copies, FloatArray]], n_samples: int
) -> Iterator[tuple[Job, FloatArray]]:
    """Join per-row figures of chunks, (n_jobs, n_rows) each, into one (n_samples,) vector per job.

    Yields each job with its vector once its last rows are in, in job order.
    """
    collected: FloatArray = np.empty(0)
    for copies, per_row in chunks:
        whole = copies.n_rows == n_samples
        for job, row_values in zip(copies.jobs, per_row, strict=True):
            if whole:
                yield job, row_values
                continue
            if copies.rows.start == 0:
                collected = np.empty(n_samples)
            collected[copies.rows] = row_values
            if copies.rows.stop == n_samples:
                yield job, collected
