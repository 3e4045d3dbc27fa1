"""Input drift (audit/input_drift.py), performance drift (audit/performance.py) and the reasons that
use them (audit/verdict.py): cross-checked against scipy on raw data and a PSI computed by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from audit.drift import assess_drift
from audit.input_drift import (
    PSI_EPSILON,
    PSI_SHIFT,
    assess_input_drift,
    decile_edges,
    feature_input_drift,
    psi,
    summarize_inputs,
    summarize_values,
)
from audit.performance import assess_performance
from audit.types import (
    SUMMARY_CAP,
    AuditSummary,
    Cause,
    DriftConfig,
    DropVerdict,
    EvalSample,
    Importance,
    InputVerdict,
    ModelEvaluation,
    ModelImportances,
    PerformanceVerdict,
)
from audit.verdict import explain
from tests.report_builders import make_summary

WEEKS = [dt.date(2026, 1, 5) + dt.timedelta(weeks=k) for k in range(8)]
NAMES = ("pm2.5", "DEWP", "TEMP", "PRES")


def sample(X: np.ndarray, names: tuple[str, ...] = NAMES) -> EvalSample:
    return EvalSample(X=X, y=None, feature_names=names, source=Path("eval.npz"), content_hash="x")


# --------------------------------------------------------------------------- the statistics


def test_psi_by_hand_on_a_tiny_case() -> None:
    previous = summarize_values("x", np.arange(1.0, 11.0))  # deciles 1, 2, ..., 9: 10 bins of 0.1
    current = summarize_values("x", np.arange(1, 11) / 2)  # 0.5 .. 5: 2 values in each of 5 bins
    assert decile_edges(previous.values).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # bins (-inf,1], (1,2], ..., (4,5] hold 0.2 this week and 0.1 last week; (5,6] ... (9,inf) are
    # empty this week: their share is floored at epsilon = 1e-4
    by_hand = 5 * (0.2 - 0.1) * math.log(0.2 / 0.1) + 5 * (PSI_EPSILON - 0.1) * math.log(PSI_EPSILON / 0.1)
    assert psi(current, previous) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(3.797, abs=1e-3)
    assert psi(previous, previous) == 0.0


@pytest.mark.parametrize("n", [40, SUMMARY_CAP])
def test_exact_summaries_give_scipys_statistics(n: int) -> None:
    rng = np.random.default_rng(n)
    before, now = rng.normal(size=n), rng.normal(0.3, 1.2, size=n - 7)
    drift = feature_input_drift(summarize_values("x", now), summarize_values("x", before), (), DriftConfig())
    reference = stats.ks_2samp(now, before)
    assert drift.exact
    assert drift.ks_statistic == reference.statistic
    assert drift.ks_pvalue == reference.pvalue
    assert drift.wasserstein == pytest.approx(
        stats.wasserstein_distance(now, before) / np.std(before, ddof=1)
    )


def test_sketched_summaries_stay_within_the_stated_bound() -> None:
    rng = np.random.default_rng(3)
    before, now = rng.gamma(2.0, size=30_000), rng.gamma(2.2, size=12_345)
    current, previous = summarize_values("x", now), summarize_values("x", before)
    assert not current.exact and current.values.size == SUMMARY_CAP and current.n == 12_345
    drift = feature_input_drift(current, previous, (), DriftConfig())
    reference = stats.ks_2samp(now, before, method="asymp")
    # each summarised side's empirical CDF is within 0.5 / SUMMARY_CAP of the sample's
    assert abs(drift.ks_statistic - reference.statistic) <= 2 * 0.5 / SUMMARY_CAP
    assert drift.ks_pvalue == pytest.approx(
        float(stats.kstwo.sf(drift.ks_statistic, round(30_000 * 12_345 / 42_345)))
    )
    edges = np.quantile(before, np.arange(1, 10) / 10, method="inverted_cdf")
    shares = [np.bincount(np.searchsorted(edges, v), minlength=10) / v.size for v in (now, before)]
    raw_psi = float(np.sum((shares[0] - shares[1]) * np.log(shares[0] / shares[1])))
    assert drift.psi == pytest.approx(raw_psi, abs=0.01)
    raw_w = stats.wasserstein_distance(now, before) / np.std(before, ddof=1)
    assert drift.wasserstein == pytest.approx(raw_w, abs=0.01)


def test_sequences_are_summarised_one_value_per_time_point() -> None:
    series = np.arange(30.0)
    windows = np.stack([series[i : i + 5] for i in range(26)])[:, :, None]  # (26, 5, 1), overlapping
    (summary,) = summarize_inputs(sample(windows, ("x",)))
    assert summary.n == 26 and summary.values.tolist() == series[4:].tolist()  # each window's last step


def test_ties_and_constant_features() -> None:
    binary = summarize_values("b", np.array([0.0] * 70 + [1.0] * 30))
    flipped = summarize_values("b", np.array([0.0] * 30 + [1.0] * 70))
    assert decile_edges(binary.values).tolist() == [0.0, 1.0]  # 3 bins: <=0, (0,1], >1
    assert psi(flipped, binary) == pytest.approx(
        (0.3 - 0.7) * math.log(0.3 / 0.7) + 0.4 * math.log(0.7 / 0.3)
    )
    constant = summarize_values("c", np.ones(50))
    drift = feature_input_drift(constant, constant, (), DriftConfig())
    assert drift.wasserstein is None and drift.psi == 0.0 and drift.verdict is InputVerdict.STABLE


# --------------------------------------------------------------------------- the band


def test_noise_is_not_a_shift_and_the_limit_covers_small_samples() -> None:
    rng = np.random.default_rng(11)
    for n in (64, 500, 5_000):
        before, now = (summarize_values("x", rng.normal(size=n)) for _ in range(2))
        drift = feature_input_drift(now, before, (), DriftConfig())
        assert drift.verdict is InputVerdict.STABLE, (n, drift)
        assert drift.psi_limit >= PSI_SHIFT
    small = feature_input_drift(
        summarize_values("x", rng.normal(size=64)),
        summarize_values("x", rng.normal(size=64)),
        (),
        DriftConfig(),
    )
    assert small.limit_source == "sampling" and small.psi_limit > 0.5


def test_seasonal_history_widens_the_band() -> None:
    rng = np.random.default_rng(5)
    before = summarize_values("x", rng.normal(size=2_000))
    now = summarize_values("x", rng.normal(0.6, 1.0, size=2_000))
    cold = feature_input_drift(now, before, (), DriftConfig())
    assert cold.verdict is InputVerdict.SHIFTED and cold.limit_source == "default"
    seasonal = feature_input_drift(now, before, [0.3, 0.45, 0.35, 0.5, 0.4, 0.38], DriftConfig())
    assert seasonal.limit_source == "history" and seasonal.psi_limit > cold.psi
    assert seasonal.verdict is InputVerdict.STABLE


# --------------------------------------------------------------------------- the drop


def _weekly(X: np.ndarray, week: dt.date, importances: list[Importance], run_id: int) -> AuditSummary:
    summary = make_summary(week, importances, run_id=run_id)
    return dataclasses.replace(summary, input_summaries=summarize_inputs(sample(X)))


def _importances(values: np.ndarray, seed: int) -> list[Importance]:
    rng = np.random.default_rng(seed)
    methods = ("permutation", "integrated_gradients", "gradient_x_input")
    return [
        Importance(m, NAMES, values * np.exp(rng.normal(0, 0.03, size=4)), std=0.01 * values) for m in methods
    ]


def _eval_data(rng: np.random.Generator, n: int = 800) -> np.ndarray:
    return rng.normal(size=(n, 4)) * np.array([30.0, 10.0, 8.0, 5.0]) + np.array([80.0, 2.0, 12.0, 1016.0])


def test_planted_input_shift_is_flagged_on_that_feature_only_and_the_data_changed() -> None:
    rng = np.random.default_rng(0)
    values = np.array([1.0, 0.6, 0.3, 0.1])
    weeks = [_weekly(_eval_data(rng), WEEKS[k], _importances(values, k), run_id=k + 1) for k in range(5)]
    shifted = _eval_data(rng)
    shifted[:, 1] += 1.5 * 10.0  # DEWP moved by 1.5 standard deviations; the model is the same
    current = _weekly(shifted, WEEKS[5], _importances(values, 5), run_id=6)
    inputs = assess_input_drift(current, weeks[-1], weeks[:-1])
    assert inputs is not None and inputs.n_history == 4
    assert [d.feature for d in inputs.shifted] == ["DEWP"]
    dewp = inputs.drift("DEWP")
    assert dewp is not None and dewp.psi > 1.0 and dewp.wasserstein == pytest.approx(1.5, abs=0.15)
    assessment = explain(assess_drift(current, weeks[-1], weeks[:-1]), inputs, None)
    assert assessment.verdict is DropVerdict.WARN  # the importances did not move
    assert "DEWP" in assessment.reason and "the data changed" in assessment.reason
    for other in ("pm2.5", "TEMP", "PRES"):
        assert f"{other} (PSI" not in assessment.reason


def test_planted_model_change_with_unchanged_inputs_says_the_model_changed() -> None:
    rng = np.random.default_rng(1)
    values = np.array([1.0, 0.6, 0.3, 0.1])
    previous = _weekly(_eval_data(rng), WEEKS[0], _importances(values, 0), run_id=1)
    relied_less = values * np.array([1.0, 0.05, 1.0, 1.0])  # the new model all but ignores DEWP
    current = _weekly(_eval_data(rng), WEEKS[1], _importances(relied_less, 1), run_id=2)
    inputs = assess_input_drift(current, previous)
    assert inputs is not None and not inputs.shifted
    assessment = explain(assess_drift(current, previous), inputs, None)
    assert assessment.verdict is DropVerdict.ALERT
    (dewp,) = [f for f in assessment.features if f.feature == "DEWP"]
    assert "its inputs did not shift" in dewp.reason and dewp.reason.endswith("the model changed")
    assert dewp.reason in assessment.reason


def test_frozen_set_and_input_drift_that_disagree_say_so() -> None:
    rng = np.random.default_rng(2)
    values = np.array([1.0, 0.6, 0.3, 0.1])
    previous = _weekly(_eval_data(rng), WEEKS[0], _importances(values, 0), run_id=1)
    shifted = _eval_data(rng)
    shifted[:, 1] += 20.0
    current = _weekly(shifted, WEEKS[1], _importances(values * np.array([1, 0.05, 1, 1]), 1), run_id=2)
    # the previous model on this week's data scores as it did last week: the frozen set says "model"
    current = dataclasses.replace(
        current,
        frozen=ModelImportances(
            WEEKS[0].isoformat(), tuple(o.importance for o in previous.outcomes if o.importance is not None)
        ),
    )
    inputs = assess_input_drift(current, previous)
    assessment = explain(assess_drift(current, previous), inputs, None)
    (dewp,) = [f for f in assessment.features if f.feature == "DEWP"]
    assert dewp.cause is Cause.MODEL
    assert "the frozen set and the input drift disagree" in dewp.reason


# --------------------------------------------------------------------------- performance


def _evaluated(week: dt.date, loss: float, run_id: int, frozen: float | None = None) -> AuditSummary:
    summary = make_summary(week, _importances(np.array([1.0, 0.6, 0.3, 0.1]), run_id), run_id=run_id)
    evaluation = ModelEvaluation("mse", loss, "r2", 0.8, 2_000, loss_se=0.01 * loss)
    frozen_evaluation = (
        None if frozen is None else ModelEvaluation("mse", frozen, "r2", 0.8, 2_000, 0.01 * frozen)
    )
    return dataclasses.replace(summary, evaluation=evaluation, frozen_evaluation=frozen_evaluation)


def test_a_model_that_got_worse_is_told_from_harder_data() -> None:
    history = [_evaluated(WEEKS[k], 1.0 + 0.02 * (-1) ** k, k + 1) for k in range(5)]
    worse_model = _evaluated(WEEKS[5], 1.6, 6, frozen=1.02)
    drift = assess_performance(worse_model, history[-1], history[:-1])
    assert drift is not None and drift.verdict is PerformanceVerdict.WORSE and drift.cause is Cause.MODEL
    assert drift.band.source.value == "history" and drift.reason.endswith("the model got worse")
    harder = _evaluated(WEEKS[5], 1.6, 6, frozen=1.58)
    drift = assess_performance(harder, history[-1], history[:-1])
    assert (
        drift is not None
        and drift.cause is Cause.DATA
        and drift.reason.endswith("this week's data is harder")
    )
    assessment = explain(assess_drift(harder, history[-1], history[:-1]), None, drift)
    assert assessment.verdict is DropVerdict.WARN and assessment.reason.startswith(
        "mse rose 57% since last week"
    )
    steady = assess_performance(_evaluated(WEEKS[5], 1.03, 6, frozen=1.0), history[-1], history[:-1])
    assert steady is not None and steady.verdict is PerformanceVerdict.STABLE


def test_cold_start_band_holds_sampling_noise() -> None:
    previous = _evaluated(WEEKS[0], 1.0, 1)
    current = _evaluated(WEEKS[1], 1.2, 2)
    drift = assess_performance(current, previous)
    assert drift is not None and drift.band.source.value == "default"
    expected = math.hypot(DriftConfig().default_performance_scale, math.hypot(0.01, 0.01))
    assert drift.band.scale == pytest.approx(expected)
    assert drift.verdict is PerformanceVerdict.STABLE  # +20% is inside 5 x 0.051
    assert "model or data cannot be told apart" not in drift.reason
