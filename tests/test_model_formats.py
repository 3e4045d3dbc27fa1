"""Every model format a team ships, built in that format, loads to the same model; unsafe files are refused.

Keras 2 fixtures (tests/fixtures/keras2/) were written by tf-keras 2.21 (make_fixtures.py there);
the Keras 2.2-era JSON is written by hand here, with its weights in Keras 2's HDF5 layout.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from audit.keras2_config import (
    UnknownClass,
    UnsupportedConfig,
    convert_model_config,
    keras2_hard_sigmoid,
)
from audit.loading import load_drop, load_model
from audit.methods import registered_methods
from audit.methods.connection_weights import compute_garson, compute_olden
from audit.methods.integrated_gradients import compute_integrated_gradients
from audit.methods.saliency import compute_saliency
from audit.methods.weight_sum import compute_weight_sum
from audit.model_formats import model_content_hash
from audit.registry import discover_drops
from audit.runner import run_method
from audit.targets import OutputTarget, output_activation
from audit.types import AuditError, MethodStatus, Task

FIXTURES = Path(__file__).parent / "fixtures" / "keras2"
EXPECTED = dict(np.load(FIXTURES / "expected_outputs.npz"))
ATOL = 1e-5


def _names(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))


def _outputs(model: keras.Model, X: np.ndarray) -> np.ndarray:
    return np.asarray(model(X.astype(np.float32), training=False))


def _assert_one_line_error(error: pytest.ExceptionInfo[AuditError], path: Path, *phrases: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(str(path)), message
    for phrase in phrases:
        assert phrase in message, message


# --- Keras 2 pair: <name>_structure.json + <name>_weights.h5, written by tf-keras ---------------------


@pytest.mark.parametrize("name", ["0_10.1", "gru_conv", "lstm_bis", "nested"])
def test_tf_keras_pair_reproduces_tf_keras_outputs_and_weight_sums(name: str) -> None:
    model = load_model(FIXTURES / f"{name}_structure.json")
    X = EXPECTED[f"{name}__x"]
    np.testing.assert_allclose(_outputs(model, X), EXPECTED[f"{name}__y"], atol=ATOL)
    if f"{name}__weight_sum" not in EXPECTED:  # a nested model: no first Dense layer to read
        return
    sums = compute_weight_sum(model, feature_names=_names(X.shape[-1]))
    np.testing.assert_allclose(sums.values, EXPECTED[f"{name}__weight_sum"], rtol=1e-6)


def test_seed_003_model_has_its_shape_and_is_a_classifier() -> None:
    model = load_model(FIXTURES / "0_10.1_structure.json")
    assert tuple(model.inputs[0].shape) == (None, 82) and tuple(model.outputs[0].shape) == (None, 2)
    assert output_activation(model) == "softmax"
    garson = compute_garson(model, feature_names=_names(82))
    assert garson.values.shape == (82,) and garson.values.sum() == pytest.approx(1.0)


def test_keras2_hard_sigmoid_keeps_its_keras2_meaning() -> None:
    """Keras 3 redefined hard_sigmoid; read as Keras 3's, the old GRU would compute other numbers."""
    model = load_model(FIXTURES / "gru_conv_structure.json")
    assert model.get_layer("gru").cell.recurrent_activation is keras2_hard_sigmoid
    np.testing.assert_allclose(keras2_hard_sigmoid(np.array([-3.0, 1.0, 3.0])), [0.0, 0.7, 1.0])

    config = json.loads((FIXTURES / "gru_conv_structure.json").read_text(encoding="utf-8"))
    converted = convert_model_config(config)
    (gru,) = [layer for layer in converted["config"]["layers"] if layer["class_name"] == "GRU"]  # type: ignore[index]
    gru["config"]["recurrent_activation"] = "hard_sigmoid"  # what Keras 3 would read the name as
    as_keras3 = keras.saving.deserialize_keras_object(converted)
    as_keras3.load_weights(FIXTURES / "gru_conv_weights.h5")
    X = EXPECTED["gru_conv__x"]
    assert np.abs(_outputs(as_keras3, X) - EXPECTED["gru_conv__y"]).max() > 1e-3


def test_tf_keras_full_h5_model_loads() -> None:
    model = load_model(FIXTURES / "gru_conv_full.h5")
    np.testing.assert_allclose(_outputs(model, EXPECTED["gru_conv__x"]), EXPECTED["gru_conv__y"], atol=ATOL)


def test_tf_keras_lambda_is_refused_unless_trusted() -> None:
    path = FIXTURES / "lambda_mlp_structure.json"
    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "embeds Python code (Lambda layer 'lambda')", "--trust-model-code")


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the Lambda's bytecode was marshalled by Python 3.11"
)
def test_tf_keras_lambda_loads_when_trusted() -> None:
    model = load_model(FIXTURES / "lambda_mlp_structure.json", trust_model_code=True)
    X = EXPECTED["lambda_mlp__x"]
    np.testing.assert_allclose(_outputs(model, X), EXPECTED["lambda_mlp__y"], atol=ATOL)


# --- Keras 2.2-era JSON, written by hand ------------------------------------------------------------------

_GLOROT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
}
_ZEROS = {"class_name": "Zeros", "config": {}}


def _dense22(name: str, units: int, activation: str, **extra: object) -> dict[str, object]:
    """A Dense layer as Keras 2.2.4's to_json() wrote it: class_name/config only, old initializer dicts."""
    config: dict[str, object] = {
        "name": name,
        "trainable": True,
        "units": units,
        "activation": activation,
        "use_bias": True,
        "kernel_initializer": _GLOROT,
        "bias_initializer": _ZEROS,
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
        **extra,
    }
    return {"class_name": "Dense", "config": config}


def _keras22_mlp(layers_as_list: bool) -> dict[str, object]:
    first = _dense22(
        "dense_1",
        4,
        "relu",
        batch_input_shape=[None, 5],
        dtype="float32",
        kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}},
        kernel_constraint={"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 0}},
    )
    dropout = {
        "class_name": "Dropout",
        "config": {"name": "dropout_1", "trainable": True, "rate": 0.5, "noise_shape": None, "seed": None},
    }
    last = _dense22(
        "dense_2",
        2,
        "softmax",
        kernel_initializer={
            "class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": None},
        },
    )
    layers = [first, dropout, last]
    config: object = layers if layers_as_list else {"name": "sequential_1", "layers": layers}
    return {"class_name": "Sequential", "config": config, "keras_version": "2.2.4", "backend": "tensorflow"}


def _write_keras2_weights(path: Path, layers: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]) -> None:
    """Weights in the HDF5 layout of Keras 2's save_weights: layer_names, weight_names, nested datasets."""
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.2.4"
        for name, weights in layers:
            group = file.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w, _ in weights], dtype="S")
            for weight, value in weights:
                group.create_dataset(f"{name}/{weight}:0", data=value)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("layers_as_list", [False, True], ids=["keras-2.2", "keras-2.1-layer-list"])
def test_keras22_sequential_json_with_batch_input_shape(tmp_path: Path, layers_as_list: bool) -> None:
    rng = np.random.default_rng(3)
    W1, b1 = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    W2, b2 = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    structure = tmp_path / "0_10.1_structure.json"
    structure.write_text(json.dumps(_keras22_mlp(layers_as_list)), encoding="utf-8")
    _write_keras2_weights(
        tmp_path / "0_10.1_weights.h5",
        [
            ("dense_1", [("kernel", W1), ("bias", b1)]),
            ("dropout_1", []),
            ("dense_2", [("kernel", W2), ("bias", b2)]),
        ],
    )

    model = load_model(structure)

    X = rng.normal(size=(7, 5))
    expected = _softmax(np.maximum(X @ W1 + b1, 0.0) @ W2 + b2)
    np.testing.assert_allclose(_outputs(model, X), expected, atol=ATOL)
    sums = compute_weight_sum(model, feature_names=_names(5))
    np.testing.assert_allclose(sums.values, np.abs(W1).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        compute_olden(model, feature_names=_names(5)).values, (W1 @ W2).sum(axis=1), rtol=1e-5
    )


def test_keras22_functional_model_with_old_inbound_nodes(tmp_path: Path) -> None:
    """A Keras 2.2 functional config: class "Model", nodes as [[layer, node, tensor, kwargs]] lists."""

    def node(*names: str) -> list[list[list[object]]]:
        return [[[name, 0, 0, {}] for name in names]]

    config = {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [
                {
                    "name": "input_1",
                    "class_name": "InputLayer",
                    "config": {
                        "batch_input_shape": [None, 3],
                        "dtype": "float32",
                        "sparse": False,
                        "name": "input_1",
                    },
                    "inbound_nodes": [],
                },
                {**_dense22("dense_1", 2, "tanh"), "name": "dense_1", "inbound_nodes": node("input_1")},
                {**_dense22("dense_2", 2, "linear"), "name": "dense_2", "inbound_nodes": node("input_1")},
                {
                    "name": "concatenate_1",
                    "class_name": "Concatenate",
                    "config": {"name": "concatenate_1", "trainable": True, "axis": -1},
                    "inbound_nodes": node("dense_1", "dense_2"),
                },
                {
                    **_dense22("dense_3", 1, "hard_sigmoid"),
                    "name": "dense_3",
                    "inbound_nodes": node("concatenate_1"),
                },
            ],
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["dense_3", 0, 0]],
        },
        "keras_version": "2.2.4",
        "backend": "tensorflow",
    }
    rng = np.random.default_rng(4)
    W = {
        name: (rng.normal(size=shape).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32))
        for name, shape in (("dense_1", (3, 2)), ("dense_2", (3, 2)), ("dense_3", (4, 1)))
    }
    (tmp_path / "m_structure.json").write_text(json.dumps(config), encoding="utf-8")
    _write_keras2_weights(
        tmp_path / "m_weights.h5",
        [("input_1", []), ("concatenate_1", [])]
        + [(name, [("kernel", k), ("bias", b)]) for name, (k, b) in W.items()],
    )

    model = load_model(tmp_path / "m_structure.json")

    X = rng.normal(size=(6, 3))
    hidden = np.concatenate(
        [np.tanh(X @ W["dense_1"][0] + W["dense_1"][1]), X @ W["dense_2"][0] + W["dense_2"][1]], axis=1
    )
    expected = np.clip(
        0.2 * (hidden @ W["dense_3"][0] + W["dense_3"][1]) + 0.5, 0.0, 1.0
    )  # Keras 2's hard sigmoid
    np.testing.assert_allclose(_outputs(model, X), expected, atol=ATOL)


def test_converter_output_is_what_keras3_expects() -> None:
    converted = convert_model_config(_keras22_mlp(layers_as_list=False))
    layers = converted["config"]["layers"]  # type: ignore[index]
    assert converted["module"] == "keras" and converted["class_name"] == "Sequential"
    assert [layer["class_name"] for layer in layers] == ["InputLayer", "Dense", "Dropout", "Dense"]
    assert layers[0]["config"]["batch_shape"] == [None, 5]
    dense = layers[1]
    assert dense["module"] == "keras.layers" and "batch_input_shape" not in dense["config"]
    assert dense["config"]["kernel_initializer"]["module"] == "keras.initializers"
    assert dense["config"]["kernel_regularizer"] == {
        "module": "keras.regularizers",
        "class_name": "L1L2",
        "config": {"l1": 0.0, "l2": 0.01},
        "registered_name": None,
    }
    assert dense["config"]["kernel_constraint"]["module"] == "keras.constraints"
    assert layers[3]["config"]["kernel_initializer"]["config"]["distribution"] == "truncated_normal"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda layer: layer.update(class_name="TFOpLambda"),
            "raw TensorFlow call",
            id="tf-op-lambda",
        ),
        pytest.param(
            lambda layer: (
                layer["config"].update(renorm=True) or layer.update(class_name="BatchNormalization")
            ),
            "has no Keras 3 counterpart",
            id="setting-with-no-counterpart",
        ),
        pytest.param(
            lambda layer: layer["config"].update(activation="my_swish"),
            "activation is a 'my_swish'",
            id="unknown-activation",
        ),
    ],
)
def test_converter_names_what_keras3_cannot_build(
    change: Callable[[dict[str, object]], object], message: str
) -> None:
    config = _keras22_mlp(layers_as_list=False)
    change(config["config"]["layers"][2])  # type: ignore[index]
    with pytest.raises(UnsupportedConfig, match=message):
        convert_model_config(config)


def test_sequential_without_input_shape_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = _keras22_mlp(layers_as_list=False)
    del config["config"]["layers"][0]["config"]["batch_input_shape"]  # type: ignore[index]
    path = tmp_path / "m_structure.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    _write_keras2_weights(tmp_path / "m_weights.h5", [])
    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "no input shape", "re-save it with Keras 3")


# --- custom classes ---------------------------------------------------------------------------------------

_TEAM_MODULE = """
import keras

@keras.saving.register_keras_serializable(package="{package}")
class ScaledDense(keras.layers.Dense):
    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.scale = scale

    def call(self, inputs):
        return super().call(inputs) * self.scale

    def get_config(self):
        return {{**super().get_config(), "scale": self.scale}}
"""


@pytest.fixture
def team_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[str]:
    """An importable module that registers a custom layer, unregistered again afterwards."""
    name = f"team_layers_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{name}.py").write_text(_TEAM_MODULE.format(package=name), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    yield name
    keras.saving.get_custom_objects().pop(f"{name}>ScaledDense", None)
    sys.modules.pop(name, None)


def test_custom_layer_in_keras2_json_needs_its_module(tmp_path: Path, team_module: str) -> None:
    config = _keras22_mlp(layers_as_list=False)
    layers = config["config"]["layers"]  # type: ignore[index]
    layers[2] = {
        "class_name": "ScaledDense",
        "config": {**_dense22("scaled", 2, "linear")["config"], "scale": 3.0},
    }
    path = tmp_path / "m_structure.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    rng = np.random.default_rng(5)
    W1, W2 = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
    zeros = np.zeros(4, np.float32), np.zeros(2, np.float32)
    _write_keras2_weights(
        tmp_path / "m_weights.h5",
        [
            ("dense_1", [("kernel", W1), ("bias", zeros[0])]),
            ("dropout_1", []),
            ("scaled", [("kernel", W2), ("bias", zeros[1])]),
        ],
    )

    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "layer 'scaled' is a 'ScaledDense'", "custom_modules")

    model = load_model(path, custom_modules=[team_module])
    X = rng.normal(size=(3, 5))
    np.testing.assert_allclose(_outputs(model, X), 3.0 * (np.maximum(X @ W1, 0.0) @ W2), atol=ATOL)


def test_custom_layer_in_keras_file_names_the_fix(tmp_path: Path, team_module: str) -> None:
    load_model(FIXTURES / "0_10.1_structure.json", custom_modules=[team_module])  # registers ScaledDense
    layer_class = keras.saving.get_custom_objects()[f"{team_module}>ScaledDense"]
    model = keras.Sequential([keras.Input((3,)), layer_class(2, scale=2.0)])
    path = tmp_path / "model.keras"
    model.save(path)
    keras.saving.get_custom_objects().pop(f"{team_module}>ScaledDense")
    sys.modules.pop(team_module)

    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "'ScaledDense'", "custom_modules")
    assert load_model(path, custom_modules=[team_module]).count_params() == model.count_params()


def test_custom_module_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"custom module 'no_such_team_module' cannot be imported"):
        load_model(FIXTURES / "0_10.1_structure.json", custom_modules=["no_such_team_module"])


# --- whole-model HDF5 written by Keras 3 ------------------------------------------------------------------


def test_keras3_h5_model_loads(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.LSTM(3, recurrent_activation="hard_sigmoid"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.save(tmp_path / "model.h5")
    loaded = load_model(tmp_path / "model.h5")
    X = np.random.default_rng(0).normal(size=(4, 6, 2))
    np.testing.assert_allclose(
        _outputs(loaded, X), _outputs(model, X), atol=ATOL
    )  # Keras 3's hard_sigmoid kept
    reference = keras.saving.load_model(tmp_path / "model.h5", compile=False)
    np.testing.assert_allclose(_outputs(loaded, X), _outputs(reference, X), atol=ATOL)


def test_h5_lambda_is_refused_unless_trusted(tmp_path: Path) -> None:
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Dense(1)]
    )
    path = tmp_path / "model.h5"
    model.save(path)
    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "embeds Python code (Lambda layer", "--trust-model-code")
    X = np.ones((3, 2))
    np.testing.assert_allclose(
        _outputs(load_model(path, trust_model_code=True), X), _outputs(model, X), atol=ATOL
    )


def test_h5_that_holds_only_weights_says_so(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes((FIXTURES / "0_10.1_weights.h5").read_bytes())
    with pytest.raises(AuditError) as error:
        load_model(path)
    _assert_one_line_error(error, path, "holds weights only", "_structure.json")


# --- TF SavedModel folders -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """A GRU classifier and its ``model.export()`` folder."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((8, 3)), keras.layers.GRU(4), keras.layers.Dense(3, activation="softmax")]
    )
    folder = tmp_path_factory.mktemp("export") / "model"
    model.export(folder, verbose=False)
    return model, folder


def test_saved_model_is_refused_unless_trusted(exported: tuple[keras.Model, Path]) -> None:
    _, folder = exported
    with pytest.raises(AuditError) as error:
        load_model(folder)
    _assert_one_line_error(error, folder, "TF SavedModel is a TensorFlow program", "--trust-model-code")


def test_saved_model_gradient_methods_match_the_original(exported: tuple[keras.Model, Path]) -> None:
    model, folder = exported
    loaded = load_model(folder, trust_model_code=True)
    assert tuple(loaded.inputs[0].shape) == (None, 8, 3) and output_activation(loaded) == "softmax"
    X = np.random.default_rng(1).normal(size=(6, 8, 3))
    np.testing.assert_allclose(_outputs(loaded, X), _outputs(model, X), atol=ATOL)
    target = OutputTarget(Task.CLASSIFICATION, activation="softmax")
    names = ("a", "b", "c")
    for compute in (compute_integrated_gradients, compute_saliency):
        ours, original = (compute(m, X, feature_names=names, target=target) for m in (loaded, model))
        np.testing.assert_allclose(ours.values, original.values, atol=ATOL)
        assert ours.profile is not None and original.profile is not None
        np.testing.assert_allclose(ours.profile, original.profile, atol=ATOL)


def test_saved_model_weight_methods_are_skipped_with_a_reason(
    tmp_path: Path, exported: tuple[keras.Model, Path]
) -> None:
    _, folder = exported
    drop = tmp_path / "registry" / "2019-01-14"
    drop.mkdir(parents=True)
    shutil.copytree(folder, drop / "model")
    np.savez(drop / "eval.npz", X=np.random.default_rng(2).normal(size=(5, 8, 3)).astype(np.float32))
    (listed,) = discover_drops(tmp_path / "registry").drops
    loaded = load_drop(listed, trust_model_code=True)
    assert loaded.target.task is Task.CLASSIFICATION  # found from the softmax in the graph
    assert loaded.facts.content_hash == model_content_hash(drop / "model")
    methods = registered_methods()
    for name in ("weight_sum", "garson", "olden"):
        outcome = run_method(loaded, methods[name])
        assert outcome.status is MethodStatus.SKIPPED and "SavedModelLayer" in (outcome.reason or "")
    assert run_method(loaded, methods["saliency"]).status is MethodStatus.OK


def test_tf_keras_saved_model_loads_and_finds_its_sigmoid() -> None:
    folder = FIXTURES / "sigmoid_savedmodel"
    model = load_model(folder, trust_model_code=True)
    assert output_activation(model) == "sigmoid"
    X = EXPECTED["sigmoid_savedmodel__x"]
    np.testing.assert_allclose(_outputs(model, X), EXPECTED["sigmoid_savedmodel__y"], atol=ATOL)


# --- broken files ----------------------------------------------------------------------------------------


def _small_model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _pair(folder: Path) -> Path:
    for name in ("0_10.1_structure.json", "0_10.1_weights.h5"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    return folder / "0_10.1_structure.json"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _broken_keras(folder: Path, damage: Callable[[Path], None]) -> Path:
    path = folder / "model.keras"
    _small_model().save(path)
    damage(path)
    return path


def _broken_h5(folder: Path, damage: Callable[[Path], None]) -> Path:
    path = folder / "model.h5"
    _small_model().save(path)
    damage(path)
    return path


def _broken_structure(folder: Path, damage: Callable[[Path], None]) -> Path:
    path = _pair(folder)
    damage(path)
    return path


def _broken_weights(folder: Path, damage: Callable[[Path], None]) -> Path:
    path = _pair(folder)
    damage(folder / "0_10.1_weights.h5")
    return path


def _broken_saved_model(folder: Path, damage: Callable[[Path], None]) -> Path:
    path = folder / "model"
    _small_model().export(path, verbose=False)
    damage(path / "saved_model.pb")
    return path


_DAMAGE = {
    "0-bytes": lambda path: path.write_bytes(b""),
    "truncated": _truncate,
    "random-bytes": _random_bytes,
}
_FORMATS = {
    ".keras": _broken_keras,
    ".h5": _broken_h5,
    "structure.json": _broken_structure,
    "weights.h5": _broken_weights,
    "saved-model": _broken_saved_model,
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
@pytest.mark.parametrize("form", list(_FORMATS))
def test_broken_model_files_are_one_line_errors(tmp_path: Path, form: str, damage: str) -> None:
    path = _FORMATS[form](tmp_path, _DAMAGE[damage])
    with pytest.raises(AuditError) as error:
        load_model(path, trust_model_code=True)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(str(tmp_path)) and "; " in message, message  # names the file, then the fix


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    structure = _pair(tmp_path)
    (tmp_path / "0_10.1_weights.h5").write_bytes((FIXTURES / "lstm_bis_weights.h5").read_bytes())
    with pytest.raises(AuditError) as error:
        load_model(structure)
    _assert_one_line_error(
        error, tmp_path / "0_10.1_weights.h5", "cannot load the weights into the model of 0_10.1"
    )


def test_structure_without_weights_and_invalid_json_are_explained(tmp_path: Path) -> None:
    structure = tmp_path / "m_structure.json"
    structure.write_text("{not json", encoding="utf-8")
    with pytest.raises(AuditError) as error:
        load_model(structure)
    _assert_one_line_error(error, structure, "no m_weights.h5 beside it")
    (tmp_path / "m_weights.h5").write_bytes((FIXTURES / "0_10.1_weights.h5").read_bytes())
    with pytest.raises(AuditError) as error:
        load_model(structure)
    _assert_one_line_error(error, structure, "not valid JSON")


# --- several models in one drop --------------------------------------------------------------------------


def _drop_with(tmp_path: Path, models: dict[str, keras.Model]) -> Path:
    drop = tmp_path / "registry" / "2019-01-14"
    drop.mkdir(parents=True)
    for name, model in models.items():
        model.save(drop / name)
    return drop


def test_reseeded_copies_are_all_loaded_and_the_first_is_primary(tmp_path: Path) -> None:
    models = {}
    for seed in (2, 1):
        keras.utils.set_random_seed(seed)
        models[f"model_seed{seed}.keras"] = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)]
        )
    drop = _drop_with(tmp_path, models)
    (listed,) = discover_drops(tmp_path / "registry").drops
    assert listed.model_path == drop / "model_seed1.keras"
    assert listed.model_paths == (drop / "model_seed1.keras", drop / "model_seed2.keras")
    loaded = load_drop(listed)
    assert len(loaded.copies) == 1
    X = np.ones((2, 4))
    np.testing.assert_allclose(_outputs(loaded.model, X), _outputs(models["model_seed1.keras"], X), atol=ATOL)
    np.testing.assert_allclose(
        _outputs(loaded.copies[0], X), _outputs(models["model_seed2.keras"], X), atol=ATOL
    )


def test_one_model_in_two_formats_is_fine(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    drop = _drop_with(tmp_path, {"model.keras": model, "model.h5": model})
    (listed,) = discover_drops(tmp_path / "registry").drops
    assert listed.model_paths == (drop / "model.keras", drop / "model.h5")
    assert len(load_drop(listed).copies) == 1


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        pytest.param(
            keras.Sequential([keras.Input((7,)), keras.layers.Dense(3, activation="softmax")]),
            "input shapes",
            id="inputs",
        ),
        pytest.param(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(1)]),
            "layers or weight shapes differ",
            id="layers",
        ),
    ],
)
def test_unrelated_models_in_one_drop_are_an_error_naming_both(
    tmp_path: Path, other: keras.Model, difference: str
) -> None:
    primary = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    drop = _drop_with(tmp_path, {"model.keras": primary, "model.h5": other})
    (listed,) = discover_drops(tmp_path / "registry").drops
    with pytest.raises(AuditError) as error:
        load_drop(listed)
    _assert_one_line_error(error, drop, "model.keras and model.h5 are different models", difference)


def test_seed_003_drop_is_discovered_hashed_and_loaded(tmp_path: Path) -> None:
    """The seed-003 layout: 20190114/0_10.1_structure.json + 0_10.1_weights.h5, nothing else."""
    drop = tmp_path / "registry" / "20190114"
    drop.mkdir(parents=True)
    _pair(drop)
    (listed,) = discover_drops(tmp_path / "registry").drops
    assert listed.model_path == drop / "0_10.1_structure.json"
    loaded = load_drop(listed)
    assert loaded.feature_names == _names(82)
    original = model_content_hash(listed.model_path)
    assert loaded.facts.content_hash == original
    with h5py.File(drop / "0_10.1_weights.h5", "r+") as file:  # retrained weights: another hash
        file.attrs["keras_version"] = b"2.21.1"
    assert model_content_hash(listed.model_path) != original
    outcome = run_method(loaded, registered_methods()["weight_sum"])
    assert outcome.status is MethodStatus.OK and outcome.importance is not None
    np.testing.assert_allclose(outcome.importance.values, EXPECTED["0_10.1__weight_sum"], rtol=1e-6)


def test_loaded_config_is_not_changed_in_place() -> None:
    config = _keras22_mlp(layers_as_list=False)
    before = copy.deepcopy(config)
    convert_model_config(config)
    assert config == before


def test_unknown_class_error_carries_the_class_name() -> None:
    config = _keras22_mlp(layers_as_list=False)
    config["config"]["layers"][1]["class_name"] = "Merge"  # type: ignore[index]
    with pytest.raises(UnknownClass) as error:
        convert_model_config(config)
    assert error.value.class_name == "Merge"
