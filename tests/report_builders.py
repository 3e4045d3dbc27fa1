"""Synthetic report inputs built from audit.types (no Keras, no database), shared by the report and
e-mail tests: `sequence_input` is a sequence model's weekly audit with many features and methods, time
profiles, a drift call, a frozen-set scoring, reseeded copies, history and skipped weeks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audit.compare import compare_audits
from audit.drift import assess_drift
from audit.input_drift import assess_input_drift, summarize_values
from audit.performance import assess_performance
from audit.types import (
    AuditSummary,
    Importance,
    ImportanceHistory,
    MethodOutcome,
    MethodStatus,
    ModelEvaluation,
    ModelFacts,
    ModelImportances,
    ReportInput,
    Task,
)
from audit.verdict import explain

WEEK = dt.date(2026, 3, 23)
PREVIOUS_WEEK = dt.date(2026, 3, 2)
MISSING = (dt.date(2026, 3, 9), dt.date(2026, 3, 16))
#: Methods of a sequence model; grad_cam is profile-only (one column "*").
PROFILE_METHODS = ("integrated_gradients", "saliency", "gradient_x_input")
METHODS = ("weight_sum", "permutation", "perturbation", *PROFILE_METHODS, "sensitivity_sweep", "grad_cam")
#: The feature that collapses this week in every method (the drift call must name it).
COLLAPSED = 3
#: The feature whose eval values move by 1.5 standard deviations this week (input drift).
SHIFTED = 6


def names_with(n_features: int, specials: Sequence[str] = ()) -> tuple[str, ...]:
    plain = [f"sensor_{i:02d}_lag_window_{'abcdefgh'[i % 8]}" for i in range(n_features)]
    plain[: len(specials)] = specials
    return tuple(plain)


def _profile(values: np.ndarray, n_steps: int, rng: np.random.Generator, *, shifted: bool) -> np.ndarray:
    """(n_steps, n_features): each feature's value spread over the steps, peaking near the latest;
    `shifted`: feature COLLAPSED + 1 relies on older steps (its lags moved)."""
    steps = np.arange(n_steps)[:, None]
    peaks = n_steps - 1 - rng.integers(0, n_steps // 3, size=values.shape[0])
    if shifted:
        peaks[COLLAPSED + 1] -= n_steps // 3
    weights = np.exp(-0.5 * ((steps - peaks) / 3.0) ** 2)
    weights /= weights.sum(axis=0, keepdims=True)
    return weights * values[None, :] * n_steps


def _importances(
    names: tuple[str, ...], n_steps: int, seed: int, *, collapse: bool, methods: Sequence[str] = METHODS
) -> list[Importance]:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(1234).gamma(1.5, 1.0, size=len(names))
    base[COLLAPSED] = base[COLLAPSED + 1] = 1.5 * base.max()  # features the model relies on
    specials = [i for i, name in enumerate(names) if not name.startswith("sensor_")]
    base[specials] = 1.2 * base.max()  # odd names among the top features: in tables and alt text
    result = []
    for m, method in enumerate(methods):
        values = base * np.exp(rng.normal(0.0, 0.08, size=len(names))) * (1 + m)
        if collapse:
            values[COLLAPSED] *= 0.03
        std = 0.05 * values
        if method == "grad_cam":
            cam = np.exp(-0.5 * ((np.arange(n_steps) - n_steps + 3) / 4.0) ** 2)[:, None]
            result.append(
                Importance(
                    method, (), np.zeros(0), profile=cam * (1.0 + 0.2 * collapse), profile_features=("*",)
                )
            )
            continue
        profile = None
        if method in PROFILE_METHODS:
            profile = _profile(values, n_steps, np.random.default_rng(7), shifted=collapse)
            if method == "saliency":
                profile = profile * np.where(np.arange(len(names)) % 5 == 0, -1.0, 1.0)
        parameters: dict[str, float | int | str] = {"seed": seed}
        if method == "integrated_gradients":
            parameters.update(
                steps=64,
                steps_requested=32,
                completeness_median_rel_delta=0.0042,
                completeness_max_rel_delta=0.031,
            )
        result.append(
            Importance(
                method,
                names,
                values,
                std=std,
                profile=profile,
                parameters=parameters,
                signed=method == "saliency",
            )
        )
    return result


def _summary(
    week: dt.date, importances: Sequence[Importance], n_steps: int, *, run_id: int, name: str = "pm25-seq"
) -> AuditSummary:
    n_features = len(next(i.feature_names for i in importances if i.has_values))
    model = ModelFacts(
        path=Path(f"/registry/{week.isoformat()}/model.keras"),
        content_hash="sha256:" + "9f3c" * 16,
        input_shape=(None, n_steps, n_features),
        output_shape=(None, 1),
        n_parameters=48_321,
        task=Task.REGRESSION,
    )
    outcomes = tuple(MethodOutcome(i.method, MethodStatus.OK, importance=i, seconds=3.5) for i in importances)
    outcomes += (
        MethodOutcome("garson", MethodStatus.SKIPPED, reason="not a plain Dense stack (first layer GRU)"),
    )
    return AuditSummary(
        model_name=name,
        week=week,
        run_id=run_id,
        model=model,
        n_eval_samples=2_000,
        eval_source="eval.npz",
        outcomes=outcomes,
    )


def sequence_input(
    n_features: int = 90,
    n_steps: int = 24,
    *,
    specials: Sequence[str] = (),
    methods: Sequence[str] = METHODS,
    model_name: str = "pm25-seq",
) -> ReportInput:
    """A realistic report input: one feature collapses (the model changed), history, copies, gaps."""
    names = names_with(n_features, specials)
    previous_importances = _importances(names, n_steps, seed=1, collapse=False, methods=methods)
    current_importances = _importances(names, n_steps, seed=2, collapse=True, methods=methods)
    previous = _summary(PREVIOUS_WEEK, previous_importances, n_steps, run_id=40, name=model_name)
    # The previous model on this week's data: the previous figures, slightly moved (the data moved
    # little), so the collapse is the model's doing.
    frozen = ModelImportances(
        PREVIOUS_WEEK.isoformat(),
        tuple(_importances(names, n_steps, seed=3, collapse=False, methods=methods)),
    )
    copies = tuple(
        ModelImportances(
            f"model_seed{k}.keras", tuple(_importances(names, n_steps, seed=10 + k, collapse=True))
        )
        for k in (1, 2)
    )
    rng = np.random.default_rng(17)
    previous = dataclasses.replace(
        previous,
        evaluation=ModelEvaluation("mse", 0.0118, "r2", 0.88, 2_000, loss_se=0.0004),
        input_summaries=tuple(summarize_values(name, rng.normal(size=500)) for name in names),
    )
    # this week's inputs: feature SHIFTED moved by 1.5 standard deviations
    inputs = [rng.normal(1.5 if j == SHIFTED else 0.0, 1.0, size=500) for j in range(len(names))]
    current = dataclasses.replace(
        _summary(WEEK, current_importances, n_steps, run_id=41, name=model_name),
        frozen=frozen,
        copies=copies,
        evaluation=ModelEvaluation("mse", 0.0123, "r2", 0.871, 2_000, loss_se=0.0004),
        frozen_evaluation=ModelEvaluation("mse", 0.0121, "r2", 0.874, 2_000, loss_se=0.0004),
        input_summaries=tuple(
            summarize_values(name, values) for name, values in zip(names, inputs, strict=True)
        ),
    )
    input_drift = assess_input_drift(current, previous)
    performance = assess_performance(current, previous)
    return ReportInput(
        current=current,
        previous=previous,
        comparisons=compare_audits(current, previous),
        assessment=explain(assess_drift(current, previous), input_drift, performance),
        history=_history(current_importances, n_weeks=14),
        missing_weeks=MISSING,
        input_drift=input_drift,
        performance=performance,
    )


def _history(importances: Sequence[Importance], *, n_weeks: int) -> tuple[ImportanceHistory, ...]:
    """History of the 12 most important features of each method, with a gap of two weeks."""
    weeks = tuple(WEEK - dt.timedelta(weeks=n_weeks - 1 - w) for w in range(n_weeks))
    rng = np.random.default_rng(5)
    entries = []
    for importance in importances:
        if not importance.has_values:
            continue
        top = np.argsort(importance.ranks)[:12]
        values = importance.values[top][None, :] * np.exp(rng.normal(0, 0.1, size=(n_weeks, len(top))))
        values[n_weeks - 4 : n_weeks - 2, :] = np.nan
        entries.append(
            ImportanceHistory(
                importance.method, weeks, tuple(importance.feature_names[i] for i in top), values
            )
        )
    return tuple(entries)


# Plain (tabular) models ------------------------------------------------------------------------


def feature_names(n: int) -> tuple[str, ...]:
    return tuple(f"feat_{i:03d}" for i in range(n))


def make_importance(method: str, names: Sequence[str], seed: int, *, top: str | None = None) -> Importance:
    """Seeded importances; `top`, if given, is made the most important feature."""
    rng = np.random.default_rng(seed)
    values = rng.gamma(2.0, 1.0, size=len(names))
    if top is not None:
        values[names.index(top)] = values.max() + 10.0
    std = 0.1 * values
    return Importance(method=method, feature_names=tuple(names), values=values, std=std)


def make_summary(
    week: dt.date,
    importances: Sequence[Importance],
    *,
    not_run: Sequence[MethodOutcome] = (),
    run_id: int = 7,
) -> AuditSummary:
    n_features = len(importances[0].feature_names) if importances else 3
    model = ModelFacts(
        path=Path(f"/registry/{week.isoformat()}/model.keras"),
        content_hash="sha256:" + "ab12" * 16,
        input_shape=(None, n_features),
        output_shape=(None, 2),
        n_parameters=542_002,
        task=Task.CLASSIFICATION,
    )
    outcomes = tuple(
        MethodOutcome(imp.method, MethodStatus.OK, importance=imp, seconds=12.5) for imp in importances
    ) + tuple(not_run)
    return AuditSummary(
        model_name="churn-weekly",
        week=week,
        run_id=run_id,
        model=model,
        n_eval_samples=2_000,
        eval_source="eval.npz",
        outcomes=outcomes,
    )
