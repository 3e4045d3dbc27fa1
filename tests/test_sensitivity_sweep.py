"""sensitivity_sweep: spread of the explained output over each feature's quantiles, exact answers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods import registered_methods
from audit.methods.sensitivity_sweep import compute_sensitivity_sweep
from audit.targets import OutputTarget
from audit.types import Task
from tests.helpers import linear_model, mlp_ignoring

NAMES3 = ("a", "b", "c")
LEVELS = np.linspace(0.05, 0.95, 7)


def _width(values: np.ndarray) -> float:
    """q(95 %) - q(5 %) of all values: the width of the default sweep."""
    low, high = np.quantile(values.ravel(), [0.05, 0.95])
    return float(high - low)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def test_linear_model_spread_is_weight_times_quantile_range() -> None:
    w = np.array([2.0, -1.0, 0.0])
    X = np.random.default_rng(0).normal(size=(500, 3)) * np.array([1.0, 3.0, 1.0])
    result = compute_sensitivity_sweep(linear_model(w, bias=0.5), X, feature_names=NAMES3, random_state=0)
    expected = np.abs(w) * np.array([_width(X[:, j]) for j in range(3)])
    np.testing.assert_allclose(result.values, expected, atol=1e-5)
    assert result.std is not None
    np.testing.assert_allclose(result.std, 0.0, atol=1e-5)  # a linear model moves every row alike
    assert result.values[2] < 1e-7
    assert result.parameters["n_rows"] == 200 and result.parameters["n_samples"] == 500
    np.testing.assert_allclose(result.parameters["quantile_levels"], LEVELS)
    assert result.parameters["target"] == "mean of outputs"


def test_ignored_feature_scores_zero_and_used_ones_do_not() -> None:
    model = mlp_ignoring(4, ignored=2)
    X = np.random.default_rng(1).normal(size=(300, 4))
    result = compute_sensitivity_sweep(
        model, X, feature_names=("a", "b", "c", "d"), n_rows=50, random_state=0
    )
    assert result.values[2] < 1e-7
    assert np.all(np.delete(result.values, 2) > 1e-3)


def test_rows_are_drawn_reproducibly_and_chunking_does_not_matter() -> None:
    model = mlp_ignoring(3, ignored=0, seed=2)
    X = np.random.default_rng(3).normal(size=(400, 3))
    first = compute_sensitivity_sweep(model, X, feature_names=NAMES3, n_rows=30, random_state=5)
    again = compute_sensitivity_sweep(
        model, X, feature_names=NAMES3, n_rows=30, random_state=5, chunk_bytes=1, batch_size=7
    )
    np.testing.assert_allclose(again.values, first.values, rtol=1e-6)
    other = compute_sensitivity_sweep(model, X, feature_names=NAMES3, n_rows=30, random_state=6)
    assert not np.allclose(first.values[1:], other.values[1:], rtol=1e-4)
    # with no more rows than n_rows every row is used and the seed does not matter
    everything = compute_sensitivity_sweep(model, X[:30], feature_names=NAMES3, random_state=1)
    same = compute_sensitivity_sweep(model, X[:30], feature_names=NAMES3, random_state=2)
    np.testing.assert_array_equal(everything.values, same.values)
    assert everything.parameters["n_rows"] == 30


def test_softmax_classifier_sweeps_the_probability_of_the_predicted_class() -> None:
    kernel = np.array([[3.0, 0.0, -3.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])
    bias = np.array([0.0, 0.5, 0.0])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    model.layers[0].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    X = np.random.default_rng(4).normal(size=(60, 3))
    result = compute_sensitivity_sweep(
        model,
        X,
        feature_names=NAMES3,
        target=OutputTarget(Task.CLASSIFICATION, "softmax"),
        random_state=0,
    )
    predicted = np.argmax(X @ kernel + bias, axis=1)  # the class of each unmodified row
    expected = []
    for feature in range(3):
        grid = np.quantile(X[:, feature], LEVELS)
        chosen = np.empty((60, len(grid)))
        for index, value in enumerate(grid):
            swept = X.copy()
            swept[:, feature] = value
            chosen[:, index] = _softmax(swept @ kernel + bias)[np.arange(60), predicted]
        expected.append((chosen.max(axis=1) - chosen.min(axis=1)).mean())
    np.testing.assert_allclose(result.values, expected, atol=1e-5)
    assert result.values[0] > 0.1 and result.values[2] < 1e-7
    assert result.parameters["target"] == "predicted class"


def test_sigmoid_classifier_and_a_fixed_class_index() -> None:
    w = np.array([3.0, 0.0, -1.0])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[0].set_weights([w[:, None].astype(np.float32), np.zeros(1, np.float32)])
    X = np.random.default_rng(5).normal(size=(80, 3))
    predicted = compute_sensitivity_sweep(
        model, X, feature_names=NAMES3, target=OutputTarget(Task.CLASSIFICATION, "sigmoid"), random_state=0
    )
    positive = compute_sensitivity_sweep(
        model,
        X,
        feature_names=NAMES3,
        target=OutputTarget(Task.CLASSIFICATION, "sigmoid", class_index=1),
        random_state=0,
    )
    # p and 1 - p have the same spread: the class choice does not change the figure here
    for result in (predicted, positive):
        expected = []
        for feature in range(3):
            grid = np.quantile(X[:, feature], LEVELS)
            p = np.empty((80, len(grid)))
            for index, value in enumerate(grid):
                swept = X.copy()
                swept[:, feature] = value
                p[:, index] = 1 / (1 + np.exp(-(swept @ w)))
            expected.append((p.max(axis=1) - p.min(axis=1)).mean())
        np.testing.assert_allclose(result.values, expected, atol=1e-5)
    assert positive.parameters["target"] == "class 1"
    assert predicted.values[1] < 1e-7


def test_output_index_picks_one_output_of_a_regression_model() -> None:
    kernel = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].set_weights([kernel.astype(np.float32), np.zeros(2, np.float32)])
    X = np.random.default_rng(6).normal(size=(100, 3))
    target = OutputTarget(Task.REGRESSION, output_index=1)
    result = compute_sensitivity_sweep(model, X, feature_names=NAMES3, target=target, random_state=0)
    np.testing.assert_allclose(result.values, [0.0, 2.0 * _width(X[:, 1]), 0.0], atol=1e-5)


def test_sequence_input_sets_the_feature_at_every_step() -> None:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4, 2))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.asarray(dense.kernel)[:, 0].reshape(4, 2)  # (steps, features)
    X = np.random.default_rng(8).normal(size=(50, 4, 2)) * np.array([1.0, 2.0])
    result = compute_sensitivity_sweep(model, X, feature_names=("a", "b"), random_state=0)
    # quantiles over all samples and steps; setting feature f at every step moves y by sum_t w_tf
    expected = [abs(weights[:, f].sum()) * _width(X[..., f]) for f in range(2)]
    np.testing.assert_allclose(result.values, expected, atol=1e-5)


def test_sequence_softmax_output_uses_each_steps_predicted_class() -> None:
    # A per-step classifier, output (n, 4 steps, 3 classes): each step keeps its own class.
    kernel = np.array([[2.0, 0.0, -2.0], [0.0, 1.5, 0.0]])
    inputs = keras.Input((4, 2))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.layers[1].set_weights([kernel.astype(np.float32), np.zeros(3, np.float32)])
    X = np.random.default_rng(9).normal(size=(40, 4, 2))
    result = compute_sensitivity_sweep(
        model,
        X,
        feature_names=("a", "b"),
        target=OutputTarget(Task.CLASSIFICATION, "softmax"),
        random_state=0,
    )
    predicted = np.argmax(X @ kernel, axis=-1)  # (40, 4)
    expected = []
    for feature in range(2):
        grid = np.quantile(X[..., feature], LEVELS)
        chosen = np.empty((40, len(grid)))
        for index, value in enumerate(grid):
            swept = X.copy()
            swept[..., feature] = value
            p = _softmax(swept @ kernel)
            chosen[:, index] = np.take_along_axis(p, predicted[..., None], axis=-1)[..., 0].mean(axis=1)
        expected.append((chosen.max(axis=1) - chosen.min(axis=1)).mean())
    np.testing.assert_allclose(result.values, expected, atol=1e-5)


def test_bad_options_are_refused() -> None:
    X = np.zeros((5, 3))
    model = linear_model([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="n_quantiles must be >= 2"):
        compute_sensitivity_sweep(model, X, feature_names=NAMES3, n_quantiles=1)
    with pytest.raises(ValueError, match="percentiles must be"):
        compute_sensitivity_sweep(model, X, feature_names=NAMES3, percentiles=(0.9, 0.1))


def test_registered_adapter_reads_its_options() -> None:
    spec = registered_methods()["sensitivity_sweep"]
    assert spec.needs_eval_sample
    context = spec.context(
        NAMES3,
        OutputTarget(Task.REGRESSION),
        random_state=4,
        options={"n_rows": 10, "n_quantiles": 3, "percentiles": [0, 1]},
    )
    X = np.random.default_rng(10).normal(size=(40, 3))
    result = spec.compute(linear_model([1.0, 0.0, 2.0]), X, None, context)
    assert result.parameters["n_rows"] == 10 and result.parameters["random_state"] == 4
    assert result.parameters["quantile_levels"] == [0.0, 0.5, 1.0]
    # with levels 0 and 1 the sweep spans the sample's min..max
    np.testing.assert_allclose(result.values[2], 2.0 * np.ptp(X[:, 2]), atol=1e-5)
