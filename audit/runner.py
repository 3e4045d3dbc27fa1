"""Run the registered methods on a loaded drop, turning each into a `MethodOutcome`.

One method's failure never stops the others: a method that does not apply is ``skipped`` with its
reason, one that raises is ``failed`` with its error, and both are stored and reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from audit.loading import LoadedDrop
from audit.methods import MethodContext, MethodNotApplicable, MethodSpec, registered_methods
from audit.types import AuditError, MethodOutcome, MethodStatus

NO_SAMPLE_REASON = "no eval sample in the drop (add eval.npz, eval.csv or eval.parquet)"


def select_methods(names: Sequence[str] | None) -> tuple[MethodSpec, ...]:
    """The methods to run: all registered ones, or the named ones in the given order."""
    available = registered_methods()
    if names is None:
        return tuple(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise AuditError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(available)}")
    return tuple(available[name] for name in names)


def method_context(loaded: LoadedDrop, spec: MethodSpec, *, random_state: int = 0) -> MethodContext[Any]:
    """What `spec` is called with on `loaded`: its ``[methods.<name>]`` options of the drop's
    audit.toml, typed, with every default filled (`load_drop` has checked them)."""
    return spec.context(
        loaded.feature_names,
        loaded.target,
        random_state=random_state,
        options=loaded.config.method_options.get(spec.name),
    )


def run_method(loaded: LoadedDrop, spec: MethodSpec, *, random_state: int = 0) -> MethodOutcome:
    """Run one method on `loaded`; never raises for a method's own failure."""
    sample = loaded.sample
    if spec.needs_eval_sample and sample is None:
        return MethodOutcome(spec.name, MethodStatus.SKIPPED, reason=NO_SAMPLE_REASON)
    context = method_context(loaded, spec, random_state=random_state)
    started = time.perf_counter()
    try:
        importance = spec.compute(
            loaded.model,
            None if sample is None else sample.X,
            None if sample is None else sample.y,
            context,
        )
    except MethodNotApplicable as reason:
        return MethodOutcome(spec.name, MethodStatus.SKIPPED, reason=str(reason))
    except Exception as error:  # a broken method must not take the others down
        message = f"{type(error).__name__}: {' '.join(str(error).split())}"[:500]
        return MethodOutcome(
            spec.name, MethodStatus.FAILED, reason=message, seconds=time.perf_counter() - started
        )
    return MethodOutcome(
        spec.name, MethodStatus.OK, importance=importance, seconds=time.perf_counter() - started
    )
