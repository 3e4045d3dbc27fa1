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

import keras

from audit.types import FloatArray, Importance, Task


class MethodNotApplicable(Exception):
    """The method does not apply to this model or sample; the message says why (shown in the report)."""


@dataclass(frozen=True)
class MethodContext:
    """What every method may use besides the model and the sample."""

    feature_names: tuple[str, ...]
    task: Task
    random_state: int = 0
    options: Mapping[str, object] = field(default_factory=dict)


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
