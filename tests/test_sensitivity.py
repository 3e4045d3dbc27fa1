"""What the drift rule could have seen (audit/sensitivity.py), checked against the rule itself.

Every stated change is rebuilt as importances and judged by `assess_drift`: a change of exactly the
stated size is flagged, one slightly smaller is not. Known answers come from the rule's formula
solved by hand where the median feature stays the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from audit.drift import assess_drift
from audit.sensitivity import (
    MethodFigures,
    MethodNoise,
    agreed_detectable,
    copies_advice,
    plain_bands,
    plain_change,
    predicted_scale,
)
from audit.types import (
    AuditSummary,
    BandSource,
    DetectableChange,
    DriftAssessment,
    DriftConfig,
    DropVerdict,
    FeatureVerdict,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelFacts,
    ModelImportances,
    NoiseBand,
    PlainBand,
    Task,
)

FEATURES = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir")
BASE = np.array([5.0, 2.0, 1.5, 1.0, 0.8, 0.3, 0.2])
METHODS = ("permutation", "integrated_gradients", "perturbation")
START = dt.date(2014, 9, 1)
#: "slightly smaller": relative to the stated change.
SLIGHTLY = 1e-7


def _audit(
    week: int,
    per_method: Mapping[str, np.ndarray],
    *,
    stds: Mapping[str, np.ndarray] | None = None,
    copies: tuple[ModelImportances, ...] = (),
    n_eval: int | None = 100,
) -> AuditSummary:
    outcomes = tuple(
        MethodOutcome(
            method,
            MethodStatus.OK,
            importance=Importance(
                method=method,
                feature_names=FEATURES,
                values=np.asarray(values, dtype=float),
                std=None if stds is None else np.asarray(stds[method], dtype=float),
            ),
        )
        for method, values in per_method.items()
    )
    facts = ModelFacts(Path("model.keras"), "0" * 64, (None, len(FEATURES)), (None, 1), 10, Task.REGRESSION)
    return AuditSummary(
        model_name="m",
        week=START + dt.timedelta(weeks=week),
        run_id=week + 1,
        model=facts,
        n_eval_samples=n_eval,
        eval_source="eval.npz",
        outcomes=outcomes,
        copies=copies,
    )


def _noisy(rng: np.random.Generator, sd: float = 0.1) -> dict[str, np.ndarray]:
    retrain = np.exp(rng.normal(0.0, sd, BASE.shape))
    return {m: BASE * retrain * np.exp(rng.normal(0.0, sd / 3, BASE.shape)) for m in METHODS}


@pytest.fixture(scope="module")
def weeks() -> list[AuditSummary]:
    """Seven weeks of noise only: five history weeks, the previous drop and this week's."""
    rng = np.random.default_rng(3)
    return [_audit(week, _noisy(rng)) for week in range(7)]


def _assess(
    weeks: list[AuditSummary], current: AuditSummary | None = None, **config: object
) -> DriftAssessment:
    return assess_drift(current or weeks[-1], weeks[-2], weeks[:-2], DriftConfig(**config))  # type: ignore[arg-type]


def _moved(audit: AuditSummary, method: str, feature: str, value: float) -> AuditSummary:
    """`audit` with one feature's value under one method replaced."""
    outcomes = []
    for outcome in audit.outcomes:
        importance = outcome.importance
        if outcome.method == method and importance is not None:
            values = importance.values.copy()
            values[FEATURES.index(feature)] = value
            importance = dataclasses.replace(importance, values=values)
        outcomes.append(dataclasses.replace(outcome, importance=importance))
    return dataclasses.replace(audit, outcomes=tuple(outcomes))


def _verdict(assessment: DriftAssessment, method: str, feature: str) -> FeatureVerdict:
    drift = assessment.drift(method, feature)
    assert drift is not None
    return drift.verdict


def _previous_value(weeks: list[AuditSummary], method: str, feature: str) -> float:
    importance = weeks[-2].importance(method)
    assert importance is not None
    return float(importance.values[FEATURES.index(feature)])


@pytest.mark.parametrize("feature", ["pm2.5", "DEWP", "PRES", "Is"])
@pytest.mark.parametrize("method", ["permutation", "perturbation"])
def test_a_change_of_exactly_the_stated_size_is_flagged_and_a_smaller_one_is_not(
    weeks: list[AuditSummary], method: str, feature: str
) -> None:
    """The median of the method moves when the feature moves (it is one of 7), and eps with it."""
    assessment = _assess(weeks)
    drift = assessment.drift(method, feature)
    assert drift is not None and drift.plain_band is not None and drift.verdict is FeatureVerdict.STABLE
    previous = _previous_value(weeks, method, feature)
    band = drift.plain_band
    checked = 0
    if band.high is not None:
        at = _assess(weeks, _moved(weeks[-1], method, feature, previous * (1 + band.high)))
        assert _verdict(at, method, feature) is FeatureVerdict.CHANGED
        below = _assess(
            weeks, _moved(weeks[-1], method, feature, previous * (1 + band.high * (1 - SLIGHTLY)))
        )
        assert _verdict(below, method, feature) is FeatureVerdict.STABLE
        checked += 1
    if band.low is not None:
        at = _assess(weeks, _moved(weeks[-1], method, feature, previous * (1 + band.low)))
        assert _verdict(at, method, feature) is FeatureVerdict.CHANGED
        smaller = previous * (1 + band.low * (1 - SLIGHTLY))
        above = _assess(weeks, _moved(weeks[-1], method, feature, smaller))
        assert _verdict(above, method, feature) is FeatureVerdict.STABLE
        checked += 1
    assert checked >= 1


def test_the_stated_edges_hold_with_standard_errors_that_keep_their_relative_size(
    weeks: list[AuditSummary],
) -> None:
    """With stored standard errors the band has a sampling part; it is held by scaling the moved
    figure's std with its value (plus epsilon), as the module docstring says."""
    rng = np.random.default_rng(5)
    with_std = [
        dataclasses.replace(
            week,
            outcomes=tuple(
                dataclasses.replace(
                    o,
                    importance=dataclasses.replace(
                        o.importance, std=0.05 * o.importance.values * rng.uniform(0.5, 1.5, len(FEATURES))
                    ),
                )
                for o in week.outcomes
                if o.importance is not None
            ),
        )
        for week in weeks
    ]
    method, feature = "permutation", "DEWP"
    drift = _assess(with_std).drift(method, feature)
    assert drift is not None and drift.band is not None and drift.band.sampling_scale > 0
    assert drift.plain_band is not None and drift.plain_band.high is not None
    current = with_std[-1].importance(method)
    assert current is not None and current.std is not None
    index = FEATURES.index(feature)
    total = float(np.sum(current.values))
    value = _previous_value(with_std, method, feature) * (1 + drift.plain_band.high)
    eps_old = 0.01 * total
    eps_new = 0.01 * (total - current.values[index] + value)
    std = current.std.copy()
    std[index] *= (value + eps_new) / (current.values[index] + eps_old)
    moved = _moved(with_std[-1], method, feature, value)
    moved = dataclasses.replace(
        moved,
        outcomes=tuple(
            dataclasses.replace(o, importance=dataclasses.replace(o.importance, std=std))
            if o.method == method and o.importance is not None
            else o
            for o in moved.outcomes
        ),
    )
    assert _verdict(_assess(with_std, moved), method, feature) is FeatureVerdict.CHANGED


def test_known_answer_from_the_rules_formula_solved_by_hand() -> None:
    """Nine features; feature 0 moves, the other eight share one previous value, so their ratios
    keep their order whatever eps is. Past the upper edge feature 0 is the largest ratio and the
    median is the others' 5th smallest (m = 1.05); past the lower edge it is the smallest and the
    median is their 4th (m = 0.95). Solving
    log((u + e(S + u)) / (w0 + e')) - log((m + e(S + u)) / (1 + e')) = +-h for u by hand:
    u = (K m + e S (K - 1)) / (1 + e - K e), K = exp(+-h) (w0 + e') / (1 + e')."""
    others = np.array([0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2])
    now = np.concatenate([[3.0], others])
    before = np.concatenate([[3.2], np.ones(8)])
    e, h = 0.01, 0.4
    figures = MethodFigures(
        "permutation",
        tuple(f"x{i}" for i in range(9)),
        now,
        before,
        float(now.sum()),
        before / before.sum(),
        e,
        0.01,
    )
    band = plain_bands(figures, [h] + [None] * 8)[0]
    assert band is not None and band.high is not None and band.low is not None
    total_others = float(others.sum())
    eps_before = e * float(before.sum())

    def crossing(width: float, median_value: float) -> float:
        k = math.exp(width) * (before[0] + eps_before) / (1 + eps_before)
        return (k * median_value + e * total_others * (k - 1)) / (1 + e - k * e)

    np.testing.assert_allclose(band.high, crossing(h, 1.05) / before[0] - 1, rtol=1e-12)
    np.testing.assert_allclose(band.low, crossing(-h, 0.95) / before[0] - 1, rtol=1e-12)
    # wider than exp(+-h) - 1 = -33% / +49%: the median follows the moving feature (0.95 or 1.05)
    assert band.low < math.expm1(-h) and band.high > math.expm1(h)


def test_a_feature_holding_most_of_the_importance_cannot_rise_past_a_wide_band() -> None:
    """eps grows with the feature: its centred change is capped near log((1 + e) / e) minus how far
    above the median it already was, so with a wide band no rise of any size is flagged."""
    now = np.array([9.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    figures = MethodFigures(
        "permutation", tuple(f"x{i}" for i in range(11)), now, now.copy(), 10.0, now / 10.0, 0.01, 0.01
    )
    narrow, wide = plain_bands(figures, [0.5] + [None] * 10)[0], plain_bands(figures, [1.5] + [None] * 10)[0]
    assert narrow is not None and narrow.high is not None
    assert wide is not None and wide.high is None and wide.low is not None
    assert wide.detectable.rise is None and wide.detectable.describe().startswith("fall")


def test_a_feature_under_min_share_in_both_drops_is_not_judged_and_has_no_band(
    weeks: list[AuditSummary],
) -> None:
    assessment = _assess(weeks, min_share=0.05)  # Is and Ir hold about 2-3% of the total
    drift = assessment.drift("permutation", "Ir")
    assert drift is not None and drift.plain_band is None and drift.detectable is None
    feature = next(f for f in assessment.features if f.feature == "Ir")
    assert feature.detectable is None and feature.judged_methods == ()


def test_plain_change_is_the_features_own_change(weeks: list[AuditSummary]) -> None:
    """Every feature doubled: the centred change is 0, the plain change +100%, and the plain band
    is centred near +100% (the method's median change folded in)."""
    doubled = _audit(6, {m: 2 * weeks[-2].importance(m).values for m in METHODS})  # type: ignore[union-attr]
    drift = _assess(weeks, doubled).drift("permutation", "pm2.5")
    assert drift is not None and drift.change is not None and drift.plain_band is not None
    assert abs(drift.change) < 1e-9
    np.testing.assert_allclose(drift.plain_change, 1.0, rtol=1e-12)
    assert drift.plain_band.low is not None and drift.plain_band.high is not None
    assert drift.plain_band.low < 1.0 < drift.plain_band.high
    centre = math.sqrt((1 + drift.plain_band.low) * (1 + drift.plain_band.high))
    assert 1.9 < centre < 2.1  # on the log scale the band is centred near a doubling
    narrow = _assess(weeks, doubled, threshold=1.0).drift("permutation", "pm2.5")
    assert narrow is not None and narrow.plain_band is not None and narrow.plain_band.low is not None
    assert narrow.plain_band.low > 0  # with a narrow band "no change" would be flagged as a fall
    assert narrow.detectable == DetectableChange(narrow.plain_band.high, 0.0)
    assert plain_change(2.0, 0.0) is None and plain_change(None, 1.0) is None


def test_per_feature_is_the_kth_smallest_over_the_verdict_methods() -> None:
    bands = [PlainBand(-0.3, 0.5), PlainBand(-0.6, 0.2), PlainBand(-0.1, None), None]
    assert agreed_detectable(bands, 2) == DetectableChange(0.5, 0.3)
    assert agreed_detectable(bands, 3) == DetectableChange(None, 0.6)
    assert agreed_detectable(bands[:2], 3) == DetectableChange(0.5, 0.6)  # all when fewer hold it
    assert agreed_detectable([None, None], 2) is None


def test_the_features_stated_change_is_flagged_by_enough_methods_together(weeks: list[AuditSummary]) -> None:
    """Moving the feature by its stated per-feature rise under every verdict method alerts; slightly
    less does not (k = 2 of 3 methods here)."""
    assessment = _assess(weeks, min_agreeing_methods=2)
    feature = next(f for f in assessment.features if f.feature == "DEWP")
    assert feature.detectable is not None and feature.detectable.rise is not None
    assert feature.judged_methods == METHODS

    def moved_by(rise: float) -> AuditSummary:
        current = weeks[-1]
        for method in METHODS:
            current = _moved(current, method, "DEWP", _previous_value(weeks, method, "DEWP") * (1 + rise))
        return current

    rise = feature.detectable.rise
    at = _assess(weeks, moved_by(rise), min_agreeing_methods=2)
    below = _assess(weeks, moved_by(rise * (1 - SLIGHTLY)), min_agreeing_methods=2)
    assert next(f for f in at.features if f.feature == "DEWP").verdict is FeatureVerdict.CHANGED
    assert next(f for f in below.features if f.feature == "DEWP").verdict is FeatureVerdict.STABLE


def test_an_ok_verdict_says_what_the_audit_would_have_seen(weeks: list[AuditSummary]) -> None:
    assessment = _assess(weeks)
    assert assessment.verdict is DropVerdict.OK
    first = assessment.features  # any order; the sentence names the most relied-on features first
    pm = next(f for f in first if f.feature == "pm2.5")
    assert pm.detectable is not None
    assert f"this week the audit would have seen pm2.5 {pm.detectable.describe()}" in assessment.reason
    assert "features under 1% of a method's importance are not judged" in assessment.reason
    assert assessment.reason.startswith("no feature moved beyond its noise band in 3 methods")


# --------------------------------------------------------------------------- copies advice


def _band(source: BandSource, retrain: float, sampling: float) -> NoiseBand:
    scale = math.hypot(retrain, sampling)
    return NoiseBand(scale, 5 * scale, source, 5, sampling, retrain)


def test_predicted_scale_splits_retraining_from_sampling() -> None:
    config = DriftConfig()
    history = _band(BandSource.HISTORY, retrain=0.25, sampling=0.15)
    # today's scale back at today's models and rows
    np.testing.assert_allclose(predicted_scale(history, 1, 1, 1, 1.0, config), history.scale)
    # copies average the retraining part only: 0.25^2 - 0.15^2 retraining, sampling counted twice
    np.testing.assert_allclose(
        predicted_scale(history, 1, 1, 4, 1.0, config), math.sqrt((0.25**2 - 0.15**2) / 4 + 2 * 0.15**2)
    )
    # rows shrink the sampling part only
    np.testing.assert_allclose(
        predicted_scale(history, 1, 1, 1, 4.0, config), math.sqrt(0.25**2 - 0.15**2 + 2 * 0.15**2 / 4)
    )
    reseed = _band(BandSource.RESEED, retrain=0.2, sampling=0.1)  # 3 models in each drop
    np.testing.assert_allclose(predicted_scale(reseed, 3, 3, 6, 1.0, config), math.sqrt(0.2**2 / 2 + 0.1**2))
    assert predicted_scale(_band(BandSource.DEFAULT, 0.3, 0.0), 1, 1, 8, 1.0, config) is None
    # never below min_scale
    assert predicted_scale(history, 1, 1, 10_000, 1e6, config) == config.min_scale


def test_copies_advice_gives_the_models_and_rows_that_reach_the_target(weeks: list[AuditSummary]) -> None:
    rng = np.random.default_rng(11)
    noisy = [_audit(week, _noisy(rng, sd=0.12), stds={m: 0.01 * BASE for m in METHODS}) for week in range(7)]
    assessment = _assess(noisy)
    advice = assessment.advice
    assert advice is not None and advice.estimable
    assert advice.features[0] == "pm2.5" and len(advice.features) == 3
    assert advice.models_now == 1 and advice.rows_now == 100
    assert max(advice.detectable_now) > advice.target
    assert advice.models_needed is not None and advice.models_needed > 1
    assert f"{advice.models_needed} models per drop" in advice.text
    assert (
        advice.rows_needed is not None and advice.rows_needed > 100
    ) or "more eval rows alone would not" in advice.text
    relaxed = _assess(noisy, target_detectable_change=10.0).advice
    assert (
        relaxed is not None
        and relaxed.models_needed == 1
        and relaxed.text.startswith("the audit already sees")
    )


def test_without_history_or_copies_the_advice_is_not_estimable_yet(weeks: list[AuditSummary]) -> None:
    assessment = assess_drift(weeks[-1], weeks[-2], [], DriftConfig())
    assert assessment.advice is not None and not assessment.advice.estimable
    assert assessment.advice.text.startswith("not estimable yet")


def test_copies_advice_of_hand_made_bands_matches_a_direct_search() -> None:
    """With one method and bands set by hand, the advised number of models is the first k' whose
    predicted band puts both of the feature's detectable changes under the target."""
    now = np.array([3.0, 2.0, 1.5, 1.0, 0.8, 0.6, 0.4])
    before = now * np.array([1.0, 1.05, 0.95, 1.0, 1.1, 0.9, 1.0])
    figures = MethodFigures(
        "permutation", FEATURES, now, before, float(now.sum()), before / before.sum(), 0.01, 0.01
    )

    bands = tuple(_band(BandSource.HISTORY, 0.3, 0.03) for _ in FEATURES)
    noise = MethodNoise(figures, bands, 1, 1)
    config = DriftConfig(min_agreeing_methods=1)
    advice = copies_advice([noise], ["pm2.5"], 500, config)
    typical = dataclasses.replace(figures, now=before.copy(), total_now=float(before.sum()))
    expected = None
    for models in range(1, 33):
        scale = predicted_scale(bands[0], 1, 1, models, 1.0, config)
        assert scale is not None
        found = plain_bands(typical, [config.threshold * scale] + [None] * 6)[0]
        assert found is not None
        if found.detectable.largest <= config.target_detectable_change:
            expected = models
            break
    assert expected is not None and expected > 1
    assert advice.models_needed == expected
    assert advice.rows_needed is None or advice.rows_needed > 500


def test_a_direction_no_noise_level_makes_detectable_is_named_and_left_out() -> None:
    """A feature holding nearly all the importance: its centred change cannot exceed about
    log((1 + e) / e) + log((0.005 + eps) / (9 + eps)) = 0.05, under the smallest band (threshold x
    min_scale = 0.1), so no noise level makes its rise detectable; the advice names it and targets
    the fall only."""
    now = np.array([9.0, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005])  # the others under the floor
    names = FEATURES
    figures = MethodFigures(
        "permutation", names, now, now.copy(), float(now.sum()), now / now.sum(), 0.01, 0.01
    )
    bands = tuple(_band(BandSource.HISTORY, 0.3, 0.02) for _ in names)
    advice = copies_advice(
        [MethodNoise(figures, bands, 1, 1)], ["pm2.5"], 600, DriftConfig(min_agreeing_methods=1)
    )
    assert advice.capped == ("pm2.5 rise",)
    assert "cannot see a pm2.5 rise at any noise level" in advice.text
    # its fall is seen, but only near 100%: halving it doubles the others against their floor
    assert 0.9 < advice.detectable_now[0] < 1.0
    assert advice.models_needed is None and advice.combined is None
    assert (
        "neither more reseeded copies (up to 32 models per drop) nor more eval rows alone would"
        in advice.text
    )
