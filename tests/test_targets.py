from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from audit.targets import OutputTarget, check_class_index, chosen_classes, output_activation, scalar_output
from audit.types import AuditError, Task

SOFTMAX = OutputTarget(Task.CLASSIFICATION, "softmax")
SIGMOID = OutputTarget(Task.CLASSIFICATION, "sigmoid")


def test_softmax_per_step_classes_and_probabilities() -> None:
    outputs = tf.constant([[[0.7, 0.3], [0.2, 0.8]], [[0.4, 0.6], [0.9, 0.1]]])  # (n=2, steps=2, classes=2)
    ids = chosen_classes(outputs, SOFTMAX)
    np.testing.assert_array_equal(ids.numpy(), [[0, 1], [1, 0]])
    np.testing.assert_allclose(scalar_output(outputs, ids, SOFTMAX).numpy(), [0.75, 0.75])
    fixed = OutputTarget(Task.CLASSIFICATION, "softmax", class_index=1)
    fixed_ids = chosen_classes(outputs, fixed)
    np.testing.assert_allclose(scalar_output(outputs, fixed_ids, fixed).numpy(), [0.55, 0.35])


def test_sigmoid_units_are_binary_classes() -> None:
    outputs = tf.constant([[0.9, 0.2, 0.6]])  # one sample, three sigmoid units (e.g. steps after Flatten)
    ids = chosen_classes(outputs, SIGMOID)
    np.testing.assert_array_equal(ids.numpy(), [[1, 0, 1]])
    np.testing.assert_allclose(scalar_output(outputs, ids, SIGMOID).numpy(), [(0.9 + 0.8 + 0.6) / 3])


def test_regression_mean_or_one_output() -> None:
    outputs = tf.constant([[1.0, 3.0], [2.0, 6.0]])
    ids = chosen_classes(outputs, OutputTarget(Task.REGRESSION))
    np.testing.assert_allclose(scalar_output(outputs, ids, OutputTarget(Task.REGRESSION)).numpy(), [2.0, 4.0])
    second = OutputTarget(Task.REGRESSION, output_index=1)
    np.testing.assert_allclose(scalar_output(outputs, ids, second).numpy(), [3.0, 6.0])


def test_output_activation_looks_through_flatten_and_class_index_is_checked() -> None:
    model = keras.Sequential(
        [
            keras.Input((4, 2)),
            keras.layers.LSTM(1, activation="sigmoid", return_sequences=True),
            keras.layers.Flatten(),
        ]
    )
    # Flatten has no activation: the sigmoid of the LSTM behind it produces the output
    assert output_activation(model) == "sigmoid"
    check_class_index(model, OutputTarget(Task.CLASSIFICATION, "sigmoid", class_index=1))
    with pytest.raises(AuditError, match="class_index 2 is outside the model's 2 classes"):
        check_class_index(model, OutputTarget(Task.CLASSIFICATION, "sigmoid", class_index=2))
