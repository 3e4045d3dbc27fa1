from __future__ import annotations

import keras
import numpy as np
import pytest

from audit.methods.base import MethodNotApplicable
from audit.methods.grad_cam import compute_grad_cam, upsample
from audit.targets import OutputTarget
from audit.types import Task


def _identity_conv_model(steps: int) -> keras.Model:
    """F = mean_t A with A = Conv1D(kernel 1, weight 1)(x): dF/dA = 1/t, so the map is ReLU(x)/t."""
    inputs = keras.Input((steps, 1))
    conv = keras.layers.Conv1D(1, 1, use_bias=False, name="conv")
    outputs = keras.layers.GlobalAveragePooling1D()(conv(inputs))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.ones((1, 1, 1), np.float32)])
    return model


def test_map_matches_the_hand_computation() -> None:
    X = np.random.default_rng(0).normal(size=(40, 8, 1))
    result = compute_grad_cam(_identity_conv_model(8), X)
    expected = (np.maximum(X[:, :, 0], 0) / 8).mean(axis=0)
    assert result.profile is not None and result.profile_features == ("*",)
    np.testing.assert_allclose(result.profile[:, 0], expected, rtol=1e-5)
    assert not result.has_values and result.parameters["layer"] == "conv"


def test_upsample_is_linear_and_keeps_equal_lengths() -> None:
    maps = np.array([[0.0, 2.0, 4.0]])
    np.testing.assert_allclose(upsample(maps, 3), maps)
    np.testing.assert_allclose(upsample(maps, 6), [[0.0, 0.5, 1.5, 2.5, 3.5, 4.0]])


def test_map_follows_where_the_weighted_channels_fire() -> None:
    # Grad-CAM weights channels by their mean gradient and applies the weights at every step, so it
    # localises evidence where the channels are active: here, the events in steps 5..9 only.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 2))
    conv = keras.layers.Conv1D(4, 3, padding="same", activation="relu", use_bias=False, name="last_conv")
    pooled = keras.layers.GlobalAveragePooling1D()(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    X = np.zeros((64, 40, 2))
    X[:, 5:10, :] = np.abs(np.random.default_rng(1).normal(size=(64, 5, 2)))
    result = compute_grad_cam(model, X, target=OutputTarget(Task.CLASSIFICATION, "softmax"))
    profile = result.profile[:, 0]  # type: ignore[index]
    assert profile[4:11].sum() > 0  # the kernel of width 3 reaches one step to either side
    np.testing.assert_allclose(np.delete(profile, np.arange(3, 12)), 0.0, atol=1e-12)


def test_not_applicable_without_a_convolution_or_for_tabular_input() -> None:
    gru = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(3), keras.layers.Dense(1)])
    with pytest.raises(MethodNotApplicable, match="no Conv1D layer"):
        compute_grad_cam(gru, np.zeros((4, 5, 2)))
    with pytest.raises(MethodNotApplicable, match="sequence input"):
        compute_grad_cam(gru, np.zeros((4, 2)))
    with pytest.raises(MethodNotApplicable, match="no layer named 'nope'"):
        compute_grad_cam(_identity_conv_model(4), np.zeros((2, 4, 1)), layer_name="nope")
