"""How well a drop's model fits its own eval sample: one loss and one headline metric.

Importances say what a model relies on; they do not say whether it got worse. The report shows
the loss and metric of every drop beside its importances, so a reader can tell a retrain that
degraded from one that merely leans on other features.

- regression: loss "mse", the mean squared error over samples and outputs; metric "r2", the
  coefficient of determination averaged over outputs (scikit-learn's ``r2_score`` with
  ``multioutput="uniform_average"``);
- classification: loss "cross_entropy" of the true class (binary for sigmoid units, over the
  softmax classes otherwise, one label per step for a model that predicts a class per step,
  averaged over steps); metric "accuracy", the share of labels predicted (per step, per unit).

The per-sample loss and accuracy are the ones permutation importance scores with
(`audit.forward.per_sample_loss`, `per_sample_accuracy`): the evaluation is the unshuffled
baseline of that method. Predictions come in chunks through `audit.forward.Predictor`, so memory
does not grow with the sample beyond one output row per sample. The loss's standard error (sd of
the per-sample losses / sqrt(n)) is kept beside it: the sampling noise of a week-to-week change.
"""

from __future__ import annotations

import keras
import numpy as np

from audit.forward import DEFAULT_CHUNK_BYTES, Predictor, check_labels, per_sample_accuracy, per_sample_loss
from audit.targets import OutputTarget
from audit.types import AuditError, EvalSample, FloatArray, ModelEvaluation, Task


def evaluate_model(
    model: keras.Model,
    sample: EvalSample | None,
    target: OutputTarget,
    *,
    batch_size: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ModelEvaluation | None:
    """The loss and metric of `model` on `sample` (see the module docstring for which).

    Parameters
    ----------
    model : keras.Model
    sample : EvalSample or None
        X of shape (n_samples, n_features) or (n_samples, n_steps, n_features); y (n_samples,) or
        (n_samples, n_outputs) targets, or integer class labels (one per output step or unit).
    target : OutputTarget
        Its task picks the loss and metric; its activation ("sigmoid": independent binary units)
        how classification outputs are read.
    batch_size : int, optional
        Rows per model call (default: as many as fit `chunk_bytes`, at most
        `audit.forward.MAX_ROWS_PER_CALL`).
    chunk_bytes : int
        Memory budget for the model input of one call.

    Returns
    -------
    ModelEvaluation or None
        None when there is nothing to evaluate on: no sample, no targets y, or no rows.

    Raises
    ------
    AuditError
        When y does not fit the model's outputs (names the eval file and the problem).
    """
    if sample is None or sample.y is None or sample.n_samples == 0:
        return None
    y = sample.y
    _check_targets(model, str(sample.source), y, target)
    outputs = Predictor(model, batch_size=batch_size, chunk_bytes=chunk_bytes).predict(sample.X)
    if target.task is Task.REGRESSION:
        losses = per_sample_loss(outputs, y, Task.REGRESSION)
        return ModelEvaluation(
            loss_name="mse",
            loss=float(losses.mean()),
            metric_name="r2",
            metric=r2_score(outputs, y),
            n_samples=sample.n_samples,
            loss_se=standard_error(losses),
        )
    sigmoid = target.activation == "sigmoid"
    losses = per_sample_loss(outputs, y, Task.CLASSIFICATION, sigmoid=sigmoid)
    return ModelEvaluation(
        loss_name="cross_entropy",
        loss=float(losses.mean()),
        metric_name="accuracy",
        metric=float(per_sample_accuracy(outputs, y, sigmoid=sigmoid).mean()),
        n_samples=sample.n_samples,
        loss_se=standard_error(losses),
    )


def standard_error(losses: FloatArray) -> float | None:
    """Standard error of the mean of per-sample `losses` (None with fewer than 2): the sampling
    noise of the loss, which the performance band of audit/performance.py adds to retraining noise."""
    if losses.size < 2:
        return None
    return float(np.std(losses, ddof=1) / np.sqrt(losses.size))


def r2_score(outputs: FloatArray, y: FloatArray) -> float:
    """Coefficient of determination of `outputs` (n_samples, n_outputs) against targets `y`,
    averaged over outputs; one target per sample is the target of every output.

    As scikit-learn's ``r2_score`` (``force_finite``): an output whose target is constant scores
    1.0 when predicted exactly, else 0.0; NaN with fewer than two samples (not defined).
    """
    if outputs.shape[0] < 2:
        return float("nan")
    targets = np.broadcast_to(y.reshape(y.shape[0], -1), outputs.shape)
    residual = np.sum((targets - outputs) ** 2, axis=0)
    total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    per_output = np.where(
        total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), np.where(residual == 0, 1.0, 0.0)
    )
    return float(per_output.mean())


def _check_targets(model: keras.Model, source: str, y: FloatArray, target: OutputTarget) -> None:
    """Raise `AuditError` when y cannot be the targets (or labels) of the model's outputs."""
    output_shape = tuple(model.outputs[0].shape)[1:]
    if target.task is Task.CLASSIFICATION:
        problem = check_labels(y, output_shape, sigmoid=target.activation == "sigmoid")
        if problem is not None:
            raise AuditError(f"{source}: {problem}; fix y or set task in audit.toml")
        return
    n_outputs = int(np.prod([size or 1 for size in output_shape]))
    per_sample = int(np.prod(y.shape[1:], dtype=np.int64))
    if per_sample not in (1, n_outputs):
        raise AuditError(
            f"{source}: y has {per_sample} values per sample but the model has {n_outputs} outputs; "
            "they must match"
        )
