"""The classic variable-importance example (seed 002): an LSTM learns y = (x1 * x2 < 0.25) at every
step from three uniform features; x3 is irrelevant. Every data method must rank x1 and x2 far above x3."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods.gradient_shap import compute_gradient_shap
from audit.methods.integrated_gradients import compute_integrated_gradients
from audit.methods.permutation import compute_permutation
from audit.methods.perturbation import compute_perturbation
from audit.methods.saliency import compute_saliency
from audit.targets import OutputTarget
from audit.types import Importance, Task

pytestmark = pytest.mark.slow
NAMES = ("x1", "x2", "x3")
STEPS = 10


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(seed).random((n, STEPS, 3))
    return X, (X[:, :, 0] * X[:, :, 1] < 0.25).astype(np.float64)


@pytest.fixture(scope="module")
def trained() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(2019)
    model = keras.Sequential(
        [
            keras.Input((STEPS, 3)),
            keras.layers.LSTM(16, return_sequences=True),
            keras.layers.LSTM(8, return_sequences=True),
            keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid")),
            keras.layers.Flatten(),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    X_train, y_train = _data(6000, 0)
    model.fit(X_train, y_train, epochs=8, batch_size=64, verbose=0)
    X, y = _data(300, 1)
    accuracy = float(np.mean((model.predict(X, verbose=0) > 0.5) == y))
    assert accuracy > 0.9, f"the planted model did not learn the rule (accuracy {accuracy:.2f})"
    return model, X, y


def _assert_planted(result: Importance) -> None:
    x1, x2, x3 = np.abs(result.values)
    assert min(x1, x2) >= 5 * x3, f"{result.method}: x1 {x1:.4g}, x2 {x2:.4g}, x3 {x3:.4g}"


TARGET = OutputTarget(Task.CLASSIFICATION, "sigmoid")


def test_perturbation(trained: tuple[keras.Model, np.ndarray, np.ndarray]) -> None:
    model, X, _ = trained
    _assert_planted(compute_perturbation(model, X, feature_names=NAMES, scale=0.2, random_state=0))


def test_permutation(trained: tuple[keras.Model, np.ndarray, np.ndarray]) -> None:
    model, X, y = trained
    _assert_planted(compute_permutation(model, X, y, feature_names=NAMES, target=TARGET, random_state=0))


def test_integrated_gradients(trained: tuple[keras.Model, np.ndarray, np.ndarray]) -> None:
    model, X, _ = trained
    result = compute_integrated_gradients(model, X, feature_names=NAMES, target=TARGET, baseline="mean")
    _assert_planted(result)
    assert result.profile is not None and result.profile.shape == (STEPS, 3)


def test_saliency(trained: tuple[keras.Model, np.ndarray, np.ndarray]) -> None:
    model, X, _ = trained
    _assert_planted(compute_saliency(model, X, feature_names=NAMES, target=TARGET))


def test_gradient_shap(trained: tuple[keras.Model, np.ndarray, np.ndarray]) -> None:
    model, X, _ = trained
    result = compute_gradient_shap(model, X, feature_names=NAMES, target=TARGET, random_state=0)
    _assert_planted(result)
    assert result.profile is not None and result.profile.shape == (STEPS, 3)
