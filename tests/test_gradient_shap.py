"""GradientSHAP (expected gradients): additivity against an independent F(x) - mean F(background), a
linear model's known answer, and agreement with shap's own GradientExplainer (shap 0.51 runs Keras 3
models on TF 2.21: checked here, so the reference is shap itself, not a hand-written loop)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import shap
from scipy import stats

from audit.methods import registered_methods
from audit.methods.gradient_shap import compute_gradient_shap, expected_gradients
from audit.targets import REGRESSION_TARGET
from tests.helpers import linear_model


@pytest.fixture(scope="module")
def mlp() -> keras.Model:
    """A small tanh MLP whose features matter by clearly different amounts (scaled input weights)."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(1)]
    )
    kernel, bias = model.layers[0].get_weights()
    scale = np.array([2.0, 1.0, 0.5, 0.25, 0.0], np.float32)[:, None]  # the last one is ignored
    model.layers[0].set_weights([kernel * scale, bias])
    return model


@pytest.fixture(scope="module")
def gru() -> keras.Model:
    keras.utils.set_random_seed(12)
    return keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(5), keras.layers.Dense(1)])


def _independent_gap(model: keras.Model, X: np.ndarray, background: np.ndarray) -> np.ndarray:
    """F(x) - mean F(background), from the model's own predict (not from the method)."""
    return model.predict(X, verbose=0)[:, 0] - model.predict(background, verbose=0)[:, 0].mean()


@pytest.mark.parametrize("which", ["mlp", "gru"])
def test_attributions_add_up_to_f_x_minus_mean_f_background(
    which: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(which)
    shape = (5,) if which == "mlp" else (6, 3)
    rng = np.random.default_rng(1)
    X, background = rng.normal(size=(8, *shape)), rng.normal(size=(6, *shape))
    # 8 independent estimates of 500 draws each: their mean, and its Monte Carlo standard error
    sums = np.stack(
        [
            expected_gradients(model, X, background, n_draws=500, random_state=seed)
            .reshape(len(X), -1)
            .sum(1)
            for seed in range(8)
        ]
    )
    estimate, standard_error = sums.mean(axis=0), sums.std(axis=0, ddof=1) / np.sqrt(len(sums))
    gap = _independent_gap(model, X, background)
    assert np.all(np.abs(estimate - gap) <= 6 * standard_error + 1e-5)
    assert np.all(standard_error < 0.05 * np.abs(gap).mean())  # and that error is small


def test_the_stored_additivity_gap_is_small_and_shrinks_with_more_draws(gru: keras.Model) -> None:
    X = np.random.default_rng(2).normal(size=(60, 6, 3))
    names = ("a", "b", "c")
    few = compute_gradient_shap(gru, X, feature_names=names, n_draws=8, random_state=0)
    many = compute_gradient_shap(gru, X, feature_names=names, n_draws=128, random_state=0)
    assert few.profile is not None and few.profile.shape == (6, 3)
    assert many.parameters["additivity_median_abs_gap"] < few.parameters["additivity_median_abs_gap"] / 2
    assert many.parameters["background_size"] == 60 and many.parameters["n_draws"] == 128


def test_linear_model_attributions_are_known() -> None:
    w = np.array([2.0, -1.0, 0.0])
    model = linear_model(w, bias=0.3)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3))
    # one baseline: every draw sees the same path, so phi = (x - b) * w exactly, whatever the draws
    b = rng.normal(size=(1, 3))
    exact = expected_gradients(model, X, b, n_draws=4, random_state=0)
    np.testing.assert_allclose(exact, (X - b) * w, rtol=1e-5, atol=1e-6)
    # all rows as the background: phi_i -> w * (x_i - mean x) as the draws grow; additivity holds
    # to float32 precision at any number of draws (the gradient is the same at every point)
    result = compute_gradient_shap(model, X, feature_names=("a", "b", "c"), n_draws=2000, random_state=0)
    np.testing.assert_allclose(result.values, np.abs(w) * np.abs(X - X.mean(axis=0)).mean(axis=0), rtol=0.05)
    assert result.values[2] == 0.0
    assert result.parameters["additivity_max_abs_gap"] < 1e-4
    np.testing.assert_allclose(result.parameters["expected_value"], (X @ w).mean() + 0.3, rtol=1e-5)


def test_chunking_and_seeds(mlp: keras.Model) -> None:
    """The draws are made before chunking (chunk size does not change a figure); the seed does."""
    X = np.random.default_rng(4).normal(size=(40, 5))
    names = tuple("abcde")
    whole = compute_gradient_shap(mlp, X, feature_names=names, random_state=5)
    chunked = compute_gradient_shap(mlp, X, feature_names=names, random_state=5, chunk_bytes=5 * 4 * 32 * 3)
    other = compute_gradient_shap(mlp, X, feature_names=names, random_state=6)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-6)
    assert not np.allclose(other.values, whole.values, rtol=1e-6)
    assert whole.values[4] == 0.0 and whole.ranks[4] == 5
    spec = registered_methods()["gradient_shap"]
    seeded = spec.compute(mlp, X, None, spec.context(names, REGRESSION_TARGET, options={"seed": 5}))
    np.testing.assert_allclose(seeded.values, whole.values, rtol=1e-6)
    assert seeded.parameters["seed"] == 5


@pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")
def test_agrees_with_shap_gradient_explainer(mlp: keras.Model) -> None:
    """Same samples, background and number of draws as shap.GradientExplainer: the rankings agree and
    the per-sample attributions differ by no more than the two estimators' Monte Carlo error."""
    rng = np.random.default_rng(5)
    X, background = rng.normal(size=(30, 5)), rng.normal(size=(20, 5))
    ours = expected_gradients(mlp, X, background, n_draws=200, random_state=0)
    explainer = shap.GradientExplainer(mlp, background.astype(np.float32))
    theirs = np.asarray(explainer.shap_values(X.astype(np.float32), nsamples=200, rseed=0))[..., 0]
    assert theirs.shape == ours.shape
    rho = stats.spearmanr(np.abs(ours).mean(axis=0), np.abs(theirs).mean(axis=0)).statistic
    assert rho >= 0.95
    difference = ours - theirs  # both unbiased for the same attributions: mean 0 up to sampling error
    standard_error = difference.std(axis=0, ddof=1) / np.sqrt(len(X))
    assert np.all(np.abs(difference.mean(axis=0)) <= 4 * standard_error + 1e-9)
    np.testing.assert_allclose(np.abs(ours).mean(axis=0), np.abs(theirs).mean(axis=0), rtol=0.1, atol=1e-6)
