"""Method options: one declaration per method, checked when a drop loads, documented from itself.

A ``[methods.<name>]`` table with a typo, a table of a method that does not exist, and a value of
the wrong type or out of range are one-line errors naming audit.toml, the key and what is allowed,
raised by `load_drop` before the model is read. The adapters receive typed options with every
default filled; the README's options table is the declarations' own rendering.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from audit.loading import load_drop
from audit.methods import option_schemas, registered_methods
from audit.methods.grad_cam import compute_grad_cam
from audit.methods.gradient_shap import compute_gradient_shap
from audit.methods.integrated_gradients import compute_integrated_gradients
from audit.methods.permutation import PermutationOptions, compute_permutation
from audit.methods.perturbation import compute_perturbation
from audit.methods.sensitivity_sweep import compute_sensitivity_sweep
from audit.options import (
    Choices,
    IncreasingPair,
    Interval,
    NoOptions,
    OptionError,
    OptionSchema,
    Text,
    option,
    options_markdown,
)
from audit.registry import discover_drops
from audit.runner import method_context, run_method
from audit.types import AuditError, MethodStatus
from tests.helpers import linear_model, write_drop

README = Path(__file__).resolve().parents[1] / "README.md"
WEEK = dt.date(2014, 11, 3)
NAMES = ("f0", "f1", "f2")
ALL_METHODS = (
    "garson, grad_cam, gradient_shap, gradient_x_input, integrated_gradients, olden, permutation, "
    "perturbation, saliency, sensitivity_sweep, weight_sum"
)


# --- the README's table is the declarations' own rendering ---------------------------------------


def test_readme_options_table_is_generated_from_the_declarations() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- method-options: begin[^\n]*-->\n(.*?)\n<!-- method-options: end -->", text, re.S)
    assert found, "README.md lost its <!-- method-options: begin/end --> markers"
    assert found.group(1) == options_markdown(option_schemas()), (
        "README.md's method options table differs from the declarations: paste the output of "
        "`.venv/bin/python -m audit.methods` between the markers"
    )


def test_readme_table_lists_every_option_with_its_default() -> None:
    """The rendering itself: one row per declared option, its default as written in audit.toml."""
    rows = {
        (cells[0].strip("` "), cells[1].strip("` ")): cells[3].strip()
        for line in options_markdown(option_schemas()).splitlines()
        if line.startswith("| `")
        for cells in [line.strip("|").split(" | ")]
    }
    assert rows == {
        ("grad_cam", "layer"): "the last Conv1D",
        ("gradient_shap", "background_size"): "`100`",
        ("gradient_shap", "n_draws"): "`32`",
        ("gradient_shap", "seed"): "the run's `random_state`",
        ("integrated_gradients", "baseline"): '`"zeros"`',
        ("integrated_gradients", "rule"): '`"gauss_legendre"`',
        ("integrated_gradients", "steps"): "`32`",
        ("integrated_gradients", "tolerance"): "`0.01`",
        ("integrated_gradients", "max_steps"): "`256`",
        ("permutation", "n_repeats"): "`5`",
        ("permutation", "max_samples"): "all rows",
        ("permutation", "scoring"): '`"loss"`',
        ("perturbation", "scale"): "`0.1`",
        ("perturbation", "n_repeats"): "`5`",
        ("sensitivity_sweep", "n_rows"): "`200`",
        ("sensitivity_sweep", "n_quantiles"): "`7`",
        ("sensitivity_sweep", "percentiles"): "`[0.05, 0.95]`",
    }


# The public compute functions keep their own keyword defaults (they are called from Python too):
# the declared defaults must be the same, so a drop without options gets what the function promises.
COMPUTE: dict[str, tuple[Callable[..., object], dict[str, str]]] = {
    "permutation": (compute_permutation, {}),
    "perturbation": (compute_perturbation, {}),
    "integrated_gradients": (compute_integrated_gradients, {}),
    "grad_cam": (compute_grad_cam, {"layer": "layer_name"}),
    "gradient_shap": (compute_gradient_shap, {"seed": "random_state"}),
    "sensitivity_sweep": (compute_sensitivity_sweep, {}),
}


@pytest.mark.parametrize("method", sorted(COMPUTE))
def test_declared_defaults_are_the_compute_functions_defaults(method: str) -> None:
    function, renamed = COMPUTE[method]
    parameters = inspect.signature(function).parameters
    for declared in option_schemas()[method].options:
        default = parameters[renamed.get(declared.name, declared.name)].default
        assert declared.default == default, f"{method}.{declared.name}"


def test_methods_without_options_declare_none() -> None:
    schemas = option_schemas()
    without = {name for name, schema in schemas.items() if not schema.options}
    assert without == {"weight_sum", "garson", "olden", "saliency", "gradient_x_input"}
    assert all(schemas[name].kind is NoOptions for name in without)


# --- checked when the drop loads -------------------------------------------------------------------


def _drop(tmp_path: Path, config: str, *, model_bytes: bytes | None = None) -> Path:
    """A one-drop registry whose audit.toml is `config` (and whose model file is `model_bytes`)."""
    X = np.random.default_rng(0).normal(size=(20, 3))
    folder = write_drop(tmp_path / "registry", WEEK, linear_model([1.0, 2.0, 3.0]), X=X, feature_names=NAMES)
    (folder / "audit.toml").write_text(config, encoding="utf-8")
    if model_bytes is not None:
        (folder / "model.keras").write_bytes(model_bytes)
    return folder


def _load_error(folder: Path) -> str:
    (drop,) = discover_drops(folder.parent).drops
    with pytest.raises(OptionError) as raised:
        load_drop(drop)
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, AuditError)
    return message


BAD_TABLES = [
    pytest.param(
        "[methods.permutation]\nn_repeat = 10\n",
        "unknown option methods.permutation.n_repeat (did you mean n_repeats?); "
        "permutation takes n_repeats, max_samples, scoring",
        id="typo-option",
    ),
    pytest.param(
        "[methods.permutaton]\nn_repeats = 10\n",
        f"unknown method table [methods.permutaton] (did you mean [methods.permutation]?); "
        f"known methods: {ALL_METHODS}",
        id="unknown-method",
    ),
    pytest.param(
        '[methods.permutation]\nn_repeats = "10"\n',
        "methods.permutation.n_repeats must be an integer >= 1, got '10'",
        id="ill-typed",
    ),
    pytest.param(
        "[methods.permutation]\nn_repeats = 0\n",
        "methods.permutation.n_repeats must be an integer >= 1, got 0",
        id="out-of-range",
    ),
    pytest.param(
        "[methods.permutation]\nn_repeats = 5.0\n",
        "methods.permutation.n_repeats must be an integer >= 1, got 5.0",
        id="float-for-an-integer",
    ),
    pytest.param(
        "[methods.weight_sum]\nlayer = 'dense'\n",
        "unknown option methods.weight_sum.layer; weight_sum takes no options",
        id="option-of-a-method-without-options",
    ),
    pytest.param(
        "[methods.permutation]\nmax_samples = 1.5\n",
        "methods.permutation.max_samples must be an integer >= 1 or a number in (0, 1], got 1.5",
        id="neither-count-nor-fraction",
    ),
    pytest.param(
        '[methods.permutation]\nscoring = "rmse"\n',
        'methods.permutation.scoring must be one of "loss", "mse", "mae", "accuracy", "cross_entropy", '
        "got 'rmse'",
        id="not-a-choice",
    ),
    pytest.param(
        "[methods.perturbation]\nscale = 0\n",
        "methods.perturbation.scale must be a number > 0, got 0",
        id="open-bound",
    ),
    pytest.param(
        "[methods.integrated_gradients]\nsteps = true\n",
        "methods.integrated_gradients.steps must be an integer >= 2, got True",
        id="bool-is-not-a-number",
    ),
    pytest.param(
        "[methods.sensitivity_sweep]\npercentiles = [0.9, 0.1]\n",
        "methods.sensitivity_sweep.percentiles must be two numbers [low, high] with 0 <= low < high <= 1, "
        "got [0.9, 0.1]",
        id="pair-out-of-order",
    ),
    pytest.param(
        '[methods.grad_cam]\nlayer = ""\n',
        "methods.grad_cam.layer must be a non-empty string, got ''",
        id="empty-layer-name",
    ),
    pytest.param(
        "[methods.permutation]\nn_repeat = 10\nfoo = 1\n",
        "unknown options methods.permutation.n_repeat, methods.permutation.foo (did you mean n_repeats?); "
        "permutation takes n_repeats, max_samples, scoring",
        id="two-unknown-options",
    ),
]


@pytest.mark.parametrize(("config", "message"), BAD_TABLES)
def test_a_bad_method_table_is_a_one_line_error_naming_file_key_and_what_is_allowed(
    tmp_path: Path, config: str, message: str
) -> None:
    folder = _drop(tmp_path, config)
    assert _load_error(folder) == f"{folder / 'audit.toml'}: {message}"


def test_options_are_checked_before_the_model_is_read(tmp_path: Path) -> None:
    folder = _drop(tmp_path, "[methods.permutation]\nn_repeat = 10\n", model_bytes=b"")
    assert "methods.permutation.n_repeat" in _load_error(folder)
    (folder / "audit.toml").write_text("[methods.permutation]\nn_repeats = 10\n", encoding="utf-8")
    (drop,) = discover_drops(folder.parent).drops
    with pytest.raises(AuditError, match="model file is empty"):  # the options passed: the model is next
        load_drop(drop)


def test_good_options_reach_the_method_typed_with_defaults_filled(tmp_path: Path) -> None:
    folder = _drop(tmp_path, "[methods.perturbation]\nscale = 1\n\n[methods.permutation]\nn_repeats = 2\n")
    (drop,) = discover_drops(folder.parent).drops
    loaded = load_drop(drop)
    methods = registered_methods()
    perturbation = method_context(loaded, methods["perturbation"]).options
    assert (perturbation.scale, perturbation.n_repeats) == (1.0, 5)
    assert isinstance(perturbation.scale, float)
    assert method_context(loaded, methods["permutation"]).options == PermutationOptions(n_repeats=2)
    outcome = run_method(loaded, methods["perturbation"], random_state=1)
    assert outcome.status is MethodStatus.OK and outcome.importance is not None
    assert outcome.importance.parameters["scale"] == 1.0 and outcome.importance.parameters["n_repeats"] == 5


def test_resolving_is_idempotent() -> None:
    """The runner resolves the checked table again: typed values must read back as themselves."""
    for name, schema in option_schemas().items():
        first = schema.resolve({}, key=f"methods.{name}")
        assert schema.resolve(dataclasses.asdict(first), key=f"methods.{name}") == first
    sweep = option_schemas()["sensitivity_sweep"]
    pair = sweep.resolve({"percentiles": [0, 1]}, key="methods.sensitivity_sweep")
    assert pair.percentiles == (0.0, 1.0)
    assert sweep.resolve(dataclasses.asdict(pair), key="methods.sensitivity_sweep") == pair


# --- the constraints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "accepted", "refused", "described"),
    [
        (Interval(int, low=1), [1, 7], [0, -1, 1.0, True, "1"], "an integer >= 1"),
        (
            Interval(float, low=0.0, closed="neither"),
            [1, 0.5, 1e9],
            [0, -0.1, float("inf"), False],
            "a number > 0",
        ),
        (
            Interval(float, 0.0, 1.0, closed="right"),
            [0.5, 1.0, 1],
            [0.0, 1.5, float("nan")],
            "a number in (0, 1]",
        ),
        (Interval(float, high=2.0), [2.0, -5], [2.5], "a number <= 2"),
        (Interval(float, high=2.0, closed="neither"), [1.9], [2.0], "a number < 2"),
        (Interval(int), [0, -3], [0.5], "an integer"),
        (Choices(("a", "b")), ["a", "b"], ["c", "", 1, None], 'one of "a", "b"'),
        (Text(), ["dense_1"], ["", 3, ["x"]], "a non-empty string"),
        (
            IncreasingPair(0.0, 1.0),
            [[0, 1], (0.05, 0.95)],
            [[0.5, 0.5], [0.9, 0.1], [0, 2], [0, 1, 1], [True, 1], "01", 0.5],
            "two numbers [low, high] with 0 <= low < high <= 1",
        ),
    ],
)
def test_constraints_accept_refuse_and_describe(
    constraint: Interval | Choices | Text | IncreasingPair,
    accepted: list[object],
    refused: list[object],
    described: str,
) -> None:
    assert [constraint.accepts(value) for value in accepted] == [True] * len(accepted)
    assert [constraint.accepts(value) for value in refused] == [False] * len(refused)
    assert constraint.describe() == described


def test_a_float_option_reads_an_integer_as_a_float() -> None:
    assert Interval(float, low=0.0).convert(3) == 3.0 and isinstance(Interval(float).convert(3), float)
    assert Interval(int).convert(3) == 3 and isinstance(Interval(int).convert(3), int)


# --- declarations are checked when a method registers -------------------------------------------------


def test_a_default_that_breaks_its_own_constraint_is_refused_at_declaration() -> None:
    @dataclasses.dataclass(frozen=True)
    class Broken:
        n_repeats: int = option(0, Interval(int, low=1), doc="repeats")

    with pytest.raises(
        OptionError, match=r"Broken\.n_repeats \(its default\) must be an integer >= 1, got 0"
    ):
        OptionSchema(Broken)


def test_undeclared_fields_and_unexplained_none_defaults_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Plain:
        n_repeats: int = 5

    @dataclasses.dataclass(frozen=True)
    class Unexplained:
        layer: str | None = option(None, Text(), doc="a layer")

    @dataclasses.dataclass
    class Mutable:
        n_repeats: int = option(5, Interval(int, low=1), doc="repeats")

    with pytest.raises(TypeError, match=r"Plain\.n_repeats: declare it with audit\.options\.option"):
        OptionSchema(Plain)
    with pytest.raises(TypeError, match="a default of None needs default_doc"):
        OptionSchema(Unexplained)
    with pytest.raises(TypeError, match="frozen dataclass"):
        OptionSchema(Mutable)
