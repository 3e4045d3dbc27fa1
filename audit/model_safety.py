"""What loading a model may run, decided before anything is built from the file.

A model file never makes the auditor run code the auditor did not ship with, unless the caller
trusts the file (``trust_model_code``, CLI ``--trust-model-code``):

- ``.keras``: Keras's own ``safe_mode`` refuses Lambda layers that hold Python bytecode.
- HDF5 and Keras 2 JSON: the config is walked here first and Lambda layers are refused; classes
  that are neither Keras built-ins nor registered are refused by `audit.keras2_config`. Nothing a
  file names is ever imported.
- SavedModel folders: a SavedModel is a TensorFlow program (any TensorFlow op, file reads and
  writes included). TensorFlow's security guidance is that running an untrusted model is running
  untrusted code, and Keras refuses its ``TFSMLayer`` in safe mode; so are we.

Custom layers: `import_custom_modules` imports modules the auditor names (``custom_modules``), from
its own environment, before loading; importing them runs their
``@keras.saving.register_keras_serializable`` decorators, so their classes load in every format
without trusting the file.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from audit.types import AuditError

TRUST_HINT = "if you trust this file, pass --trust-model-code"
CUSTOM_HINT = (
    "if it is your team's layer, name the module that defines it (registered with "
    "@keras.saving.register_keras_serializable) in custom_modules"
)


def embedded_code(config: object) -> list[str]:
    """What in a model config holds Python code: Lambda layers and ``__lambda__`` functions."""
    found: list[str] = []
    _walk(config, found)
    return found


def _walk(node: object, found: list[str]) -> None:
    if isinstance(node, Mapping):
        class_name = node.get("class_name")
        if class_name == "Lambda":
            inner = node.get("config")
            name = inner.get("name") if isinstance(inner, Mapping) else None
            found.append(f"Lambda layer '{name}'" if name else "a Lambda layer")
        elif class_name == "__lambda__":
            found.append("a Python lambda")
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)


def refuse_embedded_code(config: object, path: Path, *, trust_model_code: bool) -> None:
    """Raise `AuditError` when `config` holds Python code and the caller does not trust the file."""
    found = embedded_code(config)
    if found and not trust_model_code:
        raise AuditError(embedded_code_message(path, found[0]))


def embedded_code_message(path: Path, what: str = "e.g. a Lambda layer") -> str:
    return f"{path}: the model embeds Python code ({what}), which is not run by default; {TRUST_HINT}"


def saved_model_message(path: Path) -> str:
    return (
        f"{path}: a TF SavedModel is a TensorFlow program (it may hold any TensorFlow op, file access "
        f"included), so it is not loaded by default; {TRUST_HINT}, or ship the model as model.keras"
    )


def unknown_class_message(path: Path, detail: str) -> str:
    return f"{path}: {detail}; {CUSTOM_HINT}"


def import_custom_modules(names: Sequence[str]) -> None:
    """Import the modules that register a team's custom Keras classes.

    Parameters
    ----------
    names : sequence of str
        Importable module names from the auditor's environment, e.g. ``["team_layers.keras"]``.
        Importing runs their ``@keras.saving.register_keras_serializable`` decorators; model
        files can then use those classes (by their registered name, or, in Keras 2 files that
        only give a class name, by that class name).

    Raises
    ------
    AuditError
        When a module cannot be imported, naming it.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # ImportError, or whatever the module raises on import
            text = " ".join(str(error).split())[:200] or type(error).__name__
            raise AuditError(
                f"custom module {name!r} cannot be imported ({text}); install it in the auditor's "
                "environment or fix the name in custom_modules"
            ) from error
