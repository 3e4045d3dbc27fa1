"""The options of the importance methods: declared once per method, checked when a drop loads.

In the spirit of scikit-learn's ``validate_params`` (``sklearn/utils/_param_validation.py``): each
option lists the values it takes as constraints (`Interval`, `Choices`, ...), any one of which must
hold. A method declares its options as a frozen dataclass whose fields are made with `option`
(name, type, default, allowed values, one-line doc), and registers it with
``register_method(..., options=...)`` (`audit.methods.base`). That one declaration is used three ways:

- `check_method_tables` checks a drop's ``[methods.<name>]`` tables of audit.toml when the drop
  loads (`audit.loading.load_drop`): an unknown method, an unknown option, a value of the wrong
  type or out of range is one `AuditError` line naming the file, the key and what is allowed;
- `OptionSchema.resolve` turns a table into the method's options dataclass, typed, with every
  default filled: what the method's adapter receives, and what the method cache key hashes;
- `options_markdown` writes the README's table of options (``python -m audit.methods``).

Unlike scikit-learn's checks these read TOML values: integers and floats are told apart
(``n_repeats = 5.0`` is refused, ``scale = 1`` is read as 1.0), booleans are never numbers, and
there is no null (an option left out takes its default; a default of None means "not set").

This module imports no Keras or TensorFlow: it is cheap to import on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeGuard, TypeVar

from audit.types import AuditError

T = TypeVar("T")
OptionsT = TypeVar("OptionsT")

_DECLARED = "audit.options"


class OptionError(AuditError):
    """A ``[methods.<name>]`` key or value a method does not take; the message names the key."""


class Constraint(Protocol):
    """Values an option takes; `describe` completes "must be ..."."""

    def accepts(self, value: object) -> bool: ...

    def convert(self, value: object) -> object:
        """The accepted `value` as the option's type (e.g. an int as a float)."""
        ...

    def describe(self) -> str: ...


def _number(value: object) -> TypeGuard[int | float]:
    """An int or a finite float, not a bool (TOML has ``inf`` and ``nan``, no option wants them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not isinstance(value, float) or math.isfinite(value)


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind within bounds, like scikit-learn's ``Interval(Integral, 1, None, closed="left")``.

    `kind` int takes integers only; float takes integers too (``scale = 1`` is 1.0). A bound of None
    is open-ended; `closed` says which bounds belong to the interval.
    """

    kind: type[int] | type[float]
    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: object) -> bool:
        if not _number(value) or (self.kind is int and not isinstance(value, int)):
            return False
        number = float(value)
        low_ok = self.low is None or (
            number >= self.low if self.closed in ("both", "left") else number > self.low
        )
        high_ok = self.high is None or (
            number <= self.high if self.closed in ("both", "right") else number < self.high
        )
        return low_ok and high_ok

    def convert(self, value: object) -> object:
        return float(value) if self.kind is float and _number(value) else value

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        low_in = self.closed in ("both", "left")
        high_in = self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if low_in else '('}{self.low:g}, {self.high:g}{']' if high_in else ')'}"
        if self.low is not None:
            return f"{what} {'>=' if low_in else '>'} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<=' if high_in else '<'} {self.high:g}"
        return what


@dataclass(frozen=True)
class Choices:
    """One of a few strings, like scikit-learn's ``StrOptions``."""

    values: tuple[str, ...]

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values

    def convert(self, value: object) -> object:
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(f'"{value}"' for value in self.values)


@dataclass(frozen=True)
class Text:
    """A non-empty string, e.g. a layer name (checked against the model when the method runs)."""

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and bool(value)

    def convert(self, value: object) -> object:
        return value

    def describe(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class IncreasingPair:
    """Two numbers ``[low, high]`` with ``lower <= low < high <= upper``, read as a tuple of floats."""

    lower: float
    upper: float

    def accepts(self, value: object) -> bool:
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(map(_number, value)):
            return False
        low, high = value
        return bool(self.lower <= low < high <= self.upper)

    def convert(self, value: object) -> object:
        if not isinstance(value, list | tuple):  # pragma: no cover - only called on accepted values
            raise TypeError(f"not a pair: {value!r}")
        return (float(value[0]), float(value[1]))

    def describe(self) -> str:
        return f"two numbers [low, high] with {self.lower:g} <= low < high <= {self.upper:g}"


@dataclass(frozen=True)
class _Declaration:
    allowed: tuple[Constraint, ...]
    doc: str
    default_doc: str | None


def option(default: T, *allowed: Constraint, doc: str, default_doc: str | None = None) -> T:
    """A field of a method's options dataclass: its default, the values it takes (any one of the
    constraints), and a one-line doc. A default of None means "not set" and needs `default_doc`,
    which says what happens then (e.g. "all rows")."""
    declaration = _Declaration(tuple(allowed), doc, default_doc)
    return dataclasses.field(default=default, metadata={_DECLARED: declaration})


@dataclass(frozen=True)
class Option:
    """One declared option, as read from its field."""

    name: str
    default: object
    allowed: tuple[Constraint, ...]
    doc: str
    default_doc: str | None = None

    def describe(self) -> str:
        """What the option takes, e.g. "an integer >= 1 or a number in (0, 1]"."""
        return " or ".join(constraint.describe() for constraint in self.allowed)

    def check(self, value: object, key: str) -> object:
        """`value` converted by the first constraint that accepts it; `OptionError` naming `key` else.
        None is "not set" for an option whose default is None (TOML cannot write it)."""
        if value is None and self.default is None:
            return None
        for constraint in self.allowed:
            if constraint.accepts(value):
                return constraint.convert(value)
        raise OptionError(f"{key} must be {self.describe()}, got {value!r}")

    def shown_default(self) -> str:
        """The default as the docs show it: a TOML value, or `default_doc` for "not set"."""
        if self.default is None:
            return self.default_doc or "not set"
        if isinstance(self.default, str):
            return f'`"{self.default}"`'
        if isinstance(self.default, tuple):
            return "`[" + ", ".join(f"{item:g}" for item in self.default) + "]`"
        return f"`{self.default}`"


class OptionSchema(Generic[OptionsT]):
    """The declared options of one method: its options dataclass, checked when it is registered."""

    def __init__(self, kind: type[OptionsT]) -> None:
        self.kind = kind
        self.options = _declared_options(kind)

    def __repr__(self) -> str:
        return f"OptionSchema({self.kind.__name__})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(declared.name for declared in self.options)

    def resolve(self, given: Mapping[str, object], *, key: str) -> OptionsT:
        """The options `given` (a ``[methods.<name>]`` table) checked and typed, defaults filled.

        `key` is the table's key, e.g. ``methods.permutation``; an `OptionError` names
        ``<key>.<option>`` and, for an unknown option, the known ones.
        """
        unknown = [name for name in given if name not in self.names]
        if unknown:
            raise OptionError(self._unknown(unknown, key))
        values = {
            declared.name: declared.check(given[declared.name], f"{key}.{declared.name}")
            for declared in self.options
            if declared.name in given
        }
        return self.kind(**values)

    def _unknown(self, unknown: list[str], key: str) -> str:
        listed = f"option{'s' if len(unknown) > 1 else ''} " + ", ".join(f"{key}.{name}" for name in unknown)
        method = key.rsplit(".", 1)[-1]
        if not self.options:
            return f"unknown {listed}; {method} takes no options"
        guess = difflib.get_close_matches(unknown[0], self.names, n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        return f"unknown {listed}{hint}; {method} takes {', '.join(self.names)}"


def _declared_options(kind: type[object]) -> tuple[Option, ...]:
    """The fields of an options dataclass, each checked to be declared with `option` and to have a
    default it accepts (a declaration error is a bug of the method, raised when it registers)."""
    if not dataclasses.is_dataclass(kind) or not kind.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{kind.__name__}: method options are a frozen dataclass")
    declared = []
    for field in dataclasses.fields(kind):
        declaration = field.metadata.get(_DECLARED)
        if not isinstance(declaration, _Declaration) or not declaration.allowed:
            raise TypeError(f"{kind.__name__}.{field.name}: declare it with audit.options.option(...)")
        entry = Option(
            field.name, field.default, declaration.allowed, declaration.doc, declaration.default_doc
        )
        if entry.default is None and not entry.default_doc:
            raise TypeError(f"{kind.__name__}.{field.name}: a default of None needs default_doc")
        if entry.default is not None:
            entry.check(entry.default, f"{kind.__name__}.{field.name} (its default)")
        declared.append(entry)
    return tuple(declared)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none: any key in its table is an error."""


def check_method_tables(
    path: Path | None, tables: Mapping[str, Mapping[str, object]], schemas: Mapping[str, OptionSchema[Any]]
) -> None:
    """Check a drop's ``[methods.<name>]`` tables against the methods' schemas.

    Raises `AuditError` ``<path>: <what is wrong>`` for a table of an unknown method (naming the
    known ones), an unknown option (naming the method's options), or a value a method does not
    take (naming what it takes).
    """
    for name in sorted(tables):
        if name not in schemas:
            guess = difflib.get_close_matches(name, list(schemas), n=1)
            hint = f" (did you mean [methods.{guess[0]}]?)" if guess else ""
            raise OptionError(
                f"{path}: unknown method table [methods.{name}]{hint}; "
                f"known methods: {', '.join(sorted(schemas))}"
            )
        try:
            schemas[name].resolve(tables[name], key=f"methods.{name}")
        except OptionError as error:
            raise OptionError(f"{path}: {error}") from None


def options_markdown(schemas: Mapping[str, OptionSchema[Any]]) -> str:
    """The README's table of every method's options, in `schemas` order, and the methods without."""
    lines = [
        "| method | option | values | default | what it sets |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, schema in schemas.items():
        for declared in schema.options:
            values = declared.describe()
            lines.append(
                f"| `{method}` | `{declared.name}` | {values} | {declared.shown_default()} | {declared.doc} |"
            )
    without = [f"`{method}`" for method, schema in schemas.items() if not schema.options]
    if without:
        listed = ", ".join(without[:-1]) + f" and {without[-1]}" if len(without) > 1 else without[0]
        lines += ["", f"{listed} take no options."]
    return "\n".join(lines)
