"""Permutation importance: how much worse (or how different) the model gets when one feature is shuffled.

Breiman (2001), "Random Forests", Machine Learning 45; the sample-level form follows scikit-learn's
``inspection.permutation_importance``. For a feature j and a repeat r, the rows of feature j are
permuted across samples; for sequences (n_samples, n_steps, n_features) the whole series of feature j
moves with its sample, so its time structure is kept while its link to the other features is broken.

Score: with targets, the increase of the mean per-sample loss (squared error for regression,
cross-entropy of the true class for classification); without targets, the RMS change of the model
output. All (feature, repeat) copies are predicted in large batches through one traced function.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from audit.forward import DEFAULT_CHUNK_BYTES, Predictor, per_sample_loss
from audit.methods.base import MethodContext, MethodNotApplicable, register_method
from audit.types import FloatArray, Importance, Task


def compute_permutation(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    task: Task = Task.REGRESSION,
    n_repeats: int = 5,
    random_state: int | np.random.Generator | None = None,
    batch_size: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Importance:
    """Permutation importance of each feature.

    Parameters
    ----------
    model : keras.Model
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ndarray, shape (n_samples,) or (n_samples, n_outputs), optional
        Targets (regression) or integer class labels. Without y the score is the RMS output change.
    feature_names : tuple of str
        One name per feature (last axis of X).
    task : Task
        Picks the loss when y is given.
    n_repeats : int
        Independent shuffles per feature; the value is their mean, `std` their standard deviation.
    random_state : int, Generator or None
        Converted once with ``np.random.default_rng``; an int is stored with the result.
    batch_size : int, optional
        Rows per model call (default: as many as fit in `chunk_bytes`).
    chunk_bytes : int
        Memory budget for the permuted copies predicted at once.

    Returns
    -------
    Importance
        ``values`` (n_features,) mean score increase, ``std``, ``repeats`` (n_features, n_repeats).
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    rng = np.random.default_rng(random_state)
    predictor = Predictor(model, batch_size=batch_size)
    reference = predictor.predict(X)
    baseline_loss = None if y is None else float(per_sample_loss(reference, y, task).mean())
    n_features = X.shape[-1]
    # Draw all permutations up front, in (repeat, feature) order, so results do not depend on chunking.
    permutations = np.stack([rng.permutation(X.shape[0]) for _ in range(n_repeats * n_features)]).reshape(
        n_repeats, n_features, X.shape[0]
    )
    scores = np.empty((n_features, n_repeats))
    for jobs, outputs in _predict_permuted(predictor, X, permutations, chunk_bytes):
        for (repeat, feature), output in zip(jobs, outputs, strict=True):
            if y is None or baseline_loss is None:
                scores[feature, repeat] = float(np.sqrt(np.mean((output - reference) ** 2)))
            else:
                scores[feature, repeat] = float(per_sample_loss(output, y, task).mean()) - baseline_loss
    return Importance(
        method="permutation",
        feature_names=feature_names,
        values=scores.mean(axis=1),
        std=scores.std(axis=1, ddof=1) if n_repeats > 1 else np.zeros(n_features),
        repeats=scores,
        parameters={
            "n_repeats": n_repeats,
            "random_state": random_state if isinstance(random_state, int) else None,
            "score": "loss_increase" if y is not None else "rms_output_change",
            "loss": ("squared_error" if task is Task.REGRESSION else "cross_entropy")
            if y is not None
            else None,
            "n_samples": int(X.shape[0]),
        },
    )


def _predict_permuted(
    predictor: Predictor, X: FloatArray, permutations: np.ndarray, chunk_bytes: int
) -> Iterator[tuple[list[tuple[int, int]], list[FloatArray]]]:
    """Predict every (repeat, feature) shuffled copy of X, several copies per model call.

    Yields the jobs of one chunk and their outputs (each (n_samples, n_outputs)).
    """
    n_repeats, n_features, n_samples = permutations.shape
    copies_per_chunk = max(1, chunk_bytes // max(1, X.astype(np.float32).nbytes))
    jobs = [(r, f) for r in range(n_repeats) for f in range(n_features)]
    for start in range(0, len(jobs), copies_per_chunk):
        chunk_jobs = jobs[start : start + copies_per_chunk]
        # One stacked copy of X per job; copying first keeps the caller's X untouched.
        stacked = np.repeat(X[np.newaxis].astype(np.float32), len(chunk_jobs), axis=0)
        for index, (repeat, feature) in enumerate(chunk_jobs):
            stacked[index, ..., feature] = X[permutations[repeat, feature], ..., feature]
        outputs = predictor.predict(stacked.reshape(-1, *X.shape[1:]))
        yield chunk_jobs, list(outputs.reshape(len(chunk_jobs), n_samples, -1))


@register_method(
    "permutation",
    needs_eval_sample=True,
    description="loss increase (or RMS output change without y) when one feature is shuffled",
)
def _permutation(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    n_repeats = context.options.get("n_repeats", 5)
    if not isinstance(n_repeats, int):
        raise ValueError(f"permutation n_repeats must be an integer, got {n_repeats!r}")
    return compute_permutation(
        model,
        X,
        y,
        feature_names=context.feature_names,
        task=context.task,
        n_repeats=n_repeats,
        random_state=context.random_state,
    )
