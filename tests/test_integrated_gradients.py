from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods.integrated_gradients import compute_integrated_gradients, quadrature
from audit.targets import OutputTarget
from audit.types import Task
from tests.helpers import linear_model, mlp_ignoring


def _gru_forecaster(seed: int = 0) -> keras.Model:
    """The reference workload's shape: GRU -> AvgPool -> Conv1D -> Dense on (24 steps, 11 features)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24, 11))
    x = keras.layers.GRU(32, return_sequences=True)(inputs)
    x = keras.layers.AveragePooling1D(2)(x)
    x = keras.layers.Conv1D(16, 3, activation="relu", padding="same")(x)
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))


def _cnn_classifier(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((100, 6))
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv1D(16, 5, activation="relu", padding="same")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("rule", ["gauss_legendre", "trapezoid"])
def test_quadrature_weights_integrate_polynomials(rule: str) -> None:
    nodes, weights = quadrature(16, rule)  # type: ignore[arg-type]
    assert weights.sum() == pytest.approx(1.0)
    assert np.all((nodes >= 0) & (nodes <= 1))
    assert float(weights @ nodes**2) == pytest.approx(1 / 3, rel=1e-2 if rule == "trapezoid" else 1e-12)


def test_linear_model_attributions_are_exact() -> None:
    w = np.array([2.0, -1.0, 0.5])
    model = linear_model(w, bias=0.3)
    X = np.random.default_rng(0).normal(size=(50, 3))
    baseline = np.array([0.5, 0.0, -1.0])
    result = compute_integrated_gradients(model, X, feature_names=("a", "b", "c"), baseline=baseline, steps=4)
    expected = np.abs((X - baseline) * w).mean(axis=0)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6)
    assert result.parameters["completeness_max_abs_delta"] < 1e-4
    assert result.parameters["steps_raised"] is False


def test_ignored_feature_gets_zero_attribution() -> None:
    model = mlp_ignoring(4, ignored=1)
    X = np.random.default_rng(1).normal(size=(64, 4))
    result = compute_integrated_gradients(model, X, feature_names=("a", "b", "c", "d"), baseline="mean")
    assert result.values[1] < 1e-7 and np.all(np.delete(result.values, 1) > 1e-3)


@pytest.mark.parametrize(
    ("make_model", "shape", "target"),
    [
        (_gru_forecaster, (24, 11), OutputTarget(Task.REGRESSION)),
        (_cnn_classifier, (100, 6), OutputTarget(Task.CLASSIFICATION, "softmax")),
    ],
    ids=["gru", "cnn"],
)
def test_completeness_within_one_percent_at_default_steps(make_model, shape, target) -> None:  # type: ignore[no-untyped-def]
    model = make_model()
    X = np.random.default_rng(2).normal(size=(64, *shape))
    names = tuple(f"f{i}" for i in range(shape[-1]))
    result = compute_integrated_gradients(model, X, feature_names=names, target=target, tolerance=1.0)
    assert result.parameters["steps"] == 32  # no raising allowed by the tolerance: default steps
    assert result.parameters["completeness_median_rel_delta"] < 0.01
    assert result.profile is not None and result.profile.shape == shape


def test_steps_are_raised_until_complete_and_recorded() -> None:
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1, activation="tanh"),
        ]
    )
    model.layers[0].set_weights(
        [np.full((3, 16), 3.0, np.float32) * np.sign(np.arange(16) - 7.5), np.zeros(16, np.float32)]
    )
    X = np.random.default_rng(3).normal(size=(32, 3)) * 3
    names = ("a", "b", "c")
    coarse = compute_integrated_gradients(
        model, X, feature_names=names, steps=2, rule="trapezoid", tolerance=1.0
    )
    assert coarse.parameters["completeness_median_rel_delta"] > 0.001
    fine = compute_integrated_gradients(
        model, X, feature_names=names, steps=2, rule="trapezoid", tolerance=0.001
    )
    assert fine.parameters["steps_raised"] is True and fine.parameters["steps"] > 2
    assert fine.parameters["completeness_median_rel_delta"] <= 0.001


def test_same_input_same_numbers() -> None:
    model = _gru_forecaster(1)
    X = np.random.default_rng(5).normal(size=(20, 24, 11))
    names = tuple(f"f{i}" for i in range(11))
    first = compute_integrated_gradients(model, X, feature_names=names)
    again = compute_integrated_gradients(model, X, feature_names=names, chunk_bytes=1)
    np.testing.assert_allclose(first.values, again.values, rtol=1e-5)
