"""Input perturbation: how much the model output moves when one feature gets Gaussian noise.

The "perturb" method of Gevrey, Dimopoulos & Lek (2003), Ecological Modelling 160, 249-264,
compared in Olden, Joy & Death (2004), Ecological Modelling 178, 389-397, and the sensitivity
check of seed 002 for recurrent models: for a feature f and a repeat r, add noise
N(0, (scale * std_f)^2) to feature f only, independently for every sample and every time step,
and measure the RMS change of the model output (all outputs) against the unperturbed output.
The value is the mean over repeats; `std` its standard error over repeats.

Noise is scaled by each feature's own standard deviation over the eval sample (all samples and
steps) so features in different units are perturbed alike; seed 002 could use one absolute scale
only because its features were all U(0, 1). The default scale, 0.1 std, keeps the perturbed rows
close to the data the model was trained on (a tenth of each feature's spread), so the figure reads
as a local sensitivity (for a smooth model, about |d output / d x_f| * 0.1 * std_f) rather than as
the model's behaviour far out of distribution, while staying far above float32 rounding. A
feature with std 0 is constant in the sample: there is no spread to scale, and it scores 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

from audit.forward import DEFAULT_CHUNK_BYTES, Job, Predictor, per_sample_by_job
from audit.methods.base import MethodContext, MethodNotApplicable, register_method, standard_error
from audit.options import Interval, option
from audit.types import FloatArray, Importance

DEFAULT_SCALE = 0.1


@dataclass(frozen=True)
class PerturbationOptions:
    """``[methods.perturbation]`` in audit.toml."""

    scale: float = option(
        DEFAULT_SCALE,
        Interval(float, low=0.0, closed="neither"),
        doc="noise standard deviation, in units of each feature's standard deviation over the sample",
    )
    n_repeats: int = option(
        5,
        Interval(int, low=1),
        doc="noisy copies per feature; the figure is their mean, `std` its standard error",
    )


def compute_perturbation(
    model: keras.Model,
    X: FloatArray,
    y: FloatArray | None = None,
    *,
    feature_names: tuple[str, ...],
    scale: float = DEFAULT_SCALE,
    n_repeats: int = 5,
    random_state: int | np.random.Generator | None = None,
    batch_size: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Importance:
    """RMS output change when one feature is perturbed by Gaussian noise.

    Parameters
    ----------
    model : keras.Model
    X : ndarray, shape (n_samples, n_features) or (n_samples, n_steps, n_features)
    y : ndarray, optional
        Unused: the score compares outputs, not errors. Accepted for the shared signature.
    feature_names : tuple of str
        One name per feature (last axis of X).
    scale : float
        Noise standard deviation in units of each feature's standard deviation over X
        (all samples and steps). Must be > 0.
    n_repeats : int
        Independent noise draws per feature; the value is their mean.
    random_state : int, Generator or None
        Converted once with ``np.random.default_rng``; an int is stored with the result.
    batch_size : int, optional
        Rows of copies per model call (default: as many as fit `chunk_bytes`, at most
        `audit.forward.MAX_ROWS_PER_CALL`).
    chunk_bytes : int
        Memory budget for the model input of one call. Perturbed copies are assembled in the
        traced function; a copy bigger than one call is split by samples, so memory does not
        grow with the sample beyond X and one value per sample.

    Returns
    -------
    Importance
        ``values`` (n_features,) mean RMS output change, ``std`` its standard error over repeats,
        ``repeats`` (n_features, n_repeats).

    References
    ----------
    Gevrey, Dimopoulos & Lek (2003), Ecological Modelling 160, 249-264;
    Olden, Joy & Death (2004), Ecological Modelling 178, 389-397.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0 (in units of each feature's std), got {scale}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    if X.shape[-1] != len(feature_names):
        raise MethodNotApplicable(f"X has {X.shape[-1]} features but {len(feature_names)} names")
    rng = np.random.default_rng(random_state)
    n_features = X.shape[-1]
    feature_std = np.std(X.reshape(-1, n_features), axis=0, dtype=np.float64)
    predictor = Predictor(model, batch_size=batch_size, chunk_bytes=chunk_bytes)
    reference = predictor.predict(X)
    scores = np.zeros((n_features, n_repeats))
    # Constant features are left out: nothing to scale, and their score is exactly 0 by definition.
    jobs = [(r, f) for r in range(n_repeats) for f in range(n_features) if feature_std[f] > 0]
    for (repeat, feature), squared in _perturbed_changes(
        predictor, X, reference, jobs, scale * feature_std, rng
    ):
        scores[feature, repeat] = np.sqrt(squared.mean())
    return Importance(
        method="perturbation",
        feature_names=feature_names,
        values=scores.mean(axis=1),
        std=standard_error(scores.T),
        repeats=scores,
        parameters={
            "scale": float(scale),
            "scale_unit": "feature std",
            "n_repeats": n_repeats,
            "random_state": random_state if isinstance(random_state, int) else None,
            "score": "rms_output_change",
            "target": "all outputs",
            "feature_std": [float(value) for value in feature_std],
            "n_samples": int(X.shape[0]),
        },
    )


def _perturbed_changes(
    predictor: Predictor,
    X: FloatArray,
    reference: FloatArray,
    jobs: list[Job],
    noise_std: FloatArray,
    rng: np.random.Generator,
) -> Iterator[tuple[Job, FloatArray]]:
    """Mean squared output change of every sample under one noisy copy of X per (repeat, feature)
    job; yields each job and its (n_samples,) changes, in job order.

    Copies are scored in chunks of model calls (`audit.forward.copies_by_chunk`); noise is drawn
    job by job, rows in order, so the numbers do not depend on the chunking.
    """

    def noisy(job: Job, rows: slice) -> FloatArray:
        feature = job[1]
        part = X[rows, ..., feature]
        return np.asarray(part + rng.standard_normal(size=part.shape) * noise_std[feature])

    chunks = (
        (copies, np.mean((outputs - reference[copies.rows][np.newaxis]) ** 2, axis=2))
        for copies, outputs in predictor.predict_copies(X, jobs, noisy)
    )
    yield from per_sample_by_job(chunks, X.shape[0])


@register_method(
    "perturbation",
    needs_eval_sample=True,
    description="RMS output change when one feature gets Gaussian noise of scale x its std",
    options=PerturbationOptions,
)
def _perturbation(
    model: keras.Model,
    X: FloatArray | None,
    y: FloatArray | None,
    context: MethodContext[PerturbationOptions],
) -> Importance:
    if X is None:
        raise MethodNotApplicable("needs an eval sample")
    return compute_perturbation(
        model,
        X,
        y,
        feature_names=context.feature_names,
        scale=context.options.scale,
        n_repeats=context.options.n_repeats,
        random_state=context.random_state,
    )
