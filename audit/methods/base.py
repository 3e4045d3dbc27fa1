"""The method registry: every importance measure registers itself here under its stored name.

Each measure lives in its own module with a public ``compute_<measure>(model, X, y=None, *, ...)``
function (see STYLE.md). The module also registers a small adapter that maps the shared
`MethodContext` onto that function's options, so the flow can run any method the same way.
Weight-only measures declare ``needs_eval_sample=False``; the rest are skipped with a reason when a
drop ships no eval sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import keras
import numpy as np

from audit.targets import OutputTarget
from audit.types import FloatArray, Importance

T = TypeVar("T")


class MethodNotApplicable(Exception):
    """The method does not apply to this model or sample; the message says why (shown in the report)."""


@dataclass(frozen=True)
class MethodContext:
    """What every method may use besides the model and the sample."""

    feature_names: tuple[str, ...]
    target: OutputTarget
    random_state: int = 0
    #: This method's options from the drop's ``[methods.<name>]`` table in audit.toml.
    options: Mapping[str, object] = field(default_factory=dict)

    def option(self, name: str, default: T, kind: type[T]) -> T:
        """The option `name` (or `default`), checked to be of `kind`; a clear error otherwise."""
        value = self.options.get(name, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"option {name} must be {kind.__name__}, got {value!r}")
        return value


#: model, X (None for weight-only methods), y (None without targets), context -> result
ComputeFn = Callable[[keras.Model, FloatArray | None, FloatArray | None, MethodContext], Importance]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    compute: ComputeFn
    needs_eval_sample: bool
    description: str


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, needs_eval_sample: bool, description: str
) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: make a method available under `name` (the name stored with its figures)."""

    def decorate(compute: ComputeFn) -> ComputeFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = MethodSpec(name, compute, needs_eval_sample, description)
        return compute

    return decorate


def registered_methods() -> Mapping[str, MethodSpec]:
    """All methods by name, in registration order (importing `audit.methods` registers them)."""
    return dict(_REGISTRY)


def standard_error(per_unit: FloatArray) -> FloatArray:
    """Standard error of the mean over the first axis (units: samples, rows or repeats).

    This is what `Importance.std` holds for every method: how much the figure would move if it were
    recomputed on another draw of the units it averages (ddof=1; zero with a single unit).
    """
    n_units = per_unit.shape[0]
    flat = per_unit.reshape(n_units, -1)
    if n_units < 2:
        return np.zeros(flat.shape[1])
    return np.asarray(flat.std(axis=0, ddof=1) / np.sqrt(n_units), dtype=np.float64)


def per_sample_importance(per_element: FloatArray) -> FloatArray:
    """(n_samples, n_features) figures from per-element ones: the mean over time steps, if any."""
    return per_element.mean(axis=1) if per_element.ndim == 3 else per_element


class ElementSummary:
    """What a method reports from per-element figures (n_samples, [n_steps,] n_features), reduced
    chunk by chunk so the whole array is never held: one value per sample and feature, and the
    running (n_steps, n_features) sum over samples.

    - `values`: the mean over samples (and steps) per feature;
    - `std`: its standard error over samples, of each sample's mean over steps;
    - `profile`: the mean over samples, (n_steps, n_features), for sequences (else None).
    """

    def __init__(self, n_samples: int, row_shape: tuple[int, ...]) -> None:
        self.n_samples = n_samples
        self.per_sample = np.zeros((n_samples, row_shape[-1]))
        self._profile_sum = np.zeros(row_shape) if len(row_shape) == 2 else None

    def add(self, rows: slice, per_element: FloatArray) -> None:
        """The figures of the samples `rows`, shaped (n_rows, [n_steps,] n_features)."""
        self.per_sample[rows] = per_sample_importance(per_element)
        if self._profile_sum is not None:
            self._profile_sum += per_element.sum(axis=0)

    @property
    def values(self) -> FloatArray:
        return np.asarray(self.per_sample.mean(axis=0), dtype=np.float64)

    @property
    def std(self) -> FloatArray:
        return standard_error(self.per_sample)

    @property
    def profile(self) -> FloatArray | None:
        return None if self._profile_sum is None else self._profile_sum / self.n_samples
