"""perturbation: RMS output change under feature noise, against the linear-model answer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods import registered_methods
from audit.methods.perturbation import compute_perturbation
from audit.targets import REGRESSION_TARGET
from tests.helpers import linear_model, mlp_ignoring

NAMES3 = ("a", "b", "c")
NAMES4 = ("a", "b", "c", "d")


def test_ignored_feature_scores_zero_and_used_ones_do_not() -> None:
    model = mlp_ignoring(4, ignored=1)
    X = np.random.default_rng(0).normal(size=(300, 4))
    result = compute_perturbation(model, X, feature_names=NAMES4, n_repeats=3, random_state=0)
    assert result.values[1] < 1e-7 and result.std is not None and result.std[1] < 1e-7
    assert np.all(np.delete(result.values, 1) > 1e-3)
    assert result.repeats is not None and result.repeats.shape == (4, 3)


def test_linear_model_rms_change_is_weight_times_noise_std() -> None:
    # y = w.x and noise e ~ N(0, (s std_j)^2) on feature j: the output moves by w_j e, RMS |w_j| s std_j.
    w = np.array([2.0, -1.0, 0.5])
    X = np.random.default_rng(1).normal(size=(4000, 3)) * np.array([1.0, 3.0, 0.5]) + 10.0
    result = compute_perturbation(
        linear_model(w), X, feature_names=NAMES3, scale=0.2, n_repeats=5, random_state=0
    )
    np.testing.assert_allclose(result.values, np.abs(w) * 0.2 * X.std(axis=0), rtol=0.03)
    np.testing.assert_allclose(result.parameters["feature_std"], X.std(axis=0), rtol=1e-9)
    assert result.parameters["scale"] == 0.2


def test_default_scale_is_a_tenth_of_each_features_std() -> None:
    w = np.array([1.0, 1.0, 1.0])
    X = np.random.default_rng(2).normal(size=(4000, 3)) * np.array([1.0, 10.0, 100.0])
    result = compute_perturbation(linear_model(w), X, feature_names=NAMES3, random_state=0)
    np.testing.assert_allclose(result.values, 0.1 * X.std(axis=0), rtol=0.03)


def test_same_seed_same_numbers_different_seed_different_and_chunking_does_not_matter() -> None:
    model = mlp_ignoring(4, ignored=0, seed=3)
    X = np.random.default_rng(4).normal(size=(100, 4))
    first = compute_perturbation(model, X, feature_names=NAMES4, random_state=7)
    again = compute_perturbation(model, X, feature_names=NAMES4, random_state=7)
    chunked = compute_perturbation(
        model, X, feature_names=NAMES4, random_state=7, chunk_bytes=1, batch_size=7
    )
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_allclose(chunked.values, first.values, rtol=1e-6)
    np.testing.assert_allclose(chunked.repeats, first.repeats, rtol=1e-6)  # type: ignore[arg-type]
    other = compute_perturbation(model, X, feature_names=NAMES4, random_state=8)
    assert not np.allclose(first.values[1:], other.values[1:], rtol=1e-4)
    assert first.parameters["random_state"] == 7


def test_sequence_input_gets_independent_noise_per_step() -> None:
    # An identity model (outputs = flattened input, n_steps * n_features of them) exposes the noise
    # itself: perturbing feature f changes n_steps of the n_steps * 2 outputs by N(0, (s std_f)^2),
    # so the RMS over all outputs is s std_f / sqrt(2).
    inputs = keras.Input((10, 2))
    model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    X = np.random.default_rng(5).normal(size=(500, 10, 2)) * np.array([1.0, 4.0])
    result = compute_perturbation(model, X, feature_names=("a", "b"), scale=0.5, random_state=0)
    feature_std = X.reshape(-1, 2).std(axis=0)
    np.testing.assert_allclose(result.values, 0.5 * feature_std / np.sqrt(2), rtol=0.03)


def test_constant_feature_scores_exactly_zero() -> None:
    X = np.random.default_rng(6).normal(size=(200, 3))
    X[:, 2] = 4.0
    result = compute_perturbation(linear_model([1.0, 1.0, 5.0]), X, feature_names=NAMES3, random_state=0)
    assert result.values[2] == 0.0 and result.std is not None and result.std[2] == 0.0
    assert result.values[0] > 0.05


def test_bad_scale_is_refused() -> None:
    X = np.zeros((5, 3))
    with pytest.raises(ValueError, match="scale must be > 0"):
        compute_perturbation(linear_model([1.0, 1.0, 1.0]), X, feature_names=NAMES3, scale=0.0)


def test_registered_adapter_reads_its_options() -> None:
    spec = registered_methods()["perturbation"]
    assert spec.needs_eval_sample
    context = spec.context(NAMES3, REGRESSION_TARGET, random_state=3, options={"scale": 1, "n_repeats": 2})
    X = np.random.default_rng(7).normal(size=(50, 3))
    result = spec.compute(linear_model([1.0, 0.0, 2.0]), X, None, context)
    assert result.parameters["scale"] == 1.0 and result.parameters["n_repeats"] == 2
    assert result.parameters["random_state"] == 3
    assert result.repeats is not None and result.repeats.shape == (3, 2)
