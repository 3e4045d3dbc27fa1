"""The drift power study (issue 16): scenarios, the rules that judge them, the oracle, the targets.

Scenarios per group (`power.PowerGroup`):

- **reseed-only**: every model of the group's clean pool (history + clean drops) in turn is the
  test drop, judged after 6 other pool drops (its own drop, whose copies share its eval sample, is
  left out; the 6 are rotated so that "previous" varies). Single models: 8 drops x 3 models; drops
  of 3 models: 8.
- **planted**: every model of a cell (2 drops x 3 models) judged alone, and every cell drop judged
  with its copies, after 6 pool drops (rotated the same way).

Rules: this tool's `assess_drift` (an alert, and the feature it names first), SageMaker Clarify's
nDCG < 0.90 in any verdict method (single models), an alternative combination of the methods'
z-scores allowing for their correlation, and an **oracle** that knows each feature's null
distribution (from the group's held-out null reseeds, never judged) and judges one model alone:
z = (its centred log importance - the null mean) / the null sd per feature and method; it alarms
when the largest |z| over the judged features and the verdict methods exceeds its 95th percentile
over the group's clean pool models (5% false alarms by construction) and names that feature. The
oracle *told the variable* looks at the planted variable's columns only (its own 95th percentile):
what could be seen at all by someone who knew where to look.

Each cell's **true effect**: per verdict method and column, the mean of the centred log importance
over the cell's 6 planted models minus that over the 6 clean-drop models, in units of the noise of
a single-model week-to-week change (the pool models' sd x sqrt 2): the |z| a single-model
comparison would see on average. The cell's effect is the largest over the variable's columns and
the verdict methods ("what the best method sees"); its **true plain change** per method and column
is mean planted value / mean clean value - 1 (what the report's detectable change is stated in).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.compare import compare_importances
from audit.drift import assess_drift, centred_log_ratios, feature_assessments
from audit.types import DriftAssessment, DriftConfig, DropVerdict, FeatureVerdict, Importance
from bench.drift.drops import METHODS, AuditedDrop, summary
from bench.drift.power import Cell, PowerGroup
from bench.drift.scenarios import FIRST_WEEK, NDCG_THRESHOLD

#: Earlier drops of every scenario (the history is 5 week-to-week changes, above `min_history`).
N_EARLIER = 6
#: The oracle's false-alarm rate.
ORACLE_ALPHA = 0.05


@dataclass(frozen=True)
class PowerScenario:
    group: str
    test: AuditedDrop
    earlier: tuple[AuditedDrop, ...]
    models: int
    cell: Cell | None = None

    @property
    def planted(self) -> bool:
        return self.cell is not None

    @property
    def name(self) -> str:
        return f"{self.group}/{self.test.spec.name}@{self.earlier[-1].spec.name}/{self.models}"


def _strip(drop: AuditedDrop) -> AuditedDrop:
    return dataclasses.replace(drop, copies=())


def _rotated(drops: Sequence[AuditedDrop], turn: int) -> tuple[AuditedDrop, ...]:
    start = turn % len(drops)
    return tuple(list(drops[start:]) + list(drops[:start]))[-N_EARLIER:]


def scenarios(group: PowerGroup) -> list[PowerScenario]:
    """Every reseed-only and planted scenario of a group, on single models and on drops of 3."""
    found: list[PowerScenario] = []
    pool = group.pool
    name = group.group.name
    for i, drop in enumerate(pool):
        others = [d for j, d in enumerate(pool) if j != i]
        earlier = _rotated(others, i)
        for model in (drop, *drop.copies):
            found.append(PowerScenario(name, _strip(model), tuple(_strip(d) for d in earlier), 1))
        found.append(PowerScenario(name, drop, earlier, 1 + len(drop.copies)))
    for c, cell in enumerate(group.cells):
        for p, drop in enumerate(cell.drops):
            for j, model in enumerate((drop, *drop.copies)):
                earlier = _rotated(pool, c + 3 * p + j)
                found.append(PowerScenario(name, _strip(model), tuple(_strip(d) for d in earlier), 1, cell))
            found.append(PowerScenario(name, drop, _rotated(pool, c + 3 * p), 1 + len(drop.copies), cell))
    return found


def summaries(scenario: PowerScenario, n_earlier: int | None = None) -> tuple[Any, Any, list[Any]]:
    """(current, previous, history) AuditSummaries of a scenario (its last `n_earlier` earlier drops)."""
    earlier = scenario.earlier if n_earlier is None else scenario.earlier[-n_earlier:]
    with_copies = scenario.models > 1
    weeks = [FIRST_WEEK + dt.timedelta(weeks=k) for k in range(len(earlier) + 1)]
    past = [
        summary(drop, week=week, run_id=k + 1, with_copies=with_copies)
        for k, (drop, week) in enumerate(zip(earlier, weeks, strict=False))
    ]
    current = summary(scenario.test, week=weeks[-1], run_id=len(earlier) + 1, with_copies=with_copies)
    return current, past[-1], past[:-1]


# --------------------------------------------------------------------------- the rule


def planted_columns(scenario: PowerScenario) -> tuple[str, ...]:
    return () if scenario.cell is None else scenario.cell.plant.columns


def judge(scenario: PowerScenario, config: DriftConfig, *, n_earlier: int | None = None) -> dict[str, Any]:
    """This tool's verdict on a scenario, what it stated it could detect, and the raw drifts for
    re-judging (other verdict methods, agreement counts, combinations)."""
    current, previous, history = summaries(scenario, n_earlier)
    assessment = assess_drift(current, previous, history, config)
    record = _base_record(scenario, n_earlier)
    record.update(_verdict_fields(assessment, planted_columns(scenario)))
    record["reason"] = assessment.reason
    record["advice"] = None if assessment.advice is None else assessment.advice.text
    record["detectable"] = {
        f.feature: None if f.detectable is None else [f.detectable.rise, f.detectable.fall]
        for f in assessment.features
    }
    if scenario.models == 1 and n_earlier is None:
        ndcgs = {
            method: compare_importances(current.importance(method), previous.importance(method)).ndcg  # type: ignore[arg-type]
            for method in METHODS
            if current.importance(method) is not None and previous.importance(method) is not None
        }
        record["ndcg"] = ndcgs
        record["ndcg_alert"] = any(v is not None and v < NDCG_THRESHOLD for v in ndcgs.values())
    return record


def _base_record(scenario: PowerScenario, n_earlier: int | None) -> dict[str, Any]:
    cell = scenario.cell
    return {
        "scenario": scenario.name,
        "group": scenario.group,
        "models": scenario.models,
        "n_earlier": N_EARLIER if n_earlier is None else n_earlier,
        "planted": cell is not None,
        "kind": None if cell is None else cell.kind,
        "strength": None if cell is None else cell.strength,
        "fraction": None if cell is None else cell.fraction,
        "variable": None if cell is None else cell.plant.feature,
        "columns": list(planted_columns(scenario)),
    }


def _verdict_fields(assessment: DriftAssessment, columns: Sequence[str]) -> dict[str, Any]:
    first = assessment.features[0] if assessment.features else None
    alert = assessment.verdict is DropVerdict.ALERT
    return {
        "verdict": str(assessment.verdict),
        "alert": alert,
        "warn": assessment.verdict is DropVerdict.WARN,
        "first_feature": None if first is None else first.feature,
        "right_feature": bool(columns) and alert and first is not None and first.feature in columns,
    }


def rejudge(
    assessment: DriftAssessment, methods: Sequence[str], config: DriftConfig, columns: Sequence[str]
) -> dict[str, Any]:
    """The rule's verdict with other verdict methods and agreement count on the same drifts."""
    judged = [m for m in methods if m in assessment.verdict_methods]
    features = feature_assessments(assessment.drifts, judged, config)
    changed = [f for f in features if f.verdict is FeatureVerdict.CHANGED]
    first = features[0] if features else None
    alert = bool(changed)
    return {
        "alert": alert,
        "right_feature": bool(columns) and alert and first is not None and first.feature in columns,
    }


# --------------------------------------------------------------------------- z-score combination


def method_correlation(history: Sequence[Any], methods: Sequence[str], config: DriftConfig) -> np.ndarray:
    """Correlation between the methods' past centred changes (pooled over features and weeks)."""
    rows = []
    for older, newer in itertools.pairwise(history):
        per_method = []
        for method in methods:
            before, now = older.importance(method), newer.importance(method)
            if before is None or now is None:
                break
            changes = centred_log_ratios(now, before, epsilon_fraction=config.epsilon_fraction)
            per_method.append([changes.get(name, 0.0) for name in sorted(changes)])
        else:
            rows.append(np.array(per_method))
    if not rows:
        return np.eye(len(methods))
    stacked = np.concatenate(rows, axis=1)
    correlation: np.ndarray = np.nan_to_num(np.corrcoef(stacked), nan=0.0)
    np.fill_diagonal(correlation, 1.0)
    return correlation


def combined_z(
    assessment: DriftAssessment, correlation: np.ndarray, methods: Sequence[str], min_share: float = 0.01
) -> dict[str, dict[str, float]]:
    """Per judged feature: Stouffer's sum of the methods' z (change / band scale), divided by its
    sd under the methods' correlation, and the Mahalanobis statistic z' R^-1 z (chi-square with m
    degrees of freedom for normal noise)."""
    by_feature: dict[str, dict[str, float]] = {}
    for drift in assessment.drifts:
        judged = max(drift.share or 0.0, drift.previous_share or 0.0) >= min_share
        if drift.method in methods and drift.z is not None and judged:
            by_feature.setdefault(drift.feature, {})[drift.method] = float(drift.z)
    index = {m: i for i, m in enumerate(methods)}
    result = {}
    for feature, zs in by_feature.items():
        present = [m for m in methods if m in zs]
        if not present:
            continue
        rows = [index[m] for m in present]
        r = correlation[np.ix_(rows, rows)]
        z = np.array([zs[m] for m in present])
        ones = np.ones(len(present))
        stouffer = float(z.sum() / math.sqrt(max(float(ones @ r @ ones), 1e-9)))
        regularised = r + 0.05 * np.eye(len(present))
        mahalanobis = float(z @ np.linalg.solve(regularised, z))
        result[feature] = {"stouffer": stouffer, "mahalanobis": mahalanobis, "m": float(len(present))}
    return result


# --------------------------------------------------------------------------- oracle and effects


def centred_logs(importance: Importance, epsilon_fraction: float = 0.01) -> dict[str, float]:
    """log(v + eps) minus its median over features (the rule's scale-free axis for one model)."""
    values = np.clip(np.nan_to_num(importance.values), 0.0, None)
    eps = epsilon_fraction * float(values.sum()) or 1e-12
    logs = np.log(values + eps)
    return dict(zip(importance.feature_names, (logs - np.median(logs)).tolist(), strict=True))


def _models(drops: Iterable[AuditedDrop]) -> list[AuditedDrop]:
    return [model for drop in drops for model in (drop, *drop.copies)]


def _logs_table(models: Sequence[AuditedDrop], methods: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    table: dict[tuple[str, str], list[float]] = {}
    for model in models:
        for method in methods:
            importance = model.importance(method)
            if importance is None:
                continue
            for feature, value in centred_logs(importance).items():
                table.setdefault((method, feature), []).append(value)
    return {key: np.array(values) for key, values in table.items()}


def _values_table(models: Sequence[AuditedDrop], methods: Sequence[str]) -> dict[tuple[str, str], float]:
    sums: dict[tuple[str, str], list[float]] = {}
    for model in models:
        for method in methods:
            importance = model.importance(method)
            if importance is None:
                continue
            for feature, value in zip(
                importance.feature_names, np.clip(importance.values, 0.0, None), strict=True
            ):
                sums.setdefault((method, feature), []).append(float(value))
    return {key: float(np.mean(values)) for key, values in sums.items()}


@dataclass(frozen=True)
class Oracle:
    """Knows each feature's null distribution in one group (see the module docstring)."""

    mean: Mapping[tuple[str, str], float]
    sd: Mapping[tuple[str, str], float]
    judged: frozenset[str]
    threshold: float
    methods: tuple[str, ...]

    def statistic(self, model: AuditedDrop) -> tuple[float, str | None]:
        """The largest |z| over judged features and methods, and its feature."""
        best, named = 0.0, None
        for method in self.methods:
            importance = model.importance(method)
            if importance is None:
                continue
            for feature, value in centred_logs(importance).items():
                key = (method, feature)
                if feature not in self.judged or key not in self.sd or self.sd[key] <= 0:
                    continue
                z = abs(value - self.mean[key]) / self.sd[key]
                if z > best:
                    best, named = z, feature
        return best, named


def oracle_for(group: PowerGroup, methods: Sequence[str], min_share: float = 0.01) -> Oracle:
    null = list(group.null)
    logs = _logs_table(null, methods)
    mean = {key: float(values.mean()) for key, values in logs.items()}
    sd = {key: float(values.std(ddof=1)) for key, values in logs.items() if values.size > 1}
    values = _values_table(null, methods)
    judged = set()
    for method in methods:
        total = sum(v for (m, _), v in values.items() if m == method)
        judged |= {f for (m, f), v in values.items() if m == method and total > 0 and v / total >= min_share}
    provisional = Oracle(mean, sd, frozenset(judged), math.inf, tuple(methods))
    pool_stats = [provisional.statistic(model)[0] for model in _models(group.pool)]
    threshold = float(np.quantile(pool_stats, 1.0 - ORACLE_ALPHA))
    return dataclasses.replace(provisional, threshold=threshold)


def told_statistic(oracle: Oracle, model: AuditedDrop, columns: Sequence[str]) -> float:
    """The oracle told which variable was planted: the largest |z| over its columns only."""
    narrowed = dataclasses.replace(oracle, judged=frozenset(columns))
    return narrowed.statistic(model)[0]


def oracle_records(group: PowerGroup, oracle: Oracle) -> list[dict[str, Any]]:
    """The oracle on every single model of the group: clean pool models and planted models."""
    records = []
    for model in _models(group.pool):
        value, named = oracle.statistic(model)
        records.append(
            {"group": group.group.name, "planted": False, "alert": value > oracle.threshold, "named": named}
        )
    pool = _models(group.pool)
    for cell in group.cells:
        columns = cell.plant.columns
        told_null = [told_statistic(oracle, model, columns) for model in pool]
        told_threshold = float(np.quantile(told_null, 1.0 - ORACLE_ALPHA))
        for model in _models(cell.drops):
            value, named = oracle.statistic(model)
            alert = value > oracle.threshold
            records.append(
                {
                    "group": group.group.name,
                    "planted": True,
                    "kind": cell.kind,
                    "strength": cell.strength,
                    "fraction": cell.fraction,
                    "alert": alert,
                    "right_feature": alert and named in cell.plant.columns,
                    "told_alert": told_statistic(oracle, model, columns) > told_threshold,
                }
            )
    return records


def cell_effects(group: PowerGroup, methods: Sequence[str]) -> dict[tuple[str, str, float], dict[str, Any]]:
    """Each cell's true effect in noise units and its true plain change per method and column."""
    pool_logs = _logs_table(_models(group.pool), methods)
    clean_models = _models(group.clean)
    clean_logs = _logs_table(clean_models, methods)
    clean_values = _values_table(clean_models, methods)
    effects = {}
    for cell in group.cells:
        planted = _models(cell.drops)
        logs = _logs_table(planted, methods)
        values = _values_table(planted, methods)
        per: dict[str, dict[str, dict[str, float | None]]] = {}
        best = 0.0
        for column in cell.plant.columns:
            for method in methods:
                key = (method, column)
                noise = float(pool_logs[key].std(ddof=1)) * math.sqrt(2.0)
                shift = float(logs[key].mean() - clean_logs[key].mean())
                effect = shift / noise if noise > 0 else 0.0
                before = clean_values.get(key, 0.0)
                plain = values[key] / before - 1.0 if before > 0 else None
                per.setdefault(column, {})[method] = {"effect": effect, "plain": plain}
                best = max(best, abs(effect))
        effects[cell.key] = {"effect": best, "per_column": per}
    return effects


def spread(values: Sequence[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "—"
    return f"{statistics.median(finite):.2f} [{min(finite):.2f}-{max(finite):.2f}]"
