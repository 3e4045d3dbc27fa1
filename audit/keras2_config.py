"""Convert a Keras 2 model config into one Keras 3 builds the same model from.

Keras 2 configs come from ``model.to_json()`` (the ``<name>_structure.json`` teams ship) and from
the ``model_config`` attribute of HDF5 files, written by Keras 2.x, tf.keras 2.x, and by Keras 3's
own HDF5 writer (which keeps the Keras 2 layout). What differs from Keras 3, and what is done:

- Objects are ``{"class_name", "config"}`` (tf.keras >= 2.13 adds ``module`` with tf.keras's own
  paths); Keras 3 finds classes through ``module``. Each class is looked up among Keras 3's
  built-ins where it occurs (layers, initializers, regularizers, constraints) and given its Keras 3
  module, or found among the classes registered with ``@keras.saving.register_keras_serializable``
  (see `audit.model_safety.import_custom_modules`). Anything else is refused (`UnknownClass`):
  a module named in the file is never imported.
- Sequential: old configs give the input shape as ``batch_input_shape`` (or ``input_shape``,
  ``input_dim``) on the first layer, and Keras <= 2.1 wrote the layer list as the whole config. An
  ``InputLayer`` with ``batch_shape`` is put in front, as Keras 3 expects.
- Functional (``Model`` in Keras <= 2.2): ``inbound_nodes`` in the old list form
  ``[[[layer, node_index, tensor_index, kwargs], ...], ...]`` are checked and normalised to
  four-element entries, the legacy form Keras 3's ``functional_from_config`` still reads; node
  kwargs must be plain values.
- Layer settings Keras 3 no longer has are dropped only when they cannot change the output
  (``time_major=False``, ``implementation``, ``input_length``...); any other unknown setting is an
  error naming it. Renamed: LeakyReLU ``alpha`` -> ``negative_slope``; BatchNormalization
  ``axis=[k]`` -> ``k``; VarianceScaling ``distribution="normal"`` -> ``"truncated_normal"``; a GRU
  without ``reset_after`` (Keras < 2.1.3) gets Keras 2's default ``False``.
- Activations keep their names, except ``hard_sigmoid``: Keras 3 redefined it (Keras 2:
  ``clip(0.2 x + 0.5, 0, 1)``, Keras 3: ``clip(x / 6 + 0.5, 0, 1)``), so configs written by Keras 2
  get `keras2_hard_sigmoid`, which computes the old function (GRU/LSTM used it by default up to
  Keras 2.2).
- Lambda layers (converted only for callers who trust the file; `audit.model_safety` refuses them
  otherwise): Keras 2's marshalled function ``[code, defaults, closure]`` becomes Keras 3's
  ``__lambda__`` form. The code only runs on the Python version that wrote it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import keras

#: Model classes: their configs hold layers, not constructor settings.
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

#: Keras 2 layers with no Keras 3 counterpart, and why.
_NOT_IN_KERAS3 = {
    "TFOpLambda": "a raw TensorFlow call (e.g. tf.math.add on a Keras tensor) that Keras 3 cannot rebuild",
    "SlicingOpLambda": "a raw TensorFlow slice that Keras 3 cannot rebuild",
    "CuDNNGRU": "a CuDNN-only layer whose weight layout Keras 3 does not read",
    "CuDNNLSTM": "a CuDNN-only layer whose weight layout Keras 3 does not read",
    "ThresholdedReLU": "a layer Keras 3 removed",
}


def _always(value: object) -> bool:
    return True


#: Keras 2 layer settings that Keras 3 layers do not take, with the values that leave the output unchanged.
_DROPPABLE: dict[str, Callable[[object], bool]] = {
    "time_major": lambda value: value is False,
    "implementation": _always,  # a speed choice of Keras 2's RNN kernels
    "input_length": _always,  # Embedding: the input shape, kept by the InputLayer
    "fused": _always,  # BatchNormalization kernel choice
    "renorm": lambda value: value is False,
    "renorm_clipping": lambda value: value is None,
    "renorm_momentum": _always,
    "virtual_batch_size": lambda value: value is None,
    "adjustment": lambda value: value is None,
    "ragged": lambda value: value is False,
    "batch_size": lambda value: value is None,
}
#: Settings that give the input shape; it goes to the InputLayer.
_SHAPE_SETTINGS = ("batch_input_shape", "batch_shape", "input_shape", "input_dim", "batch_size")
_DTYPE_POLICIES = frozenset({"Policy", "DTypePolicy", "FloatDTypePolicy"})
_PLAIN = (str, int, float, bool, type(None))
#: Input dtypes taken from the first layer (a mixed-precision policy name is not one).
_INPUT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "int32", "int64", "uint8", "bool"})


class UnsupportedConfig(ValueError):
    """The config cannot be converted; the message names the part and why."""


class UnknownClass(UnsupportedConfig):
    """The config names a class that is neither a Keras 3 built-in nor registered."""

    def __init__(self, what: str, class_name: str) -> None:
        super().__init__(
            f"{what} is a {class_name!r}, which Keras 3 does not have "
            "(a custom class, or one removed from Keras)"
        )
        self.class_name = class_name


@keras.saving.register_keras_serializable(package="drift_audit", name="keras2_hard_sigmoid")  # type: ignore[untyped-decorator]
def keras2_hard_sigmoid(x: object) -> object:
    """Keras 2's hard sigmoid: ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3's ``hard_sigmoid`` uses x / 6)."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)  # type: ignore[operator]


_KERAS2_HARD_SIGMOID = "drift_audit>keras2_hard_sigmoid"


@dataclass(frozen=True)
class _Rules:
    #: Written by Keras 2 (names keep Keras 2 meanings; unknown settings are checked).
    keras2: bool


def keras_major_version(version: str | None) -> int:
    """2 for ``"2.2.4"``, 3 for ``"3.15.1"``; files that do not say were written by Keras 2."""
    if not version:
        return 2
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isdigit() else 2


def convert_model_config(
    config: Mapping[str, object], *, keras_version: str | None = None
) -> dict[str, object]:
    """A Keras 3 config for the Sequential or functional model described by `config`.

    Parameters
    ----------
    config : mapping
        The Keras 2 model config: ``{"class_name": "Sequential" | "Functional" | "Model", "config": ...}``.
    keras_version : str, optional
        The Keras version that wrote it (``keras_version`` of the JSON or the HDF5 file); without
        it, Keras 2.

    Raises
    ------
    UnsupportedConfig
        Naming the layer or setting that Keras 3 cannot build; `UnknownClass` for classes that are
        neither built in nor registered.
    """
    return _model(config, _Rules(keras2=keras_major_version(keras_version) < 3))


def _model(obj: Mapping[str, object], rules: _Rules) -> dict[str, object]:
    class_name = obj.get("class_name")
    inner = obj.get("config")
    if class_name == "Sequential":
        return _sequential(inner, rules)
    if class_name in ("Functional", "Model") and isinstance(inner, Mapping) and "layers" in inner:
        return _functional(inner, rules)
    if isinstance(class_name, str) and class_name not in MODEL_CLASSES:
        raise UnsupportedConfig(
            f"the model is a {class_name!r}, not a Sequential or functional model (a subclassed model "
            "has no layer graph in its config)"
        )
    raise UnsupportedConfig("the config does not describe a model (no class_name and layers)")


def _sequential(inner: object, rules: _Rules) -> dict[str, object]:
    settings: Mapping[str, object] = {}
    if isinstance(inner, list):  # Keras <= 2.1: the layer list is the config
        layers = inner
    elif isinstance(inner, Mapping) and isinstance(inner.get("layers"), list):
        layers, settings = inner["layers"], inner
    else:
        raise UnsupportedConfig("the Sequential model has no list of layers")
    if not layers:
        raise UnsupportedConfig("the Sequential model has no layers")
    converted = [_layer(layer, rules) for layer in layers]
    if converted[0]["class_name"] != "InputLayer" and converted[0]["class_name"] not in MODEL_CLASSES:
        converted.insert(0, _input_layer_for(layers[0]))
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": settings.get("name", "sequential"),
            "trainable": settings.get("trainable", True),
            "layers": converted,
        },
        "registered_name": None,
    }


def _input_layer_for(first: object) -> dict[str, object]:
    """The InputLayer Keras 3 needs in front of an old Sequential's first layer."""
    settings = first.get("config") if isinstance(first, Mapping) else None
    settings = settings if isinstance(settings, Mapping) else {}
    name = str(settings.get("name", "layer"))
    shape = _batch_shape(settings, str(first.get("class_name")) if isinstance(first, Mapping) else "")
    if shape is None:
        raise UnsupportedConfig(
            f"the Sequential model has no input shape (no batch_input_shape on its first layer '{name}'), "
            "so its weights cannot be placed"
        )
    dtype = settings.get("dtype")
    return {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {
            "batch_shape": shape,
            "dtype": dtype if dtype in _INPUT_DTYPES else "float32",
            "name": f"{name}_input",
        },
        "registered_name": None,
    }


def _batch_shape(settings: Mapping[str, object], class_name: str) -> list[object] | None:
    for key in ("batch_input_shape", "batch_shape"):
        shape = settings.get(key)
        if isinstance(shape, list):
            return list(shape)
    if isinstance(settings.get("input_shape"), list):
        return [None, *settings["input_shape"]]  # type: ignore[misc]
    if class_name == "Embedding":  # input_dim is the vocabulary size
        length = settings.get("input_length")
        return [None, length] if isinstance(length, int) else None
    if isinstance(settings.get("input_dim"), int):
        return [None, settings["input_dim"]]
    return None


def _functional(inner: Mapping[str, object], rules: _Rules) -> dict[str, object]:
    layers = inner["layers"]
    if not isinstance(layers, list) or not layers:
        raise UnsupportedConfig("the functional model has no layers")
    converted = []
    for entry in layers:
        layer = _layer(entry, rules)
        name = entry.get("name") or layer["config"]["name"]  # type: ignore[index]
        layer["name"] = name
        layer["inbound_nodes"] = _inbound_nodes(entry.get("inbound_nodes", []), str(name))
        converted.append(layer)
    input_layers, output_layers = copy.deepcopy([inner.get("input_layers"), inner.get("output_layers")])
    _renumber_nested_model_nodes(converted, [input_layers, output_layers])
    return {
        "module": "keras",
        "class_name": "Model",
        "config": {
            "name": inner.get("name", "model"),
            "trainable": inner.get("trainable", True),
            "layers": converted,
            "input_layers": _endpoints(input_layers),
            "output_layers": _endpoints(output_layers),
        },
        "registered_name": None,
    }


def _renumber_nested_model_nodes(layers: list[dict[str, object]], endpoints: list[object]) -> None:
    """Count the calls of a nested model from 0, as Keras 3 does.

    tf.keras 2 numbers the calls of a nested model that has its own Input from 1 (its node 0 is
    its own input-to-output graph, left out of the config); Keras 2.2 numbered them from 0. A
    nested model referenced at an index past its list of calls is shifted down to start at 0.
    """
    references: list[list[object]] = []
    for layer in layers:
        nodes = layer["inbound_nodes"]
        references.extend(entry for node in nodes if isinstance(node, list) for entry in node)  # type: ignore[attr-defined]
    for group in endpoints:
        if isinstance(group, list):
            references.extend(entry for entry in group if isinstance(entry, list) and len(entry) >= 2)
    for layer in layers:
        if layer["class_name"] not in MODEL_CLASSES:
            continue
        indices = [
            entry[1] for entry in references if entry[0] == layer["name"] and isinstance(entry[1], int)
        ]
        n_calls = len(layer["inbound_nodes"])  # type: ignore[arg-type]
        if indices and max(indices) >= n_calls:
            shift = max(indices) - n_calls + 1
            for entry in references:
                if entry[0] == layer["name"] and isinstance(entry[1], int):
                    entry[1] -= shift


def _endpoints(value: object) -> object:
    """Keras 2 lists one input/output as ``[[name, 0, 0]]``; Keras 3 wants ``[name, 0, 0]`` for one."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        return value[0]
    return value


def _inbound_nodes(nodes: object, layer: str) -> list[object]:
    """Old list-form nodes as ``[layer, node_index, tensor_index, kwargs]`` entries; new dict form as is."""
    if not isinstance(nodes, list):
        raise UnsupportedConfig(f"layer '{layer}': inbound_nodes is not a list")
    result: list[object] = []
    for node in nodes:
        if isinstance(node, Mapping) and "args" in node:  # already Keras 3's form
            result.append(dict(node))
            continue
        if not isinstance(node, list):
            raise UnsupportedConfig(f"layer '{layer}': inbound node {node!r} is not a list of inputs")
        entries = []
        for entry in node:
            valid = isinstance(entry, list) and len(entry) in (3, 4) and isinstance(entry[0], str)
            if not valid or not all(isinstance(i, int) for i in entry[1:3]):
                raise UnsupportedConfig(
                    f"layer '{layer}': inbound node entry {entry!r} is not "
                    "[layer, node_index, tensor_index, kwargs]"
                )
            kwargs = entry[3] if len(entry) == 4 else {}
            if not isinstance(kwargs, Mapping) or not all(isinstance(v, _PLAIN) for v in kwargs.values()):
                raise UnsupportedConfig(f"layer '{layer}': call arguments {kwargs!r} are not plain values")
            entries.append([entry[0], entry[1], entry[2], dict(kwargs)])
        result.append(entries)
    return result


def _layer(obj: object, rules: _Rules) -> dict[str, object]:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("class_name"), str):
        raise UnsupportedConfig(f"layer entry {str(obj)[:80]} has no class_name")
    class_name = str(obj["class_name"])
    settings = obj.get("config")
    settings = dict(settings) if isinstance(settings, Mapping) else {}
    what = f"layer '{settings.get('name', class_name)}'"
    if class_name in MODEL_CLASSES:
        return _model(obj, rules)
    if class_name in _NOT_IN_KERAS3:
        raise UnsupportedConfig(f"{what} is a {class_name}, {_NOT_IN_KERAS3[class_name]}")
    cls = getattr(keras.layers, class_name, None)
    builtin = isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
    custom = _registered(class_name, obj.get("registered_name"), builtin=builtin)
    if custom is not None:  # its own settings as they are, but the input shape goes to the InputLayer
        for key in _SHAPE_SETTINGS:
            settings.pop(key, None)
        converted = {key: _setting(key, value, rules, what) for key, value in settings.items()}
        return _custom_object(class_name, custom, converted)
    if cls is None or not builtin:
        raise UnknownClass(what, class_name)
    converted = _layer_settings(class_name, cls, settings, rules)
    result: dict[str, object] = {
        "module": "keras.layers",
        "class_name": class_name,
        "config": converted,
        "registered_name": None,
    }
    if isinstance(obj.get("build_config"), Mapping):
        result["build_config"] = dict(obj["build_config"])  # type: ignore[call-overload]
    return result


def _layer_settings(
    class_name: str, cls: type[keras.layers.Layer], settings: dict[str, object], rules: _Rules
) -> dict[str, object]:
    name = settings.get("name", class_name)
    if class_name == "InputLayer":
        shape = _batch_shape(settings, class_name)
        for key in _SHAPE_SETTINGS:
            settings.pop(key, None)
        settings["batch_shape"] = shape
    else:
        for key in _SHAPE_SETTINGS if class_name != "Embedding" else _SHAPE_SETTINGS[:3]:
            settings.pop(key, None)
    _rename_settings(class_name, settings, rules)
    for key, value in list(settings.items()):
        settings[key] = _setting(key, value, rules, f"layer '{name}'")
    if rules.keras2:
        _drop_unknown_settings(cls, settings, f"layer '{name}' ({class_name})")
    return settings


def _rename_settings(class_name: str, settings: dict[str, object], rules: _Rules) -> None:
    if class_name == "LeakyReLU" and "alpha" in settings:
        settings["negative_slope"] = settings.pop("alpha")
    if class_name == "BatchNormalization":
        axis = settings.get("axis")
        if isinstance(axis, list) and len(axis) == 1:
            settings["axis"] = axis[0]
    if class_name in ("GRU", "GRUCell") and rules.keras2:
        settings.setdefault("reset_after", False)
    if class_name == "Lambda":
        _lambda_settings(settings)


def _setting(key: str, value: object, rules: _Rules, what: str) -> object:
    """One layer setting, with the objects it holds converted."""
    if key in ("activation", "recurrent_activation"):
        return _activation(value, rules, what)
    if not isinstance(value, Mapping) and not (key == "cells" and isinstance(value, list)):
        return value
    if key.endswith("_initializer"):
        return _object(value, "initializers", f"{what}'s {key}")
    if key.endswith("_regularizer"):
        return _object(value, "regularizers", f"{what}'s {key}")
    if key.endswith("_constraint"):
        return _object(value, "constraints", f"{what}'s {key}")
    if key in ("layer", "backward_layer", "cell"):
        return _layer(value, rules)
    if key == "cells":
        return [_layer(cell, rules) for cell in value]  # type: ignore[union-attr]
    if key == "dtype":
        return _dtype(value, rules, what)  # type: ignore[arg-type]
    return value


def _object(value: object, namespace: str, what: str) -> dict[str, object]:
    """An initializer, regularizer or constraint given as ``{"class_name", "config"}``."""
    if not isinstance(value, Mapping) or not isinstance(value.get("class_name"), str):
        raise UnsupportedConfig(f"{what} {str(value)[:80]} has no class_name")
    class_name = str(value["class_name"])
    settings = value.get("config")
    settings = dict(settings) if isinstance(settings, Mapping) else {}
    builtin = isinstance(getattr(getattr(keras, namespace), class_name, None), type)
    custom = _registered(class_name, value.get("registered_name"), builtin=builtin)
    if custom is not None:
        return _custom_object(class_name, custom, settings)
    if not builtin:
        raise UnknownClass(what, class_name)
    if class_name == "VarianceScaling" and settings.get("distribution") == "normal":
        settings["distribution"] = "truncated_normal"  # what Keras 2 meant by "normal"
    return {
        "module": f"keras.{namespace}",
        "class_name": class_name,
        "config": settings,
        "registered_name": None,
    }


def _activation(value: object, rules: _Rules, what: str) -> object:
    """An activation by name (the Keras 2 way), or a function/layer object of newer files."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if value.get("class_name") != "function":  # an activation layer object (tf.keras >= 2.13)
            return _layer(value, rules)
        registered = value.get("registered_name")
        name = registered if isinstance(registered, str) and ">" in registered else value.get("config")
    else:
        name = value
    if not isinstance(name, str):
        raise UnsupportedConfig(f"{what}'s activation {str(value)[:80]} is not a name")
    if name == "hard_sigmoid" and rules.keras2:
        name = _KERAS2_HARD_SIGMOID
    elif callable(getattr(keras.activations, name, None)) and name not in ("get", "serialize", "deserialize"):
        return name
    function = keras.saving.get_registered_object(name)
    if function is None:
        raise UnknownClass(f"{what}'s activation", name)
    return {"module": function.__module__, "class_name": "function", "config": name, "registered_name": name}


def _dtype(value: Mapping[str, object], rules: _Rules, what: str) -> object:
    inner = value.get("config")
    if value.get("class_name") in _DTYPE_POLICIES and isinstance(inner, Mapping) and "name" in inner:
        return inner["name"]
    if not rules.keras2:
        return dict(value)
    raise UnsupportedConfig(f"{what}'s dtype {str(value)[:80]} is not a dtype policy Keras 3 knows")


def _lambda_settings(settings: dict[str, object]) -> None:
    """Keras 2's ``function: [code, defaults, closure]`` -> Keras 3's ``__lambda__`` object."""
    for key, kind_key in (("function", "function_type"), ("output_shape", "output_shape_type")):
        kind = settings.pop(kind_key, "raw" if key == "output_shape" else "lambda")
        settings.pop(f"{key}_module" if key == "output_shape" else "module", None)
        value = settings.get(key)
        if kind == "lambda" and isinstance(value, list) and len(value) == 3:
            code, defaults, closure = value
            settings[key] = {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": defaults, "closure": closure},
            }
        elif kind == "function":
            raise UnsupportedConfig(
                f"Lambda layer '{settings.get('name')}' refers to the Python function {value!r} by name"
            )


def _drop_unknown_settings(cls: type[keras.layers.Layer], settings: dict[str, object], what: str) -> None:
    accepted = _accepted_settings(cls)
    for key in list(settings):
        if key in accepted:
            continue
        droppable = _DROPPABLE.get(key)
        if droppable is not None and droppable(settings[key]):
            del settings[key]
            continue
        raise UnsupportedConfig(f"{what}: setting {key}={settings[key]!r} has no Keras 3 counterpart")


def _accepted_settings(cls: type[keras.layers.Layer]) -> frozenset[str]:
    """Keyword arguments the constructor of `cls` takes, following ``**kwargs`` up to `Layer`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if klass is keras.layers.Layer or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return frozenset(names - {"self"})


def _registered(class_name: str, registered_name: object, *, builtin: bool) -> tuple[str, object] | None:
    """(registered name, object) of a class registered with register_keras_serializable, if any.

    The file's ``registered_name`` (tf.keras >= 2.13) is used when registered here; older files
    name only the class, which is matched to a registered ``package>Class`` when exactly one
    matches and Keras has no built-in of that name.
    """
    custom = keras.saving.get_custom_objects()
    if isinstance(registered_name, str) and registered_name in custom:
        return registered_name, custom[registered_name]
    if builtin:
        return None
    matches = [key for key in custom if key == class_name or key.endswith(f">{class_name}")]
    return (matches[0], custom[matches[0]]) if len(matches) == 1 else None


def _custom_object(
    class_name: str, registered: tuple[str, object], settings: dict[str, object]
) -> dict[str, object]:
    """A registered custom class, named so that Keras 3 finds it by its registered name."""
    key, obj = registered
    return {
        "module": getattr(obj, "__module__", None),
        "class_name": class_name,
        "config": settings,
        "registered_name": key,
    }
