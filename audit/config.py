"""Read a drop's optional ``audit.toml`` into a `DropConfig`, rejecting keys we do not know."""

from __future__ import annotations

import dataclasses
import tomllib
from collections import Counter
from pathlib import Path

from audit.types import DEFAULT_MAX_EVAL_SAMPLES, AuditError, DriftConfig, DropConfig, NanPolicy, Task

_KNOWN_KEYS = frozenset(
    {
        "feature_names",
        "task",
        "target",
        "class_index",
        "output_index",
        "methods",
        "nan_policy",
        "max_eval_samples",
        "drift",
    }
)
_DRIFT_KEYS = {field.name: field for field in dataclasses.fields(DriftConfig)}


def read_drop_config(path: Path | None) -> DropConfig:
    """Parse `path` (None: the defaults). Unknown keys are errors, so a typo is never ignored."""
    if path is None:
        return DropConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise AuditError(f"{path}: not valid TOML ({reason}); fix the file or remove it") from error
    except OSError as error:
        raise AuditError(f"{path}: cannot read the file ({error.strerror or error})") from error
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(_KNOWN_KEYS))
        raise AuditError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {known}")
    return DropConfig(
        feature_names=_feature_names(path, raw.get("feature_names")),
        task=_task(path, raw.get("task")),
        target=_string(path, "target", raw.get("target", "target")),
        class_index=_index(path, "class_index", raw.get("class_index")),
        output_index=_index(path, "output_index", raw.get("output_index")),
        method_options=_method_options(path, raw.get("methods", {})),
        nan_policy=_nan_policy(path, raw.get("nan_policy", NanPolicy.ERROR.value)),
        max_eval_samples=_positive(
            path, "max_eval_samples", raw.get("max_eval_samples", DEFAULT_MAX_EVAL_SAMPLES)
        ),
        drift=_drift(path, raw.get("drift", {})),
    )


def _feature_names(path: Path, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise AuditError(f"{path}: feature_names must be a list of non-empty strings")
    duplicates = sorted(name for name, count in Counter(value).items() if count > 1)
    if duplicates:
        raise AuditError(
            f"{path}: duplicate feature_names {', '.join(duplicates)}; give every feature its own name"
        )
    return tuple(value)


def _task(path: Path, value: object) -> Task | None:
    if value is None:
        return None
    try:
        return Task(str(value))
    except ValueError:
        raise AuditError(f"{path}: task = {value!r} is not one of 'regression', 'classification'") from None


def _string(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise AuditError(f"{path}: {key} must be a non-empty string")
    return value


def _index(path: Path, key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AuditError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    return value


def _nan_policy(path: Path, value: object) -> NanPolicy:
    if isinstance(value, str) and value in {policy.value for policy in NanPolicy}:
        return NanPolicy(value)
    choices = " or ".join(f'"{policy.value}"' for policy in NanPolicy)
    raise AuditError(f"{path}: nan_policy = {value!r} is not one of {choices}")


def _positive(path: Path, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AuditError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _method_options(path: Path, value: object) -> dict[str, dict[str, object]]:
    """``[methods.permutation]`` tables, as written; their method names, option names and values are
    checked against each method's declared options when the drop loads (`audit.loading.load_drop`:
    the declarations live with the methods, which this light module does not import)."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise AuditError(f"{path}: methods must hold one table per method, e.g. [methods.permutation]")
    return {str(name): dict(options) for name, options in value.items()}


def _drift(path: Path, value: object) -> DriftConfig:
    """The ``[drift]`` table: thresholds of the drift call (see `DriftConfig` for each key)."""
    if not isinstance(value, dict):
        raise AuditError(f"{path}: drift must be a table, e.g. [drift] with threshold = 4.0")
    unknown = sorted(set(value) - set(_DRIFT_KEYS))
    if unknown:
        raise AuditError(
            f"{path}: unknown key(s) drift.{', drift.'.join(unknown)}; known: {', '.join(_DRIFT_KEYS)}"
        )
    options = dict(value)
    methods = options.get("verdict_methods")
    if methods is not None:
        if not isinstance(methods, list) or not all(isinstance(name, str) for name in methods):
            raise AuditError(f"{path}: drift.verdict_methods must be a list of method names")
        options["verdict_methods"] = tuple(methods)
    for key, option in options.items():
        if isinstance(option, bool) and key != "frozen_set":
            raise AuditError(f"{path}: drift.{key} must be a number, got {option!r}")
    try:
        return DriftConfig(**options)
    except (TypeError, ValueError) as error:
        raise AuditError(f"{path}: {error}") from None
