"""Read one model, in any format of `audit.model_formats`, into a Keras model.

Every failure is an `AuditError` whose one-line message names the file and the fix; no h5py,
zipfile, JSON or TensorFlow exception leaves this module. Safety (`audit.model_safety`) is checked
before anything is built: Keras ``safe_mode`` for ``.keras``; for HDF5 and Keras 2 JSON the config
is inspected first, converted (`audit.keras2_config`) and built in safe mode, and the weights are
read from the HDF5 layout of Keras 2 (``layer_names`` / ``weight_names`` attributes, which Keras 3
still reads through ``model.load_weights`` for ``.h5`` paths).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import keras

from audit.keras2_config import UnknownClass, UnsupportedConfig, convert_model_config
from audit.model_formats import ACCEPTED, ModelFormat, model_format, weights_file
from audit.model_safety import (
    embedded_code_message,
    refuse_embedded_code,
    unknown_class_message,
)
from audit.saved_model import load_saved_model
from audit.types import AuditError

KERAS_FIX = "check the file is a complete .keras save"
H5_FIX = 'check the file is a complete save of model.save("model.h5")'
_MISSING_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")
RESAVE = 'load it in the Keras that wrote it and re-save it with Keras 3: model.save("model.keras")'


def read_model(path: Path, *, trust_model_code: bool = False) -> keras.Model:
    """The model at `path` (a ``.keras``/``.h5`` file, a ``_structure.json``, or a SavedModel folder)."""
    form = model_format(path)
    if form is ModelFormat.KERAS:
        return _read_keras(path, trust_model_code)
    if form is ModelFormat.HDF5:
        return _read_hdf5(path, trust_model_code)
    if form is ModelFormat.KERAS2_JSON:
        return _read_keras2_json(path, trust_model_code)
    if form is ModelFormat.SAVED_MODEL:
        return load_saved_model(path, trust_model_code=trust_model_code)
    raise AuditError(f"{path}: not a model format drift-audit reads; ship {ACCEPTED}")


def _read_keras(path: Path, trust_model_code: bool) -> keras.Model:
    if not zipfile.is_zipfile(path):
        raise AuditError(
            f"{path}: cannot load the model (not a zip archive: truncated, or not a .keras save); {KERAS_FIX}"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trust_model_code)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors, TypeError...
        raise AuditError(_keras_error_message(path, error, trust_model_code)) from error


def _keras_error_message(path: Path, error: Exception, trust_model_code: bool) -> str:
    text = _short(error)
    if not trust_model_code and ("safe_mode" in text or "arbitrary code" in text):
        return embedded_code_message(path)
    missing = _MISSING_CLASS.search(text)
    if missing is not None:
        return unknown_class_message(path, f"the model uses {missing.group(1)!r}, which is not a Keras class")
    return f"{path}: cannot load the model ({text[:300]}); {KERAS_FIX}"


def _read_hdf5(path: Path, trust_model_code: bool) -> keras.Model:
    config_text, version = _hdf5_model_config(path)
    config = _parse_json(config_text, path, "its model_config attribute", H5_FIX)
    model = _build(config, path, version, trust_model_code)
    _load_weights(model, path, path, H5_FIX)
    return model


def _hdf5_model_config(path: Path) -> tuple[str, str | None]:
    try:
        with h5py.File(path, "r") as file:
            raw = file.attrs.get("model_config")
            version = _text(file.attrs.get("keras_version"))
            if version is None and isinstance(file.get("model_weights"), h5py.Group):
                version = _text(file["model_weights"].attrs.get("keras_version"))
            weights_only = raw is None and "layer_names" in file.attrs
    except Exception as error:  # OSError (signature not found, truncated), KeyError...
        raise AuditError(
            f"{path}: cannot load the model (not a readable HDF5 file: {_short(error)}); {H5_FIX}"
        ) from error
    if weights_only:
        raise AuditError(
            f"{path}: holds weights only, no model; ship it as <name>_weights.h5 beside the "
            f"<name>_structure.json of model.to_json(), or save the whole model with model.save()"
        )
    if raw is None:
        raise AuditError(
            f"{path}: cannot load the model (no model_config attribute: not a Keras HDF5 model); {H5_FIX}"
        )
    return (raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)), version


def _read_keras2_json(structure: Path, trust_model_code: bool) -> keras.Model:
    weights = weights_file(structure)
    fix = f"ship the output of model.to_json() as {structure.name} beside {weights.name}"
    if not weights.is_file():
        raise AuditError(
            f"{structure}: no {weights.name} beside it; ship both files, "
            "from model.to_json() and model.save_weights()"
        )
    for file in (structure, weights):
        if file.stat().st_size == 0:
            raise AuditError(f"{file}: model file is empty (0 bytes); re-save the model")
    try:
        text = structure.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AuditError(
            f"{structure}: cannot load the model (not UTF-8 text: {_short(error)}); {fix}"
        ) from error
    config = _parse_json(text, structure, "the file", fix)
    version = _text(config.get("keras_version")) or _weights_version(weights)
    model = _build(config, structure, version, trust_model_code)
    _load_weights(model, weights, structure, f"ship the weights saved from the model of {structure.name}")
    return model


def _weights_version(weights: Path) -> str | None:
    try:
        with h5py.File(weights, "r") as file:
            return _text(file.attrs.get("keras_version"))
    except Exception as error:
        raise AuditError(
            f"{weights}: cannot load the weights (not a readable HDF5 file: {_short(error)}); "
            "ship the file written by model.save_weights()"
        ) from error


def _parse_json(text: str, path: Path, where: str, fix: str) -> Mapping[str, object]:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError; hostile nesting
        raise AuditError(
            f"{path}: cannot load the model ({where} is not valid JSON: {_short(error)}); {fix}"
        ) from error
    if not isinstance(config, dict) or "class_name" not in config:
        raise AuditError(
            f"{path}: cannot load the model ({where} is not a Keras model config: no class_name); {fix}"
        )
    return config


def _build(
    config: Mapping[str, object], path: Path, version: str | None, trust_model_code: bool
) -> keras.Model:
    """Check, convert and build the model of a Keras 2 style config (no weights yet)."""
    try:
        refuse_embedded_code(config, path, trust_model_code=trust_model_code)
        converted = convert_model_config(config, keras_version=version)
    except UnknownClass as error:
        raise AuditError(unknown_class_message(path, str(error))) from error
    except UnsupportedConfig as error:
        raise AuditError(f"{path}: cannot load the model ({error}); {RESAVE}") from error
    except RecursionError as error:
        detail = "its config is nested too deeply"
        raise AuditError(f"{path}: cannot load the model ({detail}); {RESAVE}") from error
    try:
        model = keras.saving.deserialize_keras_object(converted, safe_mode=not trust_model_code)
    except Exception as error:  # whatever a layer's from_config raises on odd settings
        raise AuditError(
            f"{path}: cannot build the model from its config ({_short(error)[:300]}); {RESAVE}"
        ) from error
    if not isinstance(model, keras.Model):
        raise AuditError(f"{path}: the config builds a {type(model).__name__}, not a Keras model")
    return model


def _load_weights(model: keras.Model, weights: Path, structure: Path, fix: str) -> None:
    try:
        model.load_weights(weights)
    except Exception as error:  # ValueError (layer or shape mismatch), OSError, KeyError from h5py
        raise AuditError(
            f"{weights}: cannot load the weights into the model of {structure.name} "
            f"({_short(error)[:300]}); {fix}"
        ) from error


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _short(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
