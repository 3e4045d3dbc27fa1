from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods import MethodNotApplicable, registered_methods
from audit.methods.permutation import compute_permutation
from audit.options import OptionError
from audit.targets import OutputTarget
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
    # 30 float32 rows of 4 features per model call: every copy is split by samples. The float32
    # outputs of a 30-row call may differ from a 100-row call's in the last bit, and a loss
    # increase is a difference of two means: equal to 1e-5, not to float64 precision.
    again = compute_permutation(model, X, y, feature_names=NAMES4, random_state=7, chunk_bytes=30 * 16)
    np.testing.assert_allclose(first.values, again.values, rtol=1e-5)
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
        model,
        X,
        y,
        feature_names=("a", "b", "c"),
        target=OutputTarget(Task.CLASSIFICATION, "softmax"),
        random_state=0,
    )
    assert result.values[0] > 0.5
    np.testing.assert_allclose(result.values[1:], 0.0, atol=1e-9)
    assert result.parameters["loss"] == "cross_entropy"


def _softmax_classifier() -> keras.Model:
    """Three classes decided by feature 0 alone: logits 4 x0, 0, -4 x0."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    kernel = np.array([[4.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    model.layers[0].set_weights([kernel, np.zeros(3, np.float32)])
    return model


def test_max_samples_subsamples_rows_before_the_permutations() -> None:
    model = mlp_ignoring(4, ignored=3, seed=1)
    X = np.random.default_rng(7).normal(size=(400, 4))
    y = np.random.default_rng(8).normal(size=400)
    result = compute_permutation(model, X, y, feature_names=NAMES4, max_samples=100, random_state=3)
    assert result.parameters["max_samples"] == 100 and result.parameters["n_samples"] == 400
    # The same generator first draws the rows, then the permutations of those rows.
    rng = np.random.default_rng(3)
    rows = np.sort(rng.choice(400, size=100, replace=False))
    by_hand = compute_permutation(model, X[rows], y[rows], feature_names=NAMES4, random_state=rng)
    np.testing.assert_allclose(result.values, by_hand.values, rtol=1e-6)
    fraction = compute_permutation(model, X, y, feature_names=NAMES4, max_samples=0.25, random_state=3)
    np.testing.assert_allclose(fraction.values, result.values, rtol=1e-6)
    assert fraction.parameters["max_samples"] == 100
    capped = compute_permutation(model, X, y, feature_names=NAMES4, max_samples=10_000, random_state=3)
    everything = compute_permutation(model, X, y, feature_names=NAMES4, random_state=3)
    np.testing.assert_array_equal(capped.values, everything.values)
    assert capped.parameters["max_samples"] == everything.parameters["max_samples"] == 400


@pytest.mark.parametrize("max_samples", [0, -3, 0.0, 1.5, True, "all"])
def test_bad_max_samples_is_refused(max_samples: object) -> None:
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match="max_samples"):
        compute_permutation(
            linear_model([1.0, 1.0, 1.0, 1.0]),
            X,
            feature_names=NAMES4,
            max_samples=max_samples,  # type: ignore[arg-type]
        )


def _permutations(seed: int, n_repeats: int, n_features: int, n_samples: int) -> np.ndarray:
    """The permutations compute_permutation draws without subsampling: (repeat, feature) order."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_samples) for _ in range(n_repeats * n_features)]).reshape(
        n_repeats, n_features, n_samples
    )


def test_accuracy_scoring_gives_the_accuracy_drop() -> None:
    model = _softmax_classifier()
    X = np.random.default_rng(6).normal(size=(300, 3))
    y = np.random.default_rng(9).integers(0, 3, size=300).astype(float)
    y[:200] = np.argmax(X[:200, :1] * np.array([[1.0, 0.0, -1.0]]), axis=1)  # two thirds are right
    result = compute_permutation(
        model,
        X,
        y,
        feature_names=("a", "b", "c"),
        target=OutputTarget(Task.CLASSIFICATION, "softmax"),
        n_repeats=3,
        scoring="accuracy",
        random_state=0,
    )
    kernel = np.array([[4.0, 0.0, -4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    base_accuracy = np.mean(np.argmax(X @ kernel, axis=1) == y)
    drops = []
    for permutation in _permutations(0, 3, 3, 300)[:, 0]:  # feature 0 of each repeat
        shuffled = X.copy()
        shuffled[:, 0] = X[permutation, 0]
        drops.append(base_accuracy - np.mean(np.argmax(shuffled @ kernel, axis=1) == y))
    np.testing.assert_allclose(result.values, [np.mean(drops), 0.0, 0.0], atol=1e-12)
    assert result.values[0] > 0.3
    assert result.parameters["scoring"] == "accuracy"
    assert result.parameters["score"] == "accuracy_decrease"
    assert result.parameters["loss"] is None and result.parameters["metric"] == "accuracy"


def test_accuracy_of_a_sigmoid_classifier() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[0].set_weights([np.array([[5.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    X = np.random.default_rng(10).normal(size=(500, 2))
    y = (X[:, 0] > 0).astype(float)  # the model is always right
    result = compute_permutation(
        model,
        X,
        y,
        feature_names=("a", "b"),
        target=OutputTarget(Task.CLASSIFICATION, "sigmoid"),
        n_repeats=1,
        scoring="accuracy",
        random_state=2,
    )
    permutation = _permutations(2, 1, 2, 500)[0, 0]
    expected = 1.0 - np.mean((X[permutation, 0] > 0) == (X[:, 0] > 0))
    np.testing.assert_allclose(result.values, [expected, 0.0], atol=1e-12)


def test_mae_scoring_on_a_linear_model() -> None:
    w = np.array([2.0, -1.0, 0.0])
    X = np.random.default_rng(11).normal(size=(200, 3))
    y = X @ w + 0.3
    result = compute_permutation(
        linear_model(w), X, y, feature_names=("a", "b", "c"), n_repeats=2, scoring="mae", random_state=4
    )
    base = np.mean(np.abs(X @ w - y))  # 0.3: the model misses the offset
    expected = np.zeros(3)
    for repeat_permutations in _permutations(4, 2, 3, 200):
        for feature, permutation in enumerate(repeat_permutations):
            shuffled = X.copy()
            shuffled[:, feature] = X[permutation, feature]
            expected[feature] += (np.mean(np.abs(shuffled @ w - y)) - base) / 2
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6)
    assert result.parameters["loss"] == "absolute_error"
    assert result.parameters["score"] == "loss_increase"


def test_scoring_must_fit_the_task_and_named_metrics_need_targets() -> None:
    X = np.random.default_rng(12).normal(size=(20, 3))
    classifier = OutputTarget(Task.CLASSIFICATION, "softmax")
    with pytest.raises(ValueError, match=r"scoring 'mse' is for regression.*loss, accuracy, cross_entropy"):
        compute_permutation(
            _softmax_classifier(),
            X,
            np.zeros(20),
            feature_names=("a", "b", "c"),
            target=classifier,
            scoring="mse",
        )
    with pytest.raises(ValueError, match="scoring must be one of"):
        compute_permutation(linear_model([1.0, 1.0, 1.0]), X, feature_names=("a", "b", "c"), scoring="r2")
    with pytest.raises(MethodNotApplicable, match="needs targets y"):
        compute_permutation(linear_model([1.0, 1.0, 1.0]), X, feature_names=("a", "b", "c"), scoring="mae")


def test_mse_scoring_is_the_regression_loss() -> None:
    model = mlp_ignoring(4, ignored=2, seed=5)
    X = np.random.default_rng(13).normal(size=(150, 4))
    y = np.random.default_rng(14).normal(size=150)
    loss = compute_permutation(model, X, y, feature_names=NAMES4, random_state=1)
    mse = compute_permutation(model, X, y, feature_names=NAMES4, scoring="mse", random_state=1)
    np.testing.assert_array_equal(mse.values, loss.values)
    assert mse.parameters["loss"] == loss.parameters["loss"] == "squared_error"


def test_registered_adapter_reads_max_samples_and_scoring() -> None:
    spec = registered_methods()["permutation"]
    X = np.random.default_rng(15).normal(size=(80, 3))
    y = np.argmax(X[:, :1] * np.array([[1.0, 0.0, -1.0]]), axis=1).astype(float)
    context = spec.context(
        ("a", "b", "c"),
        OutputTarget(Task.CLASSIFICATION, "softmax"),
        random_state=1,
        options={"max_samples": 0.5, "scoring": "accuracy", "n_repeats": 2},
    )
    result = spec.compute(_softmax_classifier(), X, y, context)
    assert result.parameters["max_samples"] == 40 and result.parameters["scoring"] == "accuracy"
    assert result.values[0] > 0.2
    with pytest.raises(OptionError, match=r"methods\.permutation\.max_samples must be .+, got 'half'"):
        spec.context(("a", "b", "c"), context.target, options={"max_samples": "half"})


def test_multi_step_softmax_loss_reads_each_steps_classes() -> None:
    from audit.forward import per_sample_loss

    # 2 samples x 2 output steps x 3 classes, flattened the way Predictor returns them
    probabilities = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.2, 0.5, 0.3], [0.25, 0.25, 0.5]]])
    labels = np.array([[0, 2], [1, 0]])
    loss = per_sample_loss(probabilities.reshape(2, 6), labels, Task.CLASSIFICATION)
    expected = [-(np.log(0.7) + np.log(0.8)) / 2, -(np.log(0.5) + np.log(0.25)) / 2]
    np.testing.assert_allclose(loss, expected)


def _per_step_classifier(steps: int = 6, classes: int = 4) -> keras.Model:
    """An LSTM returning a softmax over `classes` at each of `steps` steps: output (n, steps, classes)."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((steps, 3))
    hidden = keras.layers.LSTM(5, return_sequences=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(hidden))


def test_labels_of_a_multi_step_softmax_are_counted_on_the_last_axis() -> None:
    from audit.forward import check_labels

    # (steps, classes) = (6, 4): classes are the last axis, one label per step
    labels = np.random.default_rng(0).integers(0, 4, size=(20, 6)).astype(float)
    assert check_labels(labels, (6, 4)) is None
    labels[3, 2] = 4
    assert check_labels(labels, (6, 4)) == "labels span 0..4 but the model has 4 classes per step (6 steps)"
    problem = check_labels(labels[:, 0], (6, 4))
    assert problem is not None and "one label per step, shape (n_samples, 6); it has 1 per sample" in problem
    # the flattened count (6 * 4 outputs) reads the steps off y, as the loss does
    assert check_labels(labels[:, :] % 4, 24) is None
    assert check_labels(labels, 24) == "labels span 0..4 but the model has 4 classes per step (6 steps)"
    # single-step and binary models as before
    assert check_labels(np.arange(32.0) % 6, (3,)) == "labels span 0..5 but the model has 3 classes"
    assert check_labels(np.array([0.0, 1.0, 1.0]), (1,)) is None
    assert check_labels(np.array([[0.0, 1.0], [1.0, 2.0]]), (2, 1), sigmoid=True) is not None


def test_permutation_scores_a_multi_step_softmax_with_one_label_per_step() -> None:
    model = _per_step_classifier()
    X = np.random.default_rng(1).normal(size=(40, 6, 3))
    labels = np.argmax(model.predict(X, verbose=0), axis=-1).astype(float)  # (40, 6), values 0..3
    target = OutputTarget(Task.CLASSIFICATION, "softmax")
    for scoring in ("loss", "accuracy"):
        result = compute_permutation(
            model, X, labels, feature_names=("a", "b", "c"), target=target, scoring=scoring, random_state=0
        )
        assert np.all(np.isfinite(result.values)) and np.any(result.values > 0)
    accuracy = compute_permutation(
        model, X, labels, feature_names=("a", "b", "c"), target=target, scoring="accuracy", random_state=0
    )
    assert np.all(accuracy.values <= 1.0)  # a drop in the share of steps right, never more than all
    with pytest.raises(
        ValueError, match=r"labels span 1\.\.4 but the model has 4 classes per step \(6 steps\)"
    ):
        compute_permutation(
            model, X, np.where(labels == 0, 4.0, labels), feature_names=("a", "b", "c"), target=target
        )
