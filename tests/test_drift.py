"""The drift call (audit/drift.py) on hand-built audits whose noise and changes are known."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from audit.compare import compare_importances, ndcg, profile_emd
from audit.config import read_drop_config
from audit.drift import assess_drift, centred_log_ratios, drop_figure, robust_scale
from audit.types import (
    AuditError,
    AuditSummary,
    BandSource,
    Cause,
    DriftConfig,
    DropVerdict,
    FeatureVerdict,
    Importance,
    MethodOutcome,
    MethodStatus,
    ModelFacts,
    ModelImportances,
    Task,
)

FEATURES = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir")
BASE = np.array([5.0, 2.0, 1.5, 1.0, 0.8, 0.3, 0.2])
METHODS = ("permutation", "integrated_gradients", "perturbation")
START = dt.date(2014, 9, 1)


def _importance(
    method: str, values: np.ndarray, names: tuple[str, ...] = FEATURES, **kw: object
) -> Importance:
    return Importance(method=method, feature_names=names, values=np.asarray(values, dtype=float), **kw)  # type: ignore[arg-type]


def _audit(
    week: int,
    per_method: Mapping[str, np.ndarray],
    *,
    names: tuple[str, ...] = FEATURES,
    profiles: Mapping[str, np.ndarray] | None = None,
    copies: tuple[ModelImportances, ...] = (),
    frozen: ModelImportances | None = None,
) -> AuditSummary:
    outcomes = tuple(
        MethodOutcome(
            method,
            MethodStatus.OK,
            importance=_importance(method, values, names, profile=(profiles or {}).get(method)),
        )
        for method, values in per_method.items()
    )
    facts = ModelFacts(Path("model.keras"), "0" * 64, (None, len(names)), (None, 1), 10, Task.REGRESSION)
    return AuditSummary(
        model_name="m",
        week=START + dt.timedelta(weeks=week),
        run_id=week + 1,
        model=facts,
        n_eval_samples=100,
        eval_source="eval.npz",
        outcomes=outcomes,
        copies=copies,
        frozen=frozen,
    )


def _noisy(rng: np.random.Generator, base: np.ndarray = BASE, sd: float = 0.1) -> dict[str, np.ndarray]:
    """Each method sees the same retrain (a shared per-feature factor) plus its own small noise."""
    retrain = np.exp(rng.normal(0.0, sd, base.shape))
    return {m: base * retrain * np.exp(rng.normal(0.0, sd / 3, base.shape)) for m in METHODS}


def _history(n: int, seed: int = 0) -> list[AuditSummary]:
    rng = np.random.default_rng(seed)
    return [_audit(week, _noisy(rng)) for week in range(n)]


def test_centred_log_ratio_ignores_a_common_scale_and_isolates_one_collapse() -> None:
    before = _importance("permutation", BASE)
    doubled = centred_log_ratios(_importance("permutation", 2 * BASE), before, epsilon_fraction=0.01)
    assert all(abs(change) < 1e-12 for change in doubled.values())
    collapsed = BASE.copy()
    collapsed[1] = 0.0
    changes = centred_log_ratios(_importance("permutation", collapsed), before, epsilon_fraction=0.01)
    eps_now, eps_before = 0.01 * np.sum(collapsed), 0.01 * np.sum(BASE)
    ratios = np.log((collapsed + eps_now) / (BASE + eps_before))
    assert changes["DEWP"] == pytest.approx(ratios[1] - np.median(ratios))
    assert changes["DEWP"] < math.log(0.25)
    assert all(abs(changes[name]) < 0.05 for name in FEATURES if name != "DEWP")


def test_ndcg_is_sagemakers_definition() -> None:
    previous = np.array([3.0, 2.0, 1.0])
    assert ndcg(np.array([30.0, 20.0, 10.0]), previous) == pytest.approx(1.0)
    # this drop ranks c, b, a: DCG = 1/log2(2) + 2/log2(3) + 3/log2(4); iDCG = 3 + 2/log2(3) + 1/2
    expected = (1 + 2 / math.log2(3) + 3 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg(np.array([1.0, 2.0, 3.0]), previous) == pytest.approx(expected)
    assert ndcg(np.array([1.0]), np.array([1.0])) is None


def test_profile_emd_measures_a_shift_in_steps() -> None:
    profile = np.zeros(24)
    profile[20:23] = [1.0, 2.0, 1.0]
    assert profile_emd(profile, profile) == pytest.approx(0.0)
    assert profile_emd(np.roll(profile, -3), profile) == pytest.approx(3.0)
    assert profile_emd(2.5 * profile, profile) == pytest.approx(0.0)  # shape, not size
    assert profile_emd(np.zeros(24), profile) is None


def test_kendall_and_ndcg_are_stored_on_comparisons() -> None:
    now = _importance("permutation", BASE[::-1].copy())
    comparison = compare_importances(now, _importance("permutation", BASE))
    assert comparison.kendall == pytest.approx(-1.0)
    assert comparison.ndcg is not None and comparison.ndcg < 0.9


def test_noise_band_sources_follow_the_history_available() -> None:
    config = DriftConfig()
    history = _history(7)
    rng = np.random.default_rng(99)
    current = _audit(7, _noisy(rng))
    sources = {}
    for n_earlier in (0, 1, 2, 6):
        previous, earlier = history[6], history[6 - n_earlier : 6]
        assessment = assess_drift(current, previous, earlier, config)
        drift = assessment.drift("permutation", "DEWP")
        assert drift is not None and drift.band is not None
        sources[n_earlier] = drift.band.source
        assert assessment.n_history == n_earlier
    assert sources == {
        0: BandSource.DEFAULT,
        1: BandSource.POOLED_HISTORY,
        2: BandSource.POOLED_HISTORY,
        6: BandSource.HISTORY,
    }


def test_reseeded_copies_set_the_band_without_history() -> None:
    rng = np.random.default_rng(3)
    copies = tuple(
        ModelImportances(f"model_seed{i}.keras", tuple(_importance(m, v) for m, v in _noisy(rng).items()))
        for i in range(3)
    )
    current = _audit(1, _noisy(rng), copies=copies)
    assessment = assess_drift(current, _audit(0, _noisy(rng)))
    drift = assessment.drift("permutation", "TEMP")
    assert drift is not None and drift.band is not None
    assert drift.band.source is BandSource.RESEED and drift.band.n_observations == 4
    # the copies' spread (sd ~0.1 per retrain) x sqrt(1/4 + 1/1): a mean of 4 models vs one model
    assert 0.02 < drift.band.scale < 0.4
    assert assessment.n_copies == 3


def _drop_of_models(week: int, rng: np.random.Generator, n_models: int, **scale: float) -> AuditSummary:
    """A drop of `n_models` independent retrains (primary + copies) of the same data; `scale` multiplies
    a feature's importance in every one of them (a planted change)."""
    retrains = []
    for _ in range(n_models):
        values = _noisy(rng, sd=0.15)
        for name, factor in scale.items():
            for method in METHODS:
                values[method][FEATURES.index(name)] *= factor
        retrains.append(values)
    copies = tuple(
        ModelImportances(f"model_seed{i}.keras", tuple(_importance(m, v) for m, v in values.items()))
        for i, values in enumerate(retrains[1:], start=1)
    )
    return _audit(week, retrains[0], copies=copies)


def test_a_drops_figure_is_the_mean_of_its_models() -> None:
    drop = _drop_of_models(0, np.random.default_rng(4), 3)
    figure = drop_figure(drop, "permutation")
    assert figure is not None and figure.n_models == 3
    models = [drop.importance("permutation")] + [c.importance("permutation") for c in drop.copies]
    np.testing.assert_allclose(figure.importance.values, np.mean([m.values for m in models if m], axis=0))
    assert figure.importance.parameters["models_averaged"] == 3
    single = drop_figure(_audit(0, _noisy(np.random.default_rng(4))), "permutation")
    assert single is not None and single.n_models == 1


def test_a_copy_scored_on_other_features_is_left_out_of_the_mean() -> None:
    rng = np.random.default_rng(6)
    other = ModelImportances("model_seed9.keras", (_importance("permutation", BASE[:-1], FEATURES[:-1]),))
    drop = _drop_of_models(0, rng, 2)
    drop = _audit(0, {m: drop.importance(m).values for m in METHODS}, copies=(*drop.copies, other))  # type: ignore[union-attr]
    figure = drop_figure(drop, "permutation")
    assert figure is not None and figure.n_models == 2


def test_averaging_reseeded_copies_catches_a_change_one_model_per_drop_cannot() -> None:
    """A 50% fall is inside single models' retraining noise (sd 0.15 per retrain) but not inside that
    of the mean of 4 retrains: over these 20 simulated teams, drops of 4 models detect it 16 times,
    single models 3 times, and reseed-only drops stay quiet either way (0 alerts in both)."""
    counts = {(n, label): 0 for n in (1, 4) for label in ("reseed", "planted")}
    for seed in range(20):
        for n_models in (1, 4):
            rng = np.random.default_rng([seed, n_models])
            history = [_drop_of_models(week, rng, n_models) for week in range(7)]
            reseed = _drop_of_models(7, rng, n_models)
            planted = _drop_of_models(7, rng, n_models, TEMP=0.5)
            for label, current in (("reseed", reseed), ("planted", planted)):
                assessment = assess_drift(current, history[-1], history[:-1])
                counts[(n_models, label)] += assessment.verdict is DropVerdict.ALERT
                if label == "planted" and n_models == 4 and assessment.verdict is DropVerdict.ALERT:
                    assert assessment.features[0].feature == "TEMP"
                    assert "figures are means of 4 reseeded models" in assessment.reason
    assert counts[(1, "planted")] <= 6
    assert counts[(4, "planted")] >= 15
    assert counts[(1, "reseed")] <= 1 and counts[(4, "reseed")] <= 1


def test_retraining_noise_alone_is_ok_across_many_seeds() -> None:
    alerts = 0
    for seed in range(40):
        history = _history(8, seed)
        current = _audit(8, _noisy(np.random.default_rng(1000 + seed)))
        assessment = assess_drift(current, history[-1], history[:-1])
        alerts += assessment.verdict is DropVerdict.ALERT
    assert alerts <= 2  # <= 5% false alarms


def test_a_collapsed_feature_alerts_and_is_named_first_with_a_reason() -> None:
    history = _history(8)
    values = _noisy(np.random.default_rng(5))
    for method in METHODS:
        values[method][1] *= 0.25  # DEWP falls 75%
    assessment = assess_drift(_audit(8, values), history[-1], history[:-1])
    assert assessment.verdict is DropVerdict.ALERT
    first = assessment.features[0]
    assert first.feature == "DEWP" and first.verdict is FeatureVerdict.CHANGED
    assert first.direction == "down" and first.agreement == 3 and first.n_methods == 3
    assert (
        "DEWP:" in first.reason
        and "importance fell" in first.reason
        and "3 of 3 methods agree" in first.reason
    )
    assert "(noise band -" in first.reason
    assert assessment.reason.startswith("1 feature changed beyond noise: DEWP")
    assert "7 earlier week-to-week changes" in assessment.reason


def test_a_weak_feature_with_consistent_importance_is_caught() -> None:
    history = _history(8, seed=11)
    values = _noisy(np.random.default_rng(12))
    for method in METHODS:
        values[method][6] *= 0.2  # Ir: 4% of the top feature's importance
    assessment = assess_drift(_audit(8, values), history[-1], history[:-1])
    assert assessment.verdict is DropVerdict.ALERT and assessment.features[0].feature == "Ir"


def test_too_few_agreeing_methods_are_weaker_evidence() -> None:
    history = _history(8, seed=2)
    values = _noisy(np.random.default_rng(21))
    values["perturbation"][2] *= 0.2
    one = assess_drift(_audit(8, values), history[-1], history[:-1])
    temp = next(f for f in one.features if f.feature == "TEMP")
    assert temp.verdict is FeatureVerdict.STABLE and temp.methods_flagged == ("perturbation",)
    assert one.verdict is DropVerdict.OK  # one method of the three needed: shown, not warned
    values["permutation"][2] *= 0.2
    two = assess_drift(_audit(8, values), history[-1], history[:-1])
    assert two.verdict is DropVerdict.WARN  # one short of the agreement needed
    assert two.reason.startswith("weak evidence, too few methods agree: TEMP:")
    assert "2 of 3 methods agree" in two.reason


def test_added_and_removed_features_alert_by_name() -> None:
    names = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "hour")
    previous = _audit(0, {m: BASE for m in METHODS})
    current = _audit(1, {m: BASE for m in METHODS}, names=names)
    assessment = assess_drift(current, previous)
    verdicts = {f.feature: f.verdict for f in assessment.features}
    assert verdicts["hour"] is FeatureVerdict.NEW and verdicts["Ir"] is FeatureVerdict.REMOVED
    assert assessment.verdict is DropVerdict.ALERT
    assert "new features: hour" in assessment.reason and "removed features: Ir" in assessment.reason


def test_a_shifted_time_profile_is_a_change_of_lags() -> None:
    rng = np.random.default_rng(4)
    steps = np.arange(24)

    def profiles(peak: float) -> dict[str, np.ndarray]:
        bump = np.exp(-0.5 * ((steps - peak) / 1.5) ** 2)
        base = np.outer(np.exp(-0.3 * (23 - steps)) + 0.05, BASE)  # recent steps matter most
        shifted = base.copy()
        shifted[:, 1] = bump * BASE[1]
        return {m: shifted * np.exp(rng.normal(0, 0.05, shifted.shape)) for m in METHODS}

    history = [_audit(w, _noisy(rng), profiles=profiles(20.0)) for w in range(8)]
    current = _audit(8, _noisy(rng), profiles=profiles(14.0))
    assessment = assess_drift(current, history[-1], history[:-1])
    dewp = next(f for f in assessment.features if f.feature == "DEWP")
    assert dewp.verdict is FeatureVerdict.CHANGED and dewp.direction == "lags"
    drift = assessment.drift(dewp.methods_flagged[0], "DEWP")
    assert drift is not None and drift.profile_distance == pytest.approx(6.0, abs=0.3)
    assert f"time profile moved {drift.profile_distance:.1f} steps" in dewp.reason
    assert assessment.verdict is DropVerdict.ALERT and assessment.features[0].feature == "DEWP"


def test_frozen_set_tells_a_model_change_from_a_data_change() -> None:
    history = _history(8, seed=7)
    previous = history[-1]
    prev_values = {o.method: o.importance.values for o in previous.outcomes if o.importance is not None}
    moved = {m: v.copy() for m, v in prev_values.items()}
    for v in moved.values():
        v[1] *= 0.2
    # The model changed: the previous model on this week's data looks like last week.
    by_model = _audit(
        8,
        moved,
        frozen=ModelImportances("2014-10-20", tuple(_importance(m, v) for m, v in prev_values.items())),
    )
    # The data changed: the previous model on this week's data shows the drop too.
    by_data = _audit(
        8, moved, frozen=ModelImportances("2014-10-20", tuple(_importance(m, v) for m, v in moved.items()))
    )
    model_call = assess_drift(by_model, previous, history[:-1])
    data_call = assess_drift(by_data, previous, history[:-1])
    assert (
        model_call.features[0].cause is Cause.MODEL and "the model changed" in model_call.features[0].reason
    )
    assert data_call.features[0].cause is Cause.DATA and "the data changed" in data_call.features[0].reason


def test_methods_agreement_is_spearman_between_methods() -> None:
    audit = _audit(
        0, {"permutation": BASE, "integrated_gradients": BASE * 3, "perturbation": BASE[::-1].copy()}
    )
    pairs = {(a.method, a.other_method): a.spearman for a in assess_drift(audit, audit).agreement}
    assert pairs[("permutation", "integrated_gradients")] == pytest.approx(1.0)
    assert pairs[("permutation", "perturbation")] == pytest.approx(-1.0)


def test_identical_drops_are_ok_and_say_there_is_no_history() -> None:
    audit = _audit(0, {m: BASE for m in METHODS})
    assessment = assess_drift(audit, audit)
    assert assessment.verdict is DropVerdict.OK
    assert "no history yet: default noise bands" in assessment.reason


def test_weight_methods_are_judged_only_without_data_methods() -> None:
    both = _audit(0, {"weight_sum": BASE, "permutation": BASE})
    assert assess_drift(both, both).verdict_methods == ("permutation",)
    weights_only = _audit(0, {"weight_sum": BASE})
    assert assess_drift(weights_only, weights_only).verdict_methods == ("weight_sum",)


def test_robust_scale_ignores_one_past_real_change() -> None:
    rng = np.random.default_rng(0)
    noise = list(rng.normal(0, 0.1, 8))
    assert robust_scale([*noise, 3.0]) == pytest.approx(robust_scale(noise), rel=0.35)
    assert robust_scale([1.0]) == 0.0


def test_drift_thresholds_come_from_audit_toml(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text('[drift]\nthreshold = 3.0\nmin_agreeing_methods = 3\nverdict_methods = ["permutation"]\n')
    config = read_drop_config(path).drift
    assert config.threshold == 3.0 and config.min_agreeing_methods == 3
    assert config.verdict_methods == ("permutation",)
    path.write_text("[drift]\nthreshhold = 3.0\n")
    with pytest.raises(AuditError, match=r"unknown key\(s\) drift.threshhold"):
        read_drop_config(path)
    path.write_text("[drift]\nthreshold = -1\n")
    with pytest.raises(AuditError, match=r"drift\.threshold must be a positive number"):
        read_drop_config(path)


def test_gradient_shap_and_the_magnitude_saliency_do_not_vote_by_default() -> None:
    """Issue 18: they would add votes correlated with the other gradient methods'; they are judged
    (their changes shown) but decide the verdict only when `verdict_methods` names them."""
    values = {m: BASE for m in (*METHODS, "gradient_shap", "saliency")}
    current, previous = _audit(1, values), _audit(0, values)
    assessment = assess_drift(current, previous)
    assert assessment.verdict_methods == METHODS
    assert {d.method for d in assessment.drifts} >= {"gradient_shap", "saliency"}
    chosen = DriftConfig(verdict_methods=("gradient_shap", "permutation"))
    assert assess_drift(current, previous, config=chosen).verdict_methods == ("permutation", "gradient_shap")


def test_figures_of_another_method_version_are_neither_judged_nor_learned_from() -> None:
    def audit(week: int, values: np.ndarray, version: int) -> AuditSummary:
        summary = _audit(week, {"permutation": values})
        importance = _importance("saliency", values, method_version=version)
        return dataclasses.replace(
            summary, outcomes=(*summary.outcomes, MethodOutcome("saliency", MethodStatus.OK, importance))
        )

    rng = np.random.default_rng(3)
    old = [audit(week, BASE * np.exp(rng.normal(0, 1.0, BASE.shape)), 1) for week in range(5)]
    collapsed = BASE.copy()
    collapsed[0] = 0.0
    cut_over = assess_drift(audit(5, collapsed, 2), old[-1], old[:-1])
    assert not any(d.method == "saliency" for d in cut_over.drifts)  # version 2 against 1: not judged
    after = assess_drift(audit(6, BASE, 2), audit(5, BASE, 2), old)
    saliency = [d for d in after.drifts if d.method == "saliency" and d.band is not None]
    # the wild version-1 history is not this version's noise: no history band
    assert saliency and all(d.band.source is not BandSource.HISTORY for d in saliency)  # type: ignore[union-attr]
