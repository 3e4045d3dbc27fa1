"""Load a drop's Keras model safely and describe it.

Loading uses Keras ``safe_mode``: a model file that embeds Python code (Lambda layers holding
bytecode) is refused unless the caller trusts it. Models are loaded without their compile state, so
an unknown custom loss in the file cannot stop an audit; data methods choose their loss by task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from audit.config import read_drop_config
from audit.eval_sample import file_sha256, load_eval_sample
from audit.forward import check_labels
from audit.targets import OutputTarget, check_output_index, output_activation
from audit.types import AuditError, Drop, DropConfig, EvalSample, ModelFacts, Task

_CLASSIFIER_ACTIVATIONS = frozenset({"softmax", "sigmoid"})


def load_model(path: Path, *, trust_model_code: bool = False) -> keras.Model:
    """Load `path` (a ``.keras`` file) or raise `AuditError` with the reason and the fix."""
    if not path.is_file():
        raise AuditError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise AuditError(f"{path}: model file is empty (0 bytes); re-save the model")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust_model_code)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors, TypeError...
        raise AuditError(_load_error_message(path, error, trust_model_code)) from error
    if not isinstance(model, keras.Model):
        raise AuditError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    if len(model.inputs) != 1:
        raise AuditError(
            f"{path}: model has {len(model.inputs)} inputs; only single-input models are audited"
        )
    return model


def _load_error_message(path: Path, error: Exception, trust_model_code: bool) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if not trust_model_code and ("safe_mode" in text or "arbitrary code" in text):
        return (
            f"{path}: the model embeds Python code (e.g. a Lambda layer), which is not run by default; "
            "if you trust this file, pass --trust-model-code"
        )
    return f"{path}: cannot load the model ({text[:300]}); check the file is a complete .keras save"


def infer_task(model: keras.Model, config: DropConfig) -> Task:
    """The configured task, else classification when the output comes from softmax/sigmoid."""
    if config.task is not None:
        return config.task
    return Task.CLASSIFICATION if output_activation(model) in _CLASSIFIER_ACTIVATIONS else Task.REGRESSION


def describe_model(model: keras.Model, path: Path, task: Task) -> ModelFacts:
    """The facts recorded with every audit: file hash, shapes, parameter count, task."""
    return ModelFacts(
        path=path,
        content_hash=file_sha256(path),
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
        problem = check_labels(sample.y, n_outputs, sigmoid=target.activation == "sigmoid")
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


def load_drop(drop: Drop, *, trust_model_code: bool = False) -> LoadedDrop:
    """Read everything a drop holds and check it fits together; raises `AuditError` otherwise."""
    config = read_drop_config(drop.config_path)
    model = load_model(drop.model_path, trust_model_code=trust_model_code)
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
