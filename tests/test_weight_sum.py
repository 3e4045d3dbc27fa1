"""weight_sum against hand-computed sums of |W| for each first-layer kind."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from audit.methods.base import MethodNotApplicable
from audit.methods.weight_sum import compute_weight_sum


def _names(n: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(n))


def test_dense_sums_each_feature_row() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    kernel = np.array([[1.0, -2.0], [0.5, 0.5], [0.0, -3.0]], dtype=np.float32)
    model.layers[0].set_weights([kernel, np.zeros(2, np.float32)])
    result = compute_weight_sum(model, feature_names=_names(3))
    np.testing.assert_allclose(result.values, [3.0, 1.0, 3.0])
    assert result.parameters["layer_type"] == "Dense"


def test_conv1d_sums_over_kernel_width_and_filters() -> None:
    inputs = keras.Input((10, 2))
    conv = keras.layers.Conv1D(3, 2)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(conv(inputs)))
    kernel = np.arange(12, dtype=np.float32).reshape(2, 2, 3) - 6.0  # (width, features, filters)
    conv.set_weights([kernel, np.zeros(3, np.float32)])
    expected = [np.abs(kernel[:, 0, :]).sum(), np.abs(kernel[:, 1, :]).sum()]
    np.testing.assert_allclose(compute_weight_sum(model, feature_names=_names(2)).values, expected)


def test_gru_reads_the_input_kernel_not_the_recurrent_one() -> None:
    keras.utils.set_random_seed(1)
    gru = keras.layers.GRU(4)
    model = keras.Sequential([keras.Input((5, 3)), gru, keras.layers.Dense(1)])
    kernel = np.asarray(gru.cell.kernel)  # (features, 3 gates * units)
    assert kernel.shape == (3, 12)
    result = compute_weight_sum(model, feature_names=_names(3))
    np.testing.assert_allclose(result.values, np.abs(kernel).sum(axis=1), rtol=1e-6)


def test_walks_through_pass_through_layers_and_bidirectional() -> None:
    keras.utils.set_random_seed(2)
    lstm = keras.layers.Bidirectional(keras.layers.LSTM(2))
    dropout = keras.layers.Dropout(0.2, name="input_dropout")
    model = keras.Sequential([keras.Input((4, 3)), dropout, lstm, keras.layers.Dense(1)])
    expected = np.abs(np.asarray(lstm.forward_layer.cell.kernel)).sum(axis=1) + np.abs(
        np.asarray(lstm.backward_layer.cell.kernel)
    ).sum(axis=1)
    result = compute_weight_sum(model, feature_names=_names(3))
    np.testing.assert_allclose(result.values, expected, rtol=1e-6)
    assert result.parameters["through"] == ["input_dropout"]


def test_input_feeding_two_layers_is_not_applicable() -> None:
    inputs = keras.Input((3,))
    merged = keras.layers.Add()([keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    model = keras.Model(inputs, merged)
    with pytest.raises(MethodNotApplicable, match="feeds 2 layers"):
        compute_weight_sum(model, feature_names=_names(3))


def test_loaded_sequential_model_is_read_like_the_original(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.GaussianNoise(0.1), keras.layers.Dense(8), keras.layers.Dense(1)]
    )
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    expected = compute_weight_sum(model, feature_names=_names(4)).values
    np.testing.assert_allclose(compute_weight_sum(loaded, feature_names=_names(4)).values, expected)
