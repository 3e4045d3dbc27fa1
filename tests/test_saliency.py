from __future__ import annotations

import keras
import numpy as np

from audit.methods.saliency import SALIENCY_VERSION, compute_gradient_x_input, compute_saliency
from audit.targets import OutputTarget
from audit.types import Task
from tests.helpers import linear_model, mlp_ignoring


def test_saliency_of_a_linear_model_is_the_magnitude_of_its_weights_and_their_sign_its_direction() -> None:
    w = np.array([2.0, -1.0, 0.5])
    X = np.random.default_rng(0).normal(size=(40, 3))
    result = compute_saliency(linear_model(w), X, feature_names=("a", "b", "c"))
    np.testing.assert_allclose(result.values, np.abs(w), rtol=1e-6)
    np.testing.assert_allclose(result.direction, w, rtol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(result.std, 0.0, atol=1e-6)  # type: ignore[arg-type]
    assert not result.signed and list(result.ranks) == [1, 2, 3]
    assert result.method_version == SALIENCY_VERSION == 2


def test_signs_cancel_in_the_signed_mean_but_not_in_the_magnitude() -> None:
    """Seed 002's task: the output is the product of two inputs, so dF/dx0 = x1 changes sign with x1.
    The signed mean (saliency version 1, kept as the direction) is noise around 0; the magnitude is
    not, and an input the model ignores still scores 0."""
    inputs = keras.Input((8, 3))
    first = inputs[:, :, 0:1]
    second = inputs[:, :, 1:2]
    product = keras.layers.Multiply()([first, second])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(product))
    X = np.random.default_rng(7).normal(size=(400, 8, 3))
    result = compute_saliency(model, X, feature_names=("x0", "x1", "ignored"))
    direction_se = np.array(result.parameters["direction_std"])
    assert result.direction is not None
    assert np.all(np.abs(result.direction[:2]) < 4 * direction_se[:2])  # the signed mean cancels
    expected = np.abs(X[:, :, [1, 0]]).mean(axis=(0, 1)) / 8  # E|dF/dx0| = E|x1| / steps
    np.testing.assert_allclose(result.values[:2], expected, rtol=1e-5)
    assert result.values[2] == 0.0 and min(result.values[:2]) > 10 * np.max(np.abs(result.direction[:2]))


def test_gradient_x_input_of_a_linear_model() -> None:
    w = np.array([2.0, -1.0, 0.0])
    X = np.random.default_rng(1).normal(size=(40, 3))
    result = compute_gradient_x_input(linear_model(w), X, feature_names=("a", "b", "c"))
    np.testing.assert_allclose(result.values, np.abs(X * w).mean(axis=0), rtol=1e-5)
    assert result.values[2] == 0.0


def test_ignored_feature_and_sequence_profile() -> None:
    model = mlp_ignoring(4, ignored=0)
    X = np.random.default_rng(2).normal(size=(30, 4))
    assert abs(compute_saliency(model, X, feature_names=tuple("abcd")).values[0]) < 1e-9

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 2))
    # output = sum over steps of x[:, t, 0] * (t + 1): gradient profile (t + 1, 0) per step
    weights = np.zeros((12, 1), np.float32)
    weights[0::2, 0] = np.arange(1, 7)
    dense = keras.layers.Dense(1, use_bias=False)
    sequence_model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights])
    S = np.random.default_rng(3).normal(size=(10, 6, 2))
    result = compute_saliency(sequence_model, S, feature_names=("a", "b"))
    assert result.profile is not None
    np.testing.assert_allclose(result.profile[:, 0], np.arange(1, 7), rtol=1e-6)
    np.testing.assert_allclose(result.profile[:, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(result.values, [3.5, 0.0], atol=1e-6)


def test_classifier_gradient_is_of_the_predicted_class_probability() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.layers[0].set_weights(
        [np.array([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32)]
    )
    X = np.random.default_rng(4).normal(size=(50, 3))
    result = compute_saliency(
        model, X, feature_names=("a", "b", "c"), target=OutputTarget(Task.CLASSIFICATION, "softmax")
    )
    # d p_pred / d x0 = 2 p (1 - p) * (+1 if class 0 predicted else -1 ... ) is nonzero; x1, x2 unused
    assert result.values[0] > 0 and np.all(result.values[1:] < 1e-9)
    # every sample's predicted-class probability rises with |x0| in its own direction
    p0 = 1 / (1 + np.exp(-2 * X[:, 0]))
    signed = np.where(X[:, 0] >= 0, 2 * p0 * (1 - p0), -2 * p0 * (1 - p0))
    np.testing.assert_allclose(result.values[0], np.abs(signed).mean(), rtol=1e-4)
    np.testing.assert_allclose(result.direction[0], signed.mean(), rtol=1e-4, atol=1e-7)  # type: ignore[index]


def test_std_is_the_standard_error_over_samples() -> None:
    model = mlp_ignoring(3, ignored=2, seed=5)
    X = np.random.default_rng(6).normal(size=(80, 3))
    result = compute_gradient_x_input(model, X, feature_names=("a", "b", "c"))
    # per-sample |g * x| from an independent finite-difference gradient
    eps = 1e-3
    base = model.predict(X, verbose=0)[:, 0]
    per_sample = np.stack(
        [
            np.abs((model.predict(X + eps * np.eye(3)[j], verbose=0)[:, 0] - base) / eps * X[:, j])
            for j in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(result.values, per_sample.mean(axis=0), rtol=2e-2, atol=1e-4)
    np.testing.assert_allclose(result.std, per_sample.std(axis=0, ddof=1) / np.sqrt(80), rtol=5e-2, atol=1e-4)  # type: ignore[arg-type]
