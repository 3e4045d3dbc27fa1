"""Traced functions live on their model and die with it: a weekly worker or a fleet run that audits
model after model keeps none of the earlier ones alive (the leak of `weakref.WeakKeyDictionary`
caches whose values held their keys: six Keras models per drop stayed in memory)."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import tensorflow as tf

from audit.forward import model_traces, traced_copies_forward, traced_forward
from audit.gradients import target_gradients
from audit.methods.grad_cam import _traced_maps
from audit.targets import REGRESSION_TARGET


def _conv_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 3)),
            keras.layers.Conv1D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )


def _trace_everything(model: keras.Model) -> None:
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 8, 3)), tf.float32)
    traced_forward(model)(x)
    traced_copies_forward(model)(x, tf.constant([0], tf.int32), tf.zeros((1, 5, 8)))
    target_gradients(model, REGRESSION_TARGET).value_and_classes(x.numpy())
    _traced_maps(model, model.get_layer("conv"), REGRESSION_TARGET)(x)


def test_each_trace_is_built_once_per_model() -> None:
    model = _conv_model(0)
    _trace_everything(model)
    traces = dict(model_traces(model))
    _trace_everything(model)
    assert model_traces(model) == traces and len(traces) == 4


def test_a_model_and_its_traces_are_freed_when_it_is_no_longer_used() -> None:
    alive = []
    for seed in range(3):
        model = _conv_model(seed)
        _trace_everything(model)
        alive.append(weakref.ref(model))
        del model
    gc.collect()
    assert [ref() for ref in alive] == [None, None, None]
