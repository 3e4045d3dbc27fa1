"""Permutation importance: how much worse (or how different) the model gets when one feature is shuffled.

Breiman (2001), "Random Forests", Machine Learning 45; the sample-level form follows scikit-learn's
``inspection.permutation_importance``. For a feature j and a repeat r, the rows of feature j are
permuted across samples; for sequences (n_samples, n_steps, n_features) the whole series of feature j
moves with its sample, so its time structure is kept while its link to the other features is broken.

Score (`scoring`): with targets, "loss" (the default) is the increase of the mean per-sample loss
of the task (squared error for regression, cross-entropy of the true class for classification);
a named metric can be asked for instead: "mse", "mae" (regression), "cross_entropy" (increase) or
"accuracy" (decrease) for classification. Without targets "loss" scores the RMS change of the model
output. As in scikit-learn, `max_samples` rows can be drawn (without replacement, with the same
random generator, before the permutations) to bound the cost on large eval samples. All (feature,
repeat) copies are predicted in batches through one traced function, which assembles them from
the rows of X and each copy's shuffled feature (see `audit.forward`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np

from audit.forward import (
    DEFAULT_CHUNK_BYTES,
    Job,
    Predictor,
    check_labels,
    per_sample_accuracy,
    per_sample_by_job,
    per_sample_loss,
)
from audit.methods.base import MethodContext, MethodNotApplicable, register_method, standard_error
from audit.options import Choices, Interval, option
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import FloatArray, Importance, Task

#: `scoring` values and the task each is for (None: both).
SCORINGS: dict[str, Task | None] = {
    "loss": None,
    "mse": Task.REGRESSION,
    "mae": Task.REGRESSION,
    "accuracy": Task.CLASSIFICATION,
    "cross_entropy": Task.CLASSIFICATION,
}


@dataclass(frozen=True)
class PermutationOptions:
    """``[methods.permutation]`` in audit.toml."""

    n_repeats: int = option(
        5,
        Interval(int, low=1),
        doc="shuffles per feature; the figure is their mean, `std` its standard error",
    )
    max_samples: int | float | None = option(
        None,
        Interval(int, low=1),
        Interval(float, low=0.0, high=1.0, closed="right"),
        doc="rows drawn (without replacement) before shuffling: an integer is a count, "
        "a decimal (0.5) a fraction",
        default_doc="all rows",
    )
    scoring: str = option(
        "loss",
        Choices(tuple(SCORINGS)),
        doc='"loss": the task\'s loss, or the RMS output change without y; "mse", "mae" (regression) and '
        '"accuracy", "cross_entropy" (classification) need y',
    )


@dataclass(frozen=True)
class _Metric:
    """A per-sample metric: `name` as stored, and whether a larger value is better (accuracy)."""

    name: str
    per_sample: Callable[[FloatArray, FloatArray], FloatArray]
    higher_is_better: bool = False


def compute_permutation(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    target: OutputTarget = REGRESSION_TARGET,
    n_repeats: int = 5,
    max_samples: int | float | None = None,
    scoring: str = "loss",
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
    target : OutputTarget
        Its task (and output activation) picks the loss when y is given.
    n_repeats : int
        Independent shuffles per feature; the value is their mean, `std` its standard error.
    max_samples : int, float or None
        Rows used: a count (capped at n_samples), a fraction in (0, 1] of n_samples, or None for
        all. A subsample is drawn without replacement before the permutations.
    scoring : {"loss", "mse", "mae", "accuracy", "cross_entropy"}
        "loss": the task's loss (or the RMS output change without y); "mse"/"mae" for regression,
        "accuracy"/"cross_entropy" for classification. Named metrics need y.
    random_state : int, Generator or None
        Converted once with ``np.random.default_rng``; an int is stored with the result.
    batch_size : int, optional
        Rows of copies per model call (default: as many as fit `chunk_bytes`, at most
        `audit.forward.MAX_ROWS_PER_CALL`).
    chunk_bytes : int
        Memory budget for the model input of one call. Shuffled copies are assembled in the
        traced function; a copy bigger than one call is split by samples, so memory does not
        grow with the sample beyond X and one value per sample.

    Returns
    -------
    Importance
        ``values`` (n_features,) mean score increase (accuracy: decrease), ``std``,
        ``repeats`` (n_features, n_repeats).

    References
    ----------
    Breiman (2001), "Random Forests", Machine Learning 45, 5-32.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    metric = _metric(scoring, target, y)
    if y is not None and target.task is Task.CLASSIFICATION:
        problem = check_labels(y, tuple(model.outputs[0].shape)[1:], sigmoid=target.activation == "sigmoid")
        if problem is not None:
            raise ValueError(f"y does not fit the model: {problem}")
    n_used = _n_used(max_samples, X.shape[0])
    n_samples = int(X.shape[0])
    rng = np.random.default_rng(random_state)
    if n_used < n_samples:
        rows = np.sort(rng.choice(n_samples, size=n_used, replace=False))
        X, y = X[rows], None if y is None else y[rows]
    predictor = Predictor(model, batch_size=batch_size, chunk_bytes=chunk_bytes)
    reference = predictor.predict(X)
    n_features = X.shape[-1]
    scores = np.empty((n_features, n_repeats))
    if metric is None or y is None:
        for (repeat, feature), squared in _permuted_scores(
            predictor, X, n_repeats, rng, _squared_change(reference)
        ):
            scores[feature, repeat] = float(np.sqrt(squared.mean()))
    else:
        baseline = float(metric.per_sample(reference, y).mean())
        for (repeat, feature), per_sample in _permuted_scores(
            predictor, X, n_repeats, rng, _per_row(metric, y)
        ):
            change = float(per_sample.mean()) - baseline
            scores[feature, repeat] = -change if metric.higher_is_better else change
    return Importance(
        method="permutation",
        feature_names=feature_names,
        values=scores.mean(axis=1),
        std=standard_error(scores.T),
        repeats=scores,
        parameters={
            "n_repeats": n_repeats,
            "random_state": random_state if isinstance(random_state, int) else None,
            "scoring": scoring,
            "score": _score_name(metric),
            "metric": None if metric is None else metric.name,
            "loss": None if metric is None or metric.higher_is_better else metric.name,
            "target": target.describe(),
            "n_samples": n_samples,
            "max_samples": n_used,
        },
    )


def _metric(scoring: str, target: OutputTarget, y: FloatArray | None) -> _Metric | None:
    """The metric `scoring` names for this task, or None for the RMS output change (no y)."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}; got {scoring!r}")
    task = SCORINGS[scoring]
    if task is not None and task is not target.task:
        fitting = [name for name, for_task in SCORINGS.items() if for_task in (None, target.task)]
        raise ValueError(
            f"scoring {scoring!r} is for {task.value} models and this one is a {target.task.value} "
            f"model; use one of {', '.join(fitting)}"
        )
    if y is None:
        if scoring == "loss":
            return None
        raise MethodNotApplicable(
            f"scoring {scoring!r} needs targets y and the eval sample has none "
            "(scoring 'loss' scores the RMS output change without them)"
        )
    sigmoid = target.activation == "sigmoid"
    if scoring == "mae":
        return _Metric("absolute_error", _absolute_error)
    if scoring == "accuracy":
        accuracy = functools.partial(per_sample_accuracy, sigmoid=sigmoid)
        return _Metric("accuracy", accuracy, higher_is_better=True)
    loss = functools.partial(per_sample_loss, task=target.task, sigmoid=sigmoid)
    return _Metric("squared_error" if target.task is Task.REGRESSION else "cross_entropy", loss)


def _score_name(metric: _Metric | None) -> str:
    if metric is None:
        return "rms_output_change"
    return "accuracy_decrease" if metric.higher_is_better else "loss_increase"


def _absolute_error(outputs: FloatArray, y: FloatArray) -> FloatArray:
    """Mean absolute error over outputs, per sample."""
    return np.asarray(np.mean(np.abs(outputs - y.reshape(y.shape[0], -1)), axis=1), dtype=np.float64)


def _n_used(max_samples: int | float | None, n_samples: int) -> int:
    """The number of rows `max_samples` asks for, checked (a count is capped at n_samples)."""
    if max_samples is None:
        return n_samples
    if isinstance(max_samples, bool) or not isinstance(max_samples, int | float):
        raise ValueError(f"max_samples must be an int count or a float fraction, got {max_samples!r}")
    if isinstance(max_samples, int):
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 as a count, got {max_samples}")
        return min(max_samples, n_samples)
    if not 0.0 < max_samples <= 1.0:
        raise ValueError(
            f"max_samples as a float is a fraction in (0, 1], got {max_samples}; give a count as an int"
        )
    return max(1, int(max_samples * n_samples))


#: Per-row figures of a chunk's outputs (n_jobs, n_rows, n_outputs) on the rows `rows` of X.
RowScore = Callable[[FloatArray, slice], FloatArray]


def _squared_change(reference: FloatArray) -> RowScore:
    """Mean squared output change of each row against the unshuffled outputs."""
    return lambda outputs, rows: np.mean((outputs - reference[rows][np.newaxis]) ** 2, axis=2)


def _per_row(metric: _Metric, y: FloatArray) -> RowScore:
    """The metric of each row of every copy, against the row's targets."""
    return lambda outputs, rows: np.stack([metric.per_sample(output, y[rows]) for output in outputs])


def _permuted_scores(
    predictor: Predictor, X: FloatArray, n_repeats: int, rng: np.random.Generator, row_score: RowScore
) -> Iterator[tuple[Job, FloatArray]]:
    """Score every (repeat, feature) shuffled copy of X per sample; yields each job and its
    (n_samples,) figures, in (repeat, feature) order.

    Copies are scored in chunks of model calls (several copies per call, or one copy split by
    samples; `audit.forward.copies_by_chunk`). Each job's permutation is drawn at its first
    rows, in (repeat, feature) order, so results do not depend on the chunking.
    """
    n_samples, n_features = X.shape[0], X.shape[-1]
    jobs = [(r, f) for r in range(n_repeats) for f in range(n_features)]
    drawn: list[np.ndarray] = []

    def shuffled(job: Job, rows: slice) -> np.ndarray:
        if rows.start == 0:
            drawn[:] = [rng.permutation(n_samples)]
        return X[drawn[0][rows], ..., job[1]]

    chunks = predictor.predict_copies(X, jobs, shuffled)
    yield from per_sample_by_job(
        ((copies, row_score(outputs, copies.rows)) for copies, outputs in chunks), n_samples
    )


@register_method(
    "permutation",
    needs_eval_sample=True,
    description="loss increase (or RMS output change without y) when one feature is shuffled",
    options=PermutationOptions,
)
def _permutation(
    model: keras.Model, X: FloatArray | None, y: FloatArray | None, context: MethodContext[PermutationOptions]
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    options = context.options
    return compute_permutation(
        model,
        X,
        y,
        feature_names=context.feature_names,
        target=context.target,
        n_repeats=options.n_repeats,
        max_samples=options.max_samples,
        scoring=options.scoring,
        random_state=context.random_state,
    )
