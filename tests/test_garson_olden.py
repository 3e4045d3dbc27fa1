"""garson and olden against hand arithmetic (3-2-1) and an independent loop over paths (3-4-3-k)."""

from __future__ import annotations

import itertools
from pathlib import Path

import keras
import numpy as np
import pytest

from audit.methods import registered_methods
from audit.methods.base import MethodNotApplicable
from audit.methods.connection_weights import compute_garson, compute_olden

NAMES3 = ("a", "b", "c")


def _mlp(kernels: list[np.ndarray], *, extra: bool = False) -> keras.Model:
    """Dense layers with the given kernels and random biases (which both methods must ignore).

    Layers are named here: Keras numbers unnamed layers with a session-wide counter, and other
    test modules assert default names such as "dropout".
    """
    rng = np.random.default_rng(0)
    layers: list[keras.layers.Layer] = [keras.Input((kernels[0].shape[0],))]
    if extra:
        layers.append(keras.layers.GaussianNoise(0.1, name="noise"))
    for index, kernel in enumerate(kernels):
        last = index == len(kernels) - 1
        activation = None if last else "tanh"
        layers.append(keras.layers.Dense(kernel.shape[1], activation=activation, name=f"dense{index}"))
        if extra and not last:
            layers += [
                keras.layers.Dropout(0.3, name=f"drop{index}"),
                keras.layers.Activation("relu", name=f"relu{index}"),
            ]
    model = keras.Sequential(layers)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer, kernel in zip(dense, kernels, strict=True):
        layer.set_weights([kernel.astype(np.float32), rng.normal(size=kernel.shape[1]).astype(np.float32)])
    return model


# 3 inputs -> 2 hidden units -> 1 output
W1 = np.array([[1.0, -2.0], [0.5, 1.0], [-1.5, 1.0]])
V = np.array([[2.0], [-0.5]])


def test_olden_on_a_3_2_1_network_by_hand() -> None:
    # sum_j w_ij v_j:
    #   a:  1.0 * 2 + (-2.0) * (-0.5) = 2 + 1     =  3.0
    #   b:  0.5 * 2 +   1.0  * (-0.5) = 1 - 0.5   =  0.5
    #   c: -1.5 * 2 +   1.0  * (-0.5) = -3 - 0.5  = -3.5
    result = compute_olden(_mlp([W1, V]), feature_names=NAMES3)
    np.testing.assert_allclose(result.values, [3.0, 0.5, -3.5], rtol=1e-6)
    assert result.signed
    assert list(result.ranks) == [2, 3, 1]  # by magnitude: c, a, b
    assert result.parameters["hidden_units"] == [2]


def test_garson_on_a_3_2_1_network_by_hand() -> None:
    # Incoming |w| per hidden unit: unit 0: 1 + 0.5 + 1.5 = 3; unit 1: 2 + 1 + 1 = 4.
    # Q_i0 = |w_i0| * |v_0| / 3 = |w_i0| * 2/3    -> a 2/3,  b 1/3,  c 1
    # Q_i1 = |w_i1| * |v_1| / 4 = |w_i1| * 0.5/4  -> a 1/4,  b 1/8,  c 1/8
    # S_i = Q_i0 + Q_i1 -> a 11/12 = 22/24, b 11/24, c 9/8 = 27/24; total 60/24
    # importance = S / total -> a 22/60, b 11/60, c 27/60
    result = compute_garson(_mlp([W1, V]), feature_names=NAMES3)
    np.testing.assert_allclose(result.values, [22 / 60, 11 / 60, 27 / 60], rtol=1e-6)
    assert not result.signed
    np.testing.assert_allclose(result.values.sum(), 1.0)


def _olden_by_paths(kernels: list[np.ndarray]) -> np.ndarray:
    """Sum over every input -> hidden -> hidden -> output path of the product of its weights."""
    w1, w2, w3 = kernels
    values = np.zeros(w1.shape[0])
    for i, j, k, o in itertools.product(*(range(n) for n in (*w1.shape, w2.shape[1], w3.shape[1]))):
        values[i] += w1[i, j] * w2[j, k] * w3[k, o]
    return values


def _garson_by_loops(kernels: list[np.ndarray]) -> np.ndarray:
    """The recursive generalisation spelled out: composition[i][unit] of each hidden layer in turn."""
    n_features = kernels[0].shape[0]
    composition = [[1.0 if i == m else 0.0 for m in range(n_features)] for i in range(n_features)]
    for kernel in kernels[:-1]:
        n_in, n_out = kernel.shape
        incoming = [sum(abs(kernel[m, j]) for m in range(n_in)) for j in range(n_out)]
        composition = [
            [
                sum(composition[i][m] * abs(kernel[m, j]) / incoming[j] for m in range(n_in))
                for j in range(n_out)
            ]
            for i in range(n_features)
        ]
    last = kernels[-1]
    raw = [
        sum(composition[i][j] * abs(last[j, o]) for j in range(last.shape[0]) for o in range(last.shape[1]))
        for i in range(n_features)
    ]
    return np.array(raw) / sum(raw)


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_deeper_network_matches_loops_over_paths(n_outputs: int) -> None:
    rng = np.random.default_rng(1)
    kernels = [rng.normal(size=(3, 4)), rng.normal(size=(4, 3)), rng.normal(size=(3, n_outputs))]
    model = _mlp(kernels, extra=True)  # noise, dropout and activation layers in between
    olden = compute_olden(model, feature_names=NAMES3)
    garson = compute_garson(model, feature_names=NAMES3)
    np.testing.assert_allclose(olden.values, _olden_by_paths(kernels), rtol=1e-5)
    np.testing.assert_allclose(garson.values, _garson_by_loops(kernels), rtol=1e-5)
    assert garson.parameters["hidden_units"] == [4, 3]
    assert garson.parameters["n_outputs"] == n_outputs
    assert garson.parameters["through"] == ["noise", "drop0", "relu0", "drop1", "relu1"]
    assert garson.parameters["layers"] == ["dense0", "dense1", "dense2"]


def test_one_hidden_layer_garson_ignores_a_feature_with_zero_weights() -> None:
    kernels = [np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]), np.array([[1.0], [1.0]])]
    model = _mlp(kernels)
    np.testing.assert_allclose(compute_garson(model, feature_names=NAMES3).values[1], 0.0)
    np.testing.assert_allclose(compute_olden(model, feature_names=NAMES3).values[1], 0.0)


def test_loaded_model_reads_like_the_original(tmp_path: Path) -> None:
    model = _mlp([W1, V], extra=True)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(
        compute_garson(loaded, feature_names=NAMES3).values, [22 / 60, 11 / 60, 27 / 60]
    )
    np.testing.assert_allclose(compute_olden(loaded, feature_names=NAMES3).values, [3.0, 0.5, -3.5])


def test_skipped_for_a_gru_model() -> None:
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, name="gru"), keras.layers.Dense(1)])
    with pytest.raises(MethodNotApplicable, match=r"garson needs a chain of Dense layers.*found GRU 'gru'"):
        compute_garson(model, feature_names=NAMES3)
    with pytest.raises(MethodNotApplicable, match=r"olden needs a chain of Dense layers.*found GRU 'gru'"):
        compute_olden(model, feature_names=NAMES3)


def test_skipped_when_the_input_feeds_two_layers() -> None:
    inputs = keras.Input((3,))
    merged = keras.layers.Add()([keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(1)(merged))
    with pytest.raises(MethodNotApplicable, match="the input feeds 2 layers"):
        compute_garson(model, feature_names=NAMES3)


def test_skipped_for_a_normalisation_layer_and_a_branch_further_down() -> None:
    normalised = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1)]
    )
    with pytest.raises(MethodNotApplicable, match="found BatchNormalization 'bn'"):
        compute_olden(normalised, feature_names=NAMES3)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    skip = keras.layers.Concatenate()([hidden, keras.layers.Dense(2)(hidden)])
    with pytest.raises(MethodNotApplicable, match="'hidden' feeds 2 layers"):
        compute_olden(keras.Model(inputs, keras.layers.Dense(1)(skip)), feature_names=NAMES3)


def test_registered_as_weight_only_methods() -> None:
    methods = registered_methods()
    assert not methods["garson"].needs_eval_sample
    assert not methods["olden"].needs_eval_sample
