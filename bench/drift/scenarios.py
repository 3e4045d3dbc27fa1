"""Scenarios of issue 5's drift benchmark and how both rules are scored on them: the machinery the
CI subset (tests/test_drift_benchmark.py) runs, and the groups, seeds and variable profiles the
power study (`power.py`, `study.py`) shares with it.

A *group* is one data window (a season of one year). Its `n_history` history drops differ only by
the retraining seed (initial weights and training-row order) and by their eval sample (another
random draw from the held-out weeks). Its test drops are either one more reseed or a reseed with
a planted change (`drops.Plant`). A *scenario* is one test drop judged after the group's history
drops: the history is rotated for every test drop, so each test drop is compared with another
"previous" drop. The cold start judges the same test drops after only the last 1, 2 or 3 of them.

Which variables are planted is decided from the group's history alone, before any test drop is
built: the dominant one (pm2.5's own history) is the strong one; the weak ones are variables the
model's loss relies on a little, steadiest first (see `choose_planted`). With `Design.copies`,
every drop also holds reseeded copies and each scenario is judged on the means of its models too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.compare import compare_importances
from audit.drift import assess_drift
from audit.types import AuditSummary, DriftAssessment, DriftConfig, DropVerdict, FeatureVerdict
from bench.drift.drops import (
    FEATURES,
    METHODS,
    VARIABLES,
    AuditedDrop,
    DropSpec,
    Group,
    ModelSettings,
    Plant,
    audit_drop,
    frozen_importances,
    summary,
)
from bench.drift.drops import warm as warm_drops

#: SageMaker Clarify's feature-attribution drift monitor alerts below this nDCG.
NDCG_THRESHOLD = 0.90
#: A weak variable holds at least this share of the permutation importance: the model's loss
#: demonstrably relies on it (a variable it does not use cannot lose a relation it never had) ...
WEAK_MIN_LOSS_SHARE = 0.01
#: ... and at most this share (well below the strong one) ...
WEAK_MAX_LOSS_SHARE = 0.25
#: ... and, among those, the steadiest (coefficient of variation of the share over the history) first.
#: Four seasons of four years: every group trains on the 120 days before its date.
DEFAULT_GROUPS: tuple[Group, ...] = (
    Group("winter-2011", dt.date(2011, 3, 7)),
    Group("summer-2012", dt.date(2012, 7, 2)),
    Group("autumn-2013", dt.date(2013, 10, 7)),
    Group("late-2014", dt.date(2014, 11, 17)),
)
FIRST_WEEK = dt.date(2020, 1, 6)


@dataclass(frozen=True)
class Design:
    """Everything that fixes the scenarios (chosen before any result was looked at)."""

    groups: tuple[Group, ...] = DEFAULT_GROUPS
    n_history: int = 6
    n_reseeds: int = 6
    n_weak: int = 2
    kinds: tuple[str, ...] = ("shuffle", "lag")
    lag_hours: int = 8
    cold_starts: tuple[int, ...] = (1, 2, 3)
    settings: ModelSettings = field(default_factory=ModelSettings)
    #: Planted features per group name, instead of choosing them from the history (the CI subset).
    planted: Mapping[str, tuple[Plant, ...]] | None = None
    #: Also score the previous model on each test drop's eval sample (the frozen set).
    frozen: bool = True
    #: Reseeded copies per drop beside its model (same data, other training seeds): every scenario
    #: is then judged twice, on single models and on the means of the 1 + copies models.
    copies: int = 0
    #: Processes that train and audit drops (the judging is the same with any number).
    workers: int = 1

    def with_copies(self, spec: DropSpec) -> list[DropSpec]:
        """`spec` and its reseeded copies."""
        return [spec, *(spec.copy(index) for index in range(self.copies))]


@dataclass(frozen=True)
class FeatureProfile:
    """How much of the importance one variable (`drops.VARIABLES`: its columns summed) holds over a
    group's history, and how steadily."""

    feature: str
    #: Median over methods of the feature's mean share of the method's total importance.
    share: float
    #: Median over methods of the coefficient of variation of that share over the history drops.
    cv: float
    #: Mean share of permutation importance alone: how much the model's loss relies on the feature
    #: (the gradient methods also credit sensitivity the model never learned to use).
    loss_share: float = 0.0


@dataclass(frozen=True)
class Scenario:
    group: Group
    test: AuditedDrop
    #: Drops before the test drop, oldest first; the last one is "previous".
    earlier: tuple[AuditedDrop, ...]
    #: "strong" or "weak" for planted scenarios.
    strength: str | None = None
    frozen: tuple[Any, ...] | None = None

    @property
    def plant(self) -> Plant | None:
        return self.test.spec.plant

    @property
    def name(self) -> str:
        return f"{self.group.name}/{self.test.spec.name}@{self.earlier[-1].spec.name}"


# --------------------------------------------------------------------------- building


def group_seed(index: int) -> int:
    return 1000 * (index + 1)


def history_specs(group: Group, index: int, design: Design) -> list[DropSpec]:
    return [DropSpec(group, f"history{k}", group_seed(index) + k) for k in range(design.n_history)]


def reseed_specs(group: Group, index: int, design: Design) -> list[DropSpec]:
    return [DropSpec(group, f"reseed{j}", group_seed(index) + 100 + j) for j in range(design.n_reseeds)]


def planted_specs(group: Group, index: int, plants: Sequence[Plant]) -> list[DropSpec]:
    """One drop per plant; a plant repeated (a group with fewer weak variables) gets a second retrain."""
    specs = []
    for p, plant in enumerate(plants):
        repeat = plants[:p].count(plant)
        name = f"planted-{plant.label}" + (f"-{repeat + 1}" if repeat else "")
        specs.append(DropSpec(group, name, group_seed(index) + 200 + p, plant))
    return specs


def feature_profiles(history: Sequence[AuditedDrop]) -> list[FeatureProfile]:
    """Share and steadiness of every variable over the history drops (all benchmark methods)."""
    shares, cvs = [], []
    for method in METHODS:
        values = []
        for drop in history:
            importance = drop.importance(method)
            if importance is None:
                raise ValueError(f"{drop.spec.name}: no {method} result")
            values.append(np.clip(importance.values, 0.0, None))
        column_share = np.array(values) / np.maximum(np.sum(values, axis=1, keepdims=True), 1e-300)
        share = np.stack(
            [
                column_share[:, [FEATURES.index(c) for c in columns]].sum(axis=1)
                for columns in VARIABLES.values()
            ],
            axis=1,
        )
        mean = share.mean(axis=0)
        shares.append(mean)
        cvs.append(np.where(mean > 0, share.std(axis=0, ddof=1) / np.maximum(mean, 1e-300), np.inf))
    share_median = np.median(shares, axis=0)
    cv_median = np.median(cvs, axis=0)
    loss = shares[METHODS.index("permutation")]
    return [
        FeatureProfile(name, float(share_median[i]), float(cv_median[i]), float(loss[i]))
        for i, name in enumerate(VARIABLES)
    ]


def choose_planted(
    profiles: Sequence[FeatureProfile], n_weak: int, used: Iterable[str] = ()
) -> tuple[str, list[str]]:
    """The strong variable (largest share) and up to `n_weak` weak-but-relied-on ones.

    Weak candidates hold between `WEAK_MIN_LOSS_SHARE` and `WEAK_MAX_LOSS_SHARE` of the permutation
    importance (the model's loss relies on them, a little); the steadiest come first, variables not
    yet planted in an earlier group before those that were (so groups vary). There is no fallback:
    a variable the model does not rely on is not planted (`plants_for` repeats the weak ones).
    """
    strong = max(profiles, key=lambda p: p.share).feature
    earlier = set(used)
    candidates = [
        p
        for p in profiles
        if p.feature != strong and WEAK_MIN_LOSS_SHARE <= p.loss_share <= WEAK_MAX_LOSS_SHARE
    ]
    ordered = sorted(candidates, key=lambda p: (p.feature in earlier, p.cv))
    return strong, [p.feature for p in ordered[:n_weak]]


def plants_for(strong: str, weak: Sequence[str], design: Design) -> list[Plant]:
    """Every kind of change for the strong variable and for `design.n_weak` weak ones; with fewer
    weak variables than that, the found ones are planted again (another retrain each), so every
    group has the same number of planted drops."""
    weak_slots = [weak[k % len(weak)] for k in range(design.n_weak)] if weak else []
    return [
        Plant(kind, feature, design.lag_hours) for feature in (strong, *weak_slots) for kind in design.kinds
    ]


@dataclass
class Built:
    """Every audited drop and scenario of a design, with what decided the planted features."""

    scenarios: list[Scenario]
    profiles: dict[str, list[FeatureProfile]]
    planted: dict[str, dict[str, Any]]
    drops: list[AuditedDrop]
    seconds: dict[str, float]


def build(
    design: Design, root: Path, *, fresh: bool = False, progress: Callable[[str], None] = print
) -> Built:
    """Train and audit (or read from the cache) every drop, and assemble the scenarios."""
    scenarios: list[Scenario] = []
    profiles: dict[str, list[FeatureProfile]] = {}
    planted: dict[str, dict[str, Any]] = {}
    drops: list[AuditedDrop] = []
    used: list[str] = []
    group_plants: list[tuple[str, list[Plant]]] = []
    started = time.perf_counter()
    frozen_seconds = 0.0

    def audited(spec: DropSpec) -> AuditedDrop:
        began = time.perf_counter()
        # the parallel warm-up already (re)built it when fresh
        again = fresh and design.workers <= 1
        drop = audit_drop(spec, design.settings, root, fresh=again)
        copies = tuple(
            audit_drop(copy, design.settings, root, fresh=again) for copy in design.with_copies(spec)[1:]
        )
        drop = dataclasses.replace(drop, copies=copies)
        drops.extend((drop, *copies))
        progress(
            f"{spec.group.name}/{spec.name}: eval R^2 {drop.meta['eval_r2']:.3f}"
            + (f" (+{len(copies)} copies)" if copies else "")
            + f" ({time.perf_counter() - began:.1f} s)"
        )
        return drop

    def warm(specs: Sequence[DropSpec]) -> None:
        every = [one for spec in specs for one in design.with_copies(spec)]
        warm_drops(every, design.settings, root, workers=design.workers, fresh=fresh)

    warm([spec for index, group in enumerate(design.groups) for spec in history_specs(group, index, design)])
    histories: list[list[AuditedDrop]] = []
    for index, group in enumerate(design.groups):
        history = [audited(spec) for spec in history_specs(group, index, design)]
        histories.append(history)
        profiles[group.name] = feature_profiles(history)
        if design.planted is not None:
            plants = list(design.planted.get(group.name, ()))
            strong = plants[0].feature if plants else ""
            planted[group.name] = {"strong": strong, "weak": [], "plants": [p.label for p in plants]}
        else:
            strong, weak = choose_planted(profiles[group.name], design.n_weak, used)
            used.extend(weak)
            plants = plants_for(strong, weak, design)
            planted[group.name] = {"strong": strong, "weak": weak, "plants": [p.label for p in plants]}
        group_plants.append((strong, plants))
    warm(
        [
            spec
            for index, (group, (_, plants)) in enumerate(zip(design.groups, group_plants, strict=True))
            for spec in reseed_specs(group, index, design) + planted_specs(group, index, plants)
        ]
    )
    for index, group in enumerate(design.groups):
        history = histories[index]
        strong, plants = group_plants[index]
        tests = [audited(spec) for spec in reseed_specs(group, index, design)]
        tests += [audited(spec) for spec in planted_specs(group, index, plants)]
        for j, test in enumerate(tests):
            turn = j % len(history) + 1
            earlier = tuple(history[turn:] + history[:turn])
            frozen = None
            if design.frozen:
                began = time.perf_counter()
                frozen = frozen_importances(earlier[-1], test, fresh=fresh)
                frozen_seconds += time.perf_counter() - began
            strength = None
            if test.spec.plant is not None:
                strength = "strong" if test.spec.plant.feature == strong else "weak"
            scenarios.append(Scenario(group, test, earlier, strength, frozen))
    total = time.perf_counter() - started
    return Built(
        scenarios,
        profiles,
        planted,
        drops,
        {"build_and_audit": total - frozen_seconds, "frozen_audits": frozen_seconds},
    )


# --------------------------------------------------------------------------- judging


def summaries(
    scenario: Scenario, n_earlier: int | None, *, with_frozen: bool, with_copies: bool = False
) -> tuple[AuditSummary, AuditSummary, list[AuditSummary]]:
    """(current, previous, history) of a scenario with its last `n_earlier` earlier drops (None: all);
    every drop with its reseeded copies when `with_copies`."""
    earlier = scenario.earlier if n_earlier is None else scenario.earlier[-n_earlier:]
    weeks = [FIRST_WEEK + dt.timedelta(weeks=k) for k in range(len(earlier) + 1)]
    past = [
        summary(drop, week=week, run_id=k + 1, with_copies=with_copies)
        for k, (drop, week) in enumerate(zip(earlier, weeks, strict=False))
    ]
    current = summary(
        scenario.test,
        week=weeks[-1],
        run_id=len(earlier) + 1,
        frozen=scenario.frozen if with_frozen else None,
        with_copies=with_copies,
    )
    return current, past[-1], past[:-1]


def ndcg_by_method(current: AuditSummary, previous: AuditSummary) -> dict[str, float | None]:
    result = {}
    for method in METHODS:
        now, before = current.importance(method), previous.importance(method)
        if now is not None and before is not None:
            result[method] = compare_importances(now, before).ndcg
    return result


def judge(
    scenario: Scenario,
    n_earlier: int | None,
    config: DriftConfig,
    *,
    with_frozen: bool = False,
    with_copies: bool = False,
) -> dict[str, Any]:
    """Both rules on one scenario: verdicts, named feature, nDCG and the z-score diagnostics.

    With `with_copies`, every drop holds its reseeded copies and the tool judges the means of its
    models; nDCG, which SageMaker computes on one model's attributions, stays on the primary models.
    """
    current, previous, history = summaries(
        scenario, n_earlier, with_frozen=with_frozen, with_copies=with_copies
    )
    assessment = assess_drift(current, previous, history, config)
    ndcgs = ndcg_by_method(current, previous)
    plant = scenario.plant
    first = assessment.features[0] if assessment.features else None
    finite = [v for v in ndcgs.values() if v is not None]
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "group": scenario.group.name,
        "test": scenario.test.spec.name,
        "previous": scenario.earlier[-1].spec.name,
        "planted": plant is not None,
        "kind": None if plant is None else plant.kind,
        "feature": None if plant is None else plant.feature,
        "strength": scenario.strength,
        "n_earlier": len(history) + 1,
        "frozen": with_frozen,
        "models": 1 + len(current.copies),
        "verdict": str(assessment.verdict),
        "reason": assessment.reason,
        "first_feature": None if first is None else first.feature,
        "first_feature_verdict": None if first is None else str(first.verdict),
        "first_feature_cause": None if first is None or first.cause is None else str(first.cause),
        "changed_features": [f.feature for f in assessment.features if f.verdict is FeatureVerdict.CHANGED],
        "ndcg": ndcgs,
        "ndcg_min": min(finite) if finite else None,
        "ndcg_alert_any": any(v < NDCG_THRESHOLD for v in finite),
        "ndcg_alert_permutation": (ndcgs.get("permutation") or 1.0) < NDCG_THRESHOLD,
        "diagnostics": diagnostics(
            assessment, () if plant is None else plant.columns, config.min_agreeing_methods
        ),
    }
    record["alert"] = assessment.verdict is DropVerdict.ALERT
    record["warn"] = assessment.verdict is DropVerdict.WARN
    # a plant of wind direction is rightly named by any of its four columns
    record["right_feature"] = bool(
        plant is not None and record["alert"] and record["first_feature"] in plant.columns
    )
    return record


def diagnostics(assessment: DriftAssessment, planted: Sequence[str], agreeing: int) -> dict[str, Any]:
    """Per verdict method: |z| and evidence of the planted variable against the largest other feature.

    `planted` holds the planted variable's columns (none for a reseed); a variable of several
    columns (wind direction) counts with its column of largest evidence. Evidence is how far beyond
    its band a change is (value or time profile, in band half-widths; > 1 means the method flags
    it), the quantity `audit.drift` orders features by. ``*_kth`` is (evidence, |z|) of a feature in
    its `agreeing`-th strongest method: the feature is "changed" when that evidence exceeds 1, so it
    shows how far each feature is from the line.
    """
    per_method: dict[str, Any] = {}
    for method in assessment.verdict_methods:
        drifts = [d for d in assessment.drifts if d.method == method and d.feature != "*"]
        best_other = max((d for d in drifts if d.feature not in planted), key=_evidence, default=None)
        entry: dict[str, Any] = {
            "max_other_feature": None if best_other is None else best_other.feature,
            "max_other_z": None if best_other is None else _abs_z(best_other),
            "max_other_evidence": None if best_other is None else _evidence(best_other),
        }
        if planted:
            mine = max((d for d in drifts if d.feature in planted), key=_evidence, default=None)
            entry["planted_z"] = None if mine is None else _abs_z(mine)
            entry["planted_evidence"] = None if mine is None else _evidence(mine)
            entry["planted_flagged"] = mine is not None and mine.verdict is FeatureVerdict.CHANGED
            entry["planted_band_source"] = (
                None if mine is None or mine.band is None else str(mine.band.source)
            )
        per_method[method] = entry
    mine_assessment = max(
        (f for f in assessment.features if f.feature in planted), key=lambda f: f.agreement, default=None
    )
    kth = kth_evidence(assessment, agreeing)
    others = {name: value for name, value in kth.items() if name not in planted}
    top_other = max(others, key=lambda name: others[name][0], default=None)
    planted_kth = max((kth[name] for name in planted if name in kth), default=None)
    return {
        "methods": per_method,
        "planted_kth": planted_kth,
        "max_other_kth_feature": top_other,
        "max_other_kth": None if top_other is None else others[top_other],
        "planted_agreement": None if mine_assessment is None else mine_assessment.agreement,
        "planted_direction": None if mine_assessment is None else mine_assessment.direction,
        "n_methods": len(assessment.verdict_methods),
    }


def kth_evidence(assessment: DriftAssessment, agreeing: int) -> dict[str, tuple[float, float]]:
    """(evidence, |z|) of every feature in its k-th strongest verdict method (k = `agreeing`,
    at most the number of methods that judged it)."""
    by_feature: dict[str, list[tuple[float, float]]] = {}
    for drift in assessment.drifts:
        if drift.method in assessment.verdict_methods and drift.feature != "*":
            z = _abs_z(drift)
            by_feature.setdefault(drift.feature, []).append((_evidence(drift), 0.0 if z is None else z))
    result = {}
    for name, pairs in by_feature.items():
        k = min(agreeing, len(pairs))
        evidence = sorted((e for e, _ in pairs), reverse=True)[k - 1]
        z = sorted((z for _, z in pairs), reverse=True)[k - 1]
        result[name] = (evidence, z)
    return result


def _abs_z(drift: Any) -> float | None:
    return None if drift.z is None else abs(float(drift.z))


def _evidence(drift: Any) -> float:
    value = 0.0
    if drift.change is not None and drift.band is not None and drift.band.half_width > 0:
        value = abs(drift.change) / drift.band.half_width
    profile = 0.0
    if drift.profile_distance is not None and drift.profile_band:
        profile = drift.profile_distance / drift.profile_band
    return max(value, profile)


def judge_all(scenarios: Sequence[Scenario], design: Design, config: DriftConfig) -> list[dict[str, Any]]:
    """Every scenario at full history and at each cold start, on single models and (if built) on the
    means of each drop's models; at full history also with the frozen set (if built)."""
    records = []
    for scenario in scenarios:
        for n_earlier in (None, *design.cold_starts):
            if n_earlier is not None and n_earlier >= len(scenario.earlier):
                continue
            records.append(judge(scenario, n_earlier, config))
            if scenario.frozen is not None and n_earlier is None:
                records.append(judge(scenario, n_earlier, config, with_frozen=True))
            if scenario.test.copies:
                records.append(judge(scenario, n_earlier, config, with_copies=True))
    return records


# --------------------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rate:
    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return None if self.total == 0 else self.hits / self.total

    def text(self) -> str:
        if self.total == 0:
            return "—"
        return f"{self.hits}/{self.total} ({100 * self.hits / self.total:.0f}%)"


def rate(records: Iterable[Mapping[str, Any]], key: str) -> Rate:
    chosen = list(records)
    return Rate(sum(bool(r[key]) for r in chosen), len(chosen))


def select(
    records: Sequence[Mapping[str, Any]],
    *,
    n_earlier: int | None = None,
    frozen: bool = False,
    models: int = 1,
    **where: Any,
) -> list[Mapping[str, Any]]:
    """Records of one variant (`n_earlier` None: the full history; `models` per drop) matching `where`."""
    full = max((r["n_earlier"] for r in records), default=0)
    wanted = full if n_earlier is None else n_earlier
    return [
        r
        for r in records
        if r["frozen"] == frozen
        and r["n_earlier"] == wanted
        and r["models"] == models
        and all(r[name] == value for name, value in where.items())
    ]


def rule_rates(
    records: Sequence[Mapping[str, Any]], *, n_earlier: int | None = None, models: int = 1
) -> dict[str, Any]:
    """False-alarm, warn, detection and right-feature rates of both rules for one variant."""
    reseeds = select(records, n_earlier=n_earlier, models=models, planted=False)
    planted = select(records, n_earlier=n_earlier, models=models, planted=True)
    return {
        "n_reseed": len(reseeds),
        "n_planted": len(planted),
        "tool": {
            "false_alarm": rate(reseeds, "alert"),
            "warn_on_reseed": rate(reseeds, "warn"),
            "detection": rate(planted, "alert"),
            "warn_on_planted": rate(planted, "warn"),
            "right_feature": rate(planted, "right_feature"),
        },
        "ndcg_any": {
            "false_alarm": rate(reseeds, "ndcg_alert_any"),
            "detection": rate(planted, "ndcg_alert_any"),
        },
        "ndcg_permutation": {
            "false_alarm": rate(reseeds, "ndcg_alert_permutation"),
            "detection": rate(planted, "ndcg_alert_permutation"),
        },
    }


def breakdown(records: Sequence[Mapping[str, Any]], *, models: int = 1) -> list[dict[str, Any]]:
    """Detection and right-feature rates by planted kind and strength (full history)."""
    rows = []
    planted = select(records, planted=True, models=models)
    kinds = sorted({r["kind"] for r in planted})
    for kind in kinds:
        for strength in ("strong", "weak"):
            chosen = [r for r in planted if r["kind"] == kind and r["strength"] == strength]
            if not chosen:
                continue
            rows.append(
                {
                    "kind": kind,
                    "strength": strength,
                    "features": sorted({r["feature"] for r in chosen}),
                    "tool_detection": rate(chosen, "alert"),
                    "tool_right_feature": rate(chosen, "right_feature"),
                    "tool_warn": rate(chosen, "warn"),
                    "ndcg_any_detection": rate(chosen, "ndcg_alert_any"),
                    "ndcg_permutation_detection": rate(chosen, "ndcg_alert_permutation"),
                }
            )
    return rows


def jsonable(value: Any) -> Any:
    """Rates and dataclasses as plain JSON."""
    if isinstance(value, Rate):
        return {"hits": value.hits, "total": value.total, "rate": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
