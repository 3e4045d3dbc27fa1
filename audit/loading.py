"""Load a drop's models safely and describe them.

Formats (`audit.model_formats`): ``.keras``, whole-model ``.h5``, the Keras 2 pair
``<name>_structure.json`` + ``<name>_weights.h5``, and SavedModel folders. Loading never runs code
from a model file unless the caller trusts it (`audit.model_safety`): Keras ``safe_mode`` for
``.keras``, the config inspected before anything is built for HDF5 and JSON, SavedModels only when
trusted. A team's custom layers load once the modules that register them are named in
``custom_modules``. Models are loaded without their compile state, so an unknown custom loss in the
file cannot stop an audit; data methods choose their loss by task.

A drop may hold several models (reseeded copies of one architecture); the primary one is audited,
the others are loaded too and must have the same inputs, outputs and layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from audit.config import read_drop_config
from audit.eval_sample import load_eval_sample
from audit.forward import check_labels
from audit.methods import option_schemas
from audit.model_formats import model_content_hash
from audit.model_readers import read_model
from audit.model_safety import import_custom_modules
from audit.options import check_method_tables
from audit.saved_model import SavedModelLayer
from audit.targets import OutputTarget, check_output_index, output_activation
from audit.types import AuditError, Drop, DropConfig, EvalSample, ModelFacts, Task

_CLASSIFIER_ACTIVATIONS = frozenset({"softmax", "sigmoid"})


def load_model(
    path: Path, *, trust_model_code: bool = False, custom_modules: Sequence[str] = ()
) -> keras.Model:
    """Load the model at `path` or raise `AuditError` with the reason and the fix.

    Parameters
    ----------
    path : Path
        A ``.keras`` or ``.h5``/``.hdf5`` file, a ``<name>_structure.json`` (its
        ``<name>_weights.h5`` beside it), or a SavedModel folder.
    trust_model_code : bool
        Allow code embedded in the file (Lambda layers, SavedModel graphs). Off by default.
    custom_modules : sequence of str
        Modules to import first, from the auditor's environment, so that the custom classes they
        register with ``@keras.saving.register_keras_serializable`` can be loaded.
    """
    if path.is_symlink() and not path.exists():
        raise AuditError(f"{path}: model file not found (a broken symlink)")
    if not path.exists():
        raise AuditError(f"{path}: model file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise AuditError(f"{path}: model file is empty (0 bytes); re-save the model")
    import_custom_modules(custom_modules)
    model = read_model(path, trust_model_code=trust_model_code)
    if not isinstance(model, keras.Model):
        raise AuditError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    if len(model.inputs) != 1:
        raise AuditError(
            f"{path}: model has {len(model.inputs)} inputs; only single-input models are audited"
        )
    return model


def check_same_architecture(first: tuple[Path, keras.Model], other: tuple[Path, keras.Model]) -> None:
    """Raise `AuditError` unless two models of one drop are copies of one architecture.

    Copies (e.g. retrained with other seeds) have the same input and output shapes and, when both
    are made of Keras layers, the same layer types and weight shapes, in order.
    """
    (path_a, model_a), (path_b, model_b) = first, other
    difference = _architecture_difference(model_a, model_b)
    if difference is not None:
        raise AuditError(
            f"{path_a.parent}: {path_a.name} and {path_b.name} are different models ({difference}); "
            "a drop holds one model, or reseeded copies of one architecture"
        )


def _architecture_difference(a: keras.Model, b: keras.Model) -> str | None:
    for what, shape_a, shape_b in (
        ("input", a.inputs[0].shape, b.inputs[0].shape),
        ("output", a.outputs[0].shape, b.outputs[0].shape),
    ):
        if tuple(shape_a)[1:] != tuple(shape_b)[1:]:
            return f"{what} shapes {tuple(shape_a)[1:]} and {tuple(shape_b)[1:]}"
    layers_a, layers_b = _layer_signature(a), _layer_signature(b)
    if layers_a is not None and layers_b is not None and layers_a != layers_b:
        return "their layers or weight shapes differ"
    return None


def _layer_signature(model: keras.Model) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] | None:
    """(layer type, weight shapes) of every layer; None for a wrapped SavedModel (no Keras layers)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if any(isinstance(layer, SavedModelLayer) for layer in layers):
        return None
    return tuple(
        (type(layer).__name__, tuple(tuple(int(d) for d in w.shape) for w in layer.weights))
        for layer in layers
    )


def infer_task(model: keras.Model, config: DropConfig) -> Task:
    """The configured task, else classification when the output comes from softmax/sigmoid."""
    if config.task is not None:
        return config.task
    return Task.CLASSIFICATION if output_activation(model) in _CLASSIFIER_ACTIVATIONS else Task.REGRESSION


def describe_model(model: keras.Model, path: Path, task: Task) -> ModelFacts:
    """The facts recorded with every audit: content hash, shapes, parameter count, task.

    The hash covers every file of the model: both files of a JSON pair, all of a SavedModel folder.
    """
    return ModelFacts(
        path=path,
        content_hash=model_content_hash(path),
        input_shape=tuple(model.inputs[0].shape),
        output_shape=tuple(model.outputs[0].shape),
        n_parameters=int(model.count_params()),
        task=task,
    )


def check_sample_fits(model: keras.Model, sample: EvalSample, target: OutputTarget) -> None:
    """Raise `AuditError` when the eval sample is not the model's input, or y not its target."""
    expected = tuple(model.inputs[0].shape)[1:]
    actual = tuple(sample.X.shape[1:])
    fits = len(expected) == len(actual) and all(
        e is None or e == a for e, a in zip(expected, actual, strict=False)
    )
    if not fits:
        shown = tuple("n" if e is None else e for e in expected)
        raise AuditError(
            f"{sample.source}: X has per-sample shape {actual} but the model takes {shown}; "
            "the eval sample must be the model's input"
        )
    if sample.y is None:
        return
    n_outputs = int(np.prod([d or 1 for d in tuple(model.outputs[0].shape)[1:]]))
    if target.task is Task.CLASSIFICATION:
        problem = check_labels(
            sample.y, tuple(model.outputs[0].shape)[1:], sigmoid=target.activation == "sigmoid"
        )
        if problem is not None:
            raise AuditError(f"{sample.source}: {problem}; fix y or set task in audit.toml")
    elif sample.y.reshape(sample.y.shape[0], -1).shape[1] not in (1, n_outputs):
        raise AuditError(
            f"{sample.source}: y has {sample.y[0].size} values per sample but the model has "
            f"{n_outputs} outputs; they must match"
        )


@dataclass(frozen=True)
class LoadedDrop:
    """A drop ready for the methods: its model, the facts about it, and its eval sample if any."""

    drop: Drop
    model: keras.Model
    facts: ModelFacts
    sample: EvalSample | None
    feature_names: tuple[str, ...]
    config: DropConfig
    target: OutputTarget
    #: The drop's other models (`Drop.model_paths` after the primary), same architecture as `model`.
    copies: tuple[keras.Model, ...] = ()


def load_drop(
    drop: Drop, *, trust_model_code: bool = False, custom_modules: Sequence[str] = ()
) -> LoadedDrop:
    """Read everything a drop holds and check it fits together; raises `AuditError` otherwise.

    Every model of the drop is loaded (see `load_model` for the options); the copies must have the
    primary model's architecture. The ``[methods.<name>]`` tables of audit.toml are checked against
    the methods' declared options first, so a typo fails the drop before anything is loaded or
    computed.
    """
    config = read_drop_config(drop.config_path)
    check_method_tables(drop.config_path, config.method_options, option_schemas())
    model = load_model(drop.model_path, trust_model_code=trust_model_code, custom_modules=custom_modules)
    copies = []
    for path in drop.model_paths[1:]:
        copy = load_model(path, trust_model_code=trust_model_code, custom_modules=custom_modules)
        check_same_architecture((drop.model_path, model), (path, copy))
        copies.append(copy)
    task = infer_task(model, config)
    target = OutputTarget(
        task=task,
        activation=output_activation(model),
        output_index=config.output_index,
        class_index=config.class_index,
    )
    check_output_index(model, target)
    sample = load_eval_sample(drop.eval_paths, config)
    if sample is not None:
        check_sample_fits(model, sample, target)
        feature_names = sample.feature_names
    else:
        feature_names = _names_without_sample(drop, model, config)
    return LoadedDrop(
        drop=drop,
        model=model,
        facts=describe_model(model, drop.model_path, task),
        sample=sample,
        feature_names=feature_names,
        config=config,
        target=target,
        copies=tuple(copies),
    )


def _names_without_sample(drop: Drop, model: keras.Model, config: DropConfig) -> tuple[str, ...]:
    n_features = tuple(model.inputs[0].shape)[-1]
    if config.feature_names is None:
        return tuple(f"x{i}" for i in range(n_features or 0))
    if len(config.feature_names) != n_features:
        raise AuditError(
            f"{drop.config_path}: {len(config.feature_names)} feature_names for a model with "
            f"{n_features} input features; give one name per feature"
        )
    return config.feature_names
