"""The loss and metric of a model on its eval sample, against numbers computed by hand."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from audit.evaluation import evaluate_model, r2_score
from audit.targets import REGRESSION_TARGET, OutputTarget
from audit.types import AuditError, EvalSample, ModelEvaluation, Task
from tests.helpers import linear_model

SOFTMAX = OutputTarget(Task.CLASSIFICATION, activation="softmax")
SIGMOID = OutputTarget(Task.CLASSIFICATION, activation="sigmoid")


def _sample(X: np.ndarray, y: np.ndarray | None) -> EvalSample:
    names = tuple(f"x{i}" for i in range(X.shape[-1]))
    return EvalSample(X=X, y=y, feature_names=names, source=Path("/registry/w/eval.npz"), content_hash="h")


def _dense(weights: np.ndarray, bias: np.ndarray, activation: str) -> keras.Model:
    """A Dense layer with its weights set by hand: outputs = activation(x @ weights + bias)."""
    model = keras.Sequential(
        [keras.Input((weights.shape[0],)), keras.layers.Dense(weights.shape[1], activation=activation)]
    )
    model.layers[0].set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    return model


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_regression_mse_and_r2_by_hand() -> None:
    # predictions 2 * x = [0, 2, 4, 6] against y = [0, 2, 4, 8]: one residual of -2
    model = linear_model([2.0])
    evaluation = evaluate_model(
        model, _sample(np.arange(4.0)[:, None], np.array([0.0, 2.0, 4.0, 8.0])), REGRESSION_TARGET
    )
    assert evaluation is not None
    assert (evaluation.loss_name, evaluation.metric_name, evaluation.n_samples) == ("mse", "r2", 4)
    np.testing.assert_allclose(evaluation.loss, 4.0 / 4)
    # mean of y is 3.5: total sum of squares 12.25 + 2.25 + 0.25 + 20.25 = 35
    np.testing.assert_allclose(evaluation.metric, 1 - 4.0 / 35)


def test_regression_of_a_noisy_linear_model_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    w, bias = np.array([1.5, -2.0, 0.0]), 0.5
    X = rng.normal(size=(500, 3))
    y = X @ w + bias + rng.normal(scale=0.7, size=500)
    evaluation = evaluate_model(linear_model(w, bias), _sample(X, y), REGRESSION_TARGET)
    predicted = X @ w + bias
    assert evaluation is not None
    np.testing.assert_allclose(evaluation.loss, np.mean((predicted - y) ** 2), rtol=1e-5)
    expected_r2 = 1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)
    np.testing.assert_allclose(evaluation.metric, expected_r2, rtol=1e-5)
    assert 0.5 < evaluation.metric < 1.0


def test_r2_is_averaged_over_outputs_and_a_constant_target_predicted_exactly_scores_one() -> None:
    # output 0 = 2 x (r2 1 - 4/35 as above), output 1 = 5 exactly against a constant target 5
    model = _dense(np.array([[2.0, 0.0]]), np.array([0.0, 5.0]), "linear")
    y = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0], [8.0, 5.0]])
    evaluation = evaluate_model(model, _sample(np.arange(4.0)[:, None], y), REGRESSION_TARGET)
    assert evaluation is not None
    np.testing.assert_allclose(evaluation.metric, ((1 - 4.0 / 35) + 1.0) / 2)
    np.testing.assert_allclose(evaluation.loss, (4.0 + 0.0) / 8)  # mean over samples and outputs


def test_r2_edge_cases() -> None:
    constant = np.full(3, 2.0)
    assert r2_score(np.full((3, 1), 1.0), constant) == 0.0  # constant target, missed: not finite -> 0
    assert np.isnan(r2_score(np.ones((1, 1)), np.ones(1)))  # one sample: not defined


def test_softmax_cross_entropy_and_accuracy_by_hand() -> None:
    rng = np.random.default_rng(1)
    weights, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    X = rng.normal(size=(200, 4))
    labels = rng.integers(0, 3, size=200)
    evaluation = evaluate_model(_dense(weights, bias, "softmax"), _sample(X, labels.astype(float)), SOFTMAX)
    probabilities = _softmax(X @ weights + bias)
    assert evaluation is not None
    assert (evaluation.loss_name, evaluation.metric_name) == ("cross_entropy", "accuracy")
    expected_loss = -np.mean(np.log(probabilities[np.arange(200), labels]))
    np.testing.assert_allclose(evaluation.loss, expected_loss, rtol=1e-5)
    assert evaluation.metric == np.mean(probabilities.argmax(axis=1) == labels)


def test_binary_sigmoid_cross_entropy_and_accuracy_by_hand() -> None:
    rng = np.random.default_rng(2)
    weights, bias = np.array([[1.0], [-0.5]]), np.array([0.2])
    X = rng.normal(size=(300, 2))
    p = 1 / (1 + np.exp(-(X @ weights + bias)[:, 0]))
    labels = (rng.random(300) < p).astype(float)  # labels drawn from the model: accuracy well above 0.5
    evaluation = evaluate_model(_dense(weights, bias, "sigmoid"), _sample(X, labels), SIGMOID)
    assert evaluation is not None
    expected_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    np.testing.assert_allclose(evaluation.loss, expected_loss, rtol=1e-5)
    assert evaluation.metric == np.mean((p >= 0.5) == (labels == 1))


def test_multi_step_softmax_has_one_label_per_step() -> None:
    # a Dense softmax on the last axis of (n, 3 steps, 2 inputs): 4 classes per step
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(2, 4)), rng.normal(size=4)
    inputs = keras.Input((3, 2))
    dense = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    X = rng.normal(size=(50, 3, 2))
    labels = rng.integers(0, 4, size=(50, 3))
    evaluation = evaluate_model(model, _sample(X, labels.astype(float)), SOFTMAX)
    probabilities = _softmax(X @ weights + bias)  # (50, 3, 4)
    chosen = np.take_along_axis(probabilities, labels[..., None], axis=2)[..., 0]
    assert evaluation is not None
    np.testing.assert_allclose(evaluation.loss, -np.mean(np.log(chosen)), rtol=1e-5)
    np.testing.assert_allclose(evaluation.metric, np.mean(probabilities.argmax(axis=2) == labels))


def test_predictions_come_in_chunks_not_from_model_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(37, 2))
    y = X @ np.array([1.0, 3.0]) + rng.normal(size=37)
    model = linear_model([1.0, 3.0])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("model.predict holds the whole sample at once; use audit.forward.Predictor")

    monkeypatch.setattr(model, "predict", refuse)
    whole = evaluate_model(model, _sample(X, y), REGRESSION_TARGET)
    chunked = evaluate_model(model, _sample(X, y), REGRESSION_TARGET, batch_size=5)
    assert whole is not None and chunked is not None
    np.testing.assert_allclose([chunked.loss, chunked.metric], [whole.loss, whole.metric], rtol=1e-6)


def test_nothing_to_evaluate_without_a_sample_or_targets() -> None:
    model = linear_model([1.0])
    assert evaluate_model(model, None, REGRESSION_TARGET) is None
    assert evaluate_model(model, _sample(np.ones((5, 1)), None), REGRESSION_TARGET) is None


def test_labels_that_do_not_fit_name_the_file() -> None:
    model = _dense(np.ones((2, 3)), np.zeros(3), "softmax")
    with pytest.raises(AuditError, match=r"eval\.npz: labels span 0\.\.5 but the model has 3 classes"):
        evaluate_model(model, _sample(np.ones((4, 2)), np.array([0.0, 1.0, 2.0, 5.0])), SOFTMAX)
    with pytest.raises(AuditError, match="y has 3 values per sample but the model has 1 outputs"):
        evaluate_model(linear_model([1.0]), _sample(np.ones((4, 1)), np.ones((4, 3))), REGRESSION_TARGET)


def test_result_is_a_model_evaluation() -> None:
    evaluation = evaluate_model(
        linear_model([1.0]), _sample(np.arange(3.0)[:, None], np.arange(3.0)), REGRESSION_TARGET
    )
    # an exact fit: every per-sample loss is 0, so is its standard error
    assert evaluation == ModelEvaluation("mse", 0.0, "r2", 1.0, 3, loss_se=0.0)


def test_loss_standard_error_is_the_sd_of_per_sample_losses_over_root_n() -> None:
    y = np.array([0.0, 1.0, 3.0, 7.0])
    evaluation = evaluate_model(linear_model([1.0]), _sample(np.zeros((4, 1)), y), REGRESSION_TARGET)
    assert evaluation is not None and evaluation.loss == np.mean(y**2)
    assert evaluation.loss_se == np.std(y**2, ddof=1) / 2
