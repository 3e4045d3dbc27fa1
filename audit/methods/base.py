"""The method registry: every importance measure registers itself here under its stored name.

Each measure lives in its own module with a public ``compute_<measure>(model, X, y=None, *, ...)``
function (see STYLE.md). The module also registers a small adapter that maps the shared
`MethodContext` onto that function's options, so the flow can run any method the same way, and
declares the method's options once (a frozen dataclass of `audit.options.option` fields): they are
checked when a drop loads, and the adapter receives them typed, with every default filled.
Weight-only measures declare ``needs_eval_sample=False``; the rest are skipped with a reason when a
drop ships no eval sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import keras
import numpy as np

from audit.options import NoOptions, OptionSchema
from audit.targets import OutputTarget
from audit.types import FloatArray, Importance

OptionsT = TypeVar("OptionsT")


class MethodNotApplicable(Exception):
    """The method does not apply to this model or sample; the message says why (shown in the report)."""


@dataclass(frozen=True)
class MethodContext(Generic[OptionsT]):
    """What every method may use besides the model and the sample."""

    feature_names: tuple[str, ...]
    target: OutputTarget
    #: This method's options: the drop's ``[methods.<name>]`` table of audit.toml, checked against
    #: the method's declaration and typed, every default filled (`MethodSpec.context`).
    options: OptionsT
    random_state: int = 0


#: model, X (None for weight-only methods), y (None without targets), context -> result
Adapter = Callable[[keras.Model, FloatArray | None, FloatArray | None, MethodContext[OptionsT]], Importance]
ComputeFn = Adapter[Any]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    compute: ComputeFn
    needs_eval_sample: bool
    description: str
    #: The options it takes (its ``[methods.<name>]`` table).
    options: OptionSchema[Any] = field(default_factory=lambda: OptionSchema(NoOptions))

    def context(
        self,
        feature_names: tuple[str, ...],
        target: OutputTarget,
        *,
        random_state: int = 0,
        options: Mapping[str, object] | None = None,
    ) -> MethodContext[Any]:
        """The context to call `compute` with: `options` (a ``[methods.<name>]`` table) checked and
        typed, defaults filled; an `audit.options.OptionError` naming the key otherwise."""
        resolved = self.options.resolve(options or {}, key=f"methods.{self.name}")
        return MethodContext(feature_names, target, resolved, random_state)


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, needs_eval_sample: bool, description: str, options: type[OptionsT]
) -> Callable[[Adapter[OptionsT]], Adapter[OptionsT]]:
    """Decorator: make a method available under `name` (the name stored with its figures).

    `options` declares the options it takes (`audit.options.NoOptions` for none); the declaration
    is checked here, so a default that breaks its own constraint fails at import, not in a drop.
    """
    schema = OptionSchema(options)

    def decorate(compute: Adapter[OptionsT]) -> Adapter[OptionsT]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = MethodSpec(name, compute, needs_eval_sample, description, schema)
        return compute

    return decorate


def registered_methods() -> Mapping[str, MethodSpec]:
    """All methods by name, in registration order (importing `audit.methods` registers them)."""
    return dict(_REGISTRY)


def option_schemas() -> Mapping[str, OptionSchema[Any]]:
    """Each registered method's declared options, by method name, in registration order."""
    return {name: spec.options for name, spec in _REGISTRY.items()}


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
