from __future__ import annotations

import keras
import numpy as np

from audit.methods.permutation import compute_permutation
from audit.types import Task
from tests.helpers import linear_model, mlp_ignoring

NAMES4 = ("a", "b", "c", "d")


def test_ignored_feature_scores_zero_and_used_ones_do_not() -> None:
    model = mlp_ignoring(4, ignored=2)
    X = np.random.default_rng(0).normal(size=(200, 4))
    y = model.predict(X, verbose=0)[:, 0]
    result = compute_permutation(model, X, y, feature_names=NAMES4, n_repeats=4, random_state=0)
    assert abs(result.values[2]) < 1e-9 and result.std is not None and result.std[2] < 1e-9
    assert np.all(np.delete(result.values, 2) > 1e-3)
    assert result.repeats is not None and result.repeats.shape == (4, 4)
    assert result.parameters["score"] == "loss_increase"


def test_linear_model_loss_increase_matches_theory() -> None:
    # For y = w.x and a shuffled feature j, the expected MSE increase is 2 * w_j^2 * var(x_j).
    w = np.array([2.0, 1.0, 0.0])
    model = linear_model(w)
    X = np.random.default_rng(1).normal(size=(4000, 3))
    y = X @ w
    result = compute_permutation(model, X, y, feature_names=("a", "b", "c"), n_repeats=3, random_state=0)
    np.testing.assert_allclose(result.values, 2 * w**2 * X.var(axis=0), rtol=0.08, atol=1e-6)


def test_without_targets_scores_rms_output_change() -> None:
    model = linear_model([1.0, 0.0])
    X = np.random.default_rng(2).normal(size=(3000, 2))
    result = compute_permutation(model, X, feature_names=("a", "b"), n_repeats=2, random_state=0)
    # shuffling x0 changes the output by x0 - x0', whose RMS is sqrt(2 var(x0))
    np.testing.assert_allclose(result.values[0], np.sqrt(2 * X[:, 0].var()), rtol=0.05)
    assert result.values[1] < 1e-9
    assert result.parameters["score"] == "rms_output_change"


def test_sequence_feature_moves_as_a_whole_series() -> None:
    # An identity model (outputs = flattened input) exposes the shuffled input itself: the RMS
    # change for feature 0 must equal that of moving each sample's whole series of feature 0 to
    # another sample (X[perm, :, 0]), which a per-step shuffle would not reproduce.
    inputs = keras.Input((5, 2))
    model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    X = np.random.default_rng(3).normal(size=(50, 5, 2))
    result = compute_permutation(model, X, feature_names=("a", "b"), n_repeats=1, random_state=0)
    perm = np.random.default_rng(0).permutation(50)  # the first permutation drawn: feature 0, repeat 0
    changed = (X[perm, :, 0] - X[:, :, 0]) ** 2
    expected = np.sqrt(changed.sum() / (50 * 5 * 2))  # feature 1's outputs do not change
    np.testing.assert_allclose(result.values[0], expected, rtol=1e-5)


def test_same_seed_same_numbers_and_chunking_does_not_matter() -> None:
    model = mlp_ignoring(4, ignored=0, seed=3)
    X = np.random.default_rng(4).normal(size=(100, 4))
    y = np.random.default_rng(5).normal(size=100)
    first = compute_permutation(model, X, y, feature_names=NAMES4, random_state=7)
    again = compute_permutation(model, X, y, feature_names=NAMES4, random_state=7, chunk_bytes=1)
    np.testing.assert_allclose(first.values, again.values, rtol=1e-6)
    other = compute_permutation(model, X, y, feature_names=NAMES4, random_state=8)
    assert not np.allclose(first.values, other.values)


def test_classification_uses_cross_entropy_of_the_true_class() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    kernel = np.array([[4.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    model.layers[0].set_weights([kernel, np.zeros(3, np.float32)])
    X = np.random.default_rng(6).normal(size=(300, 3))
    y = np.argmax(X[:, :1] * np.array([[1.0, 0.0, -1.0]]), axis=1).astype(float)
    result = compute_permutation(
        model, X, y, feature_names=("a", "b", "c"), task=Task.CLASSIFICATION, random_state=0
    )
    assert result.values[0] > 0.5
    np.testing.assert_allclose(result.values[1:], 0.0, atol=1e-9)
    assert result.parameters["loss"] == "cross_entropy"
