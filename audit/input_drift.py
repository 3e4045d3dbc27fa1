"""Input-data drift per feature: did this week's eval sample move away from last week's?

Importance drift says what the model relies on changed; it does not say whether the inputs did.
Every audit keeps a summary of each feature's eval values (`summarize_inputs`, stored with the
week's figures), and the next week compares its own with it, so last week's eval file need not
still exist. Three statistics, as reviewers know them from Evidently, Vertex AI or Arize:

- **PSI**, the population stability index, over 10 bins cut at last week's deciles (fewer where
  deciles tie, e.g. a binary feature): ``PSI = sum_i (p_i - q_i) * ln(p_i / q_i)`` with p this
  week's and q last week's share of the bin. An empty bin would make the log infinite: shares are
  floored at `PSI_EPSILON` = 1e-4 (as Evidently does) before the sum.
- **Kolmogorov-Smirnov**: the two-sample statistic (the largest gap between the two empirical
  CDFs) and its p-value, by `scipy.stats.ks_2samp`.
- **Wasserstein-1** distance (`scipy.stats.wasserstein_distance`, the area between the two CDFs) in
  units of last week's standard deviation: 1.5 = the distribution moved by 1.5 sd.

Exactness. A summary holds every value of a sample of up to `SUMMARY_CAP` (1,000) rows, and then
the three statistics equal those of the raw samples (KS and its p-value are scipy's on the same
values). A larger sample keeps `SUMMARY_CAP` quantiles at probabilities (i + 0.5) / k (inverted
CDF); the empirical CDF of those quantiles is within 0.5 / k of the sample's at every point, so a
KS statistic from a summarised side is within 0.5 / k (0.0005) of the raw one per summarised side,
PSI's bin shares likewise, and the KS p-value comes from Smirnov's asymptotic distribution with the
true sample sizes (scipy's ``method="asymp"``).

Sequences. An (n, t, f) eval sample of overlapping windows repeats each value up to t times, so the
summary takes one value per time point: each window's last step. Neighbouring time points are
still correlated, so for sequences the p-values are descriptive, not tests.

The band. Like the importance bands of audit/drift.py, a shift is judged against what is usual
for this feature, so that seasonal variation (PSI 0.3 every spring week) is not an alert. A
feature is ``shifted`` when its PSI exceeds the largest of:

1. `PSI_SHIFT` (0.25), the usual "significant shift" line of PSI;
2. the sampling limit: with B bins and samples of n and m rows, a PSI between two samples of one
   distribution is about (1/n + 1/m) x chi-square(B - 1); its 99.9% quantile;
3. with `min_history` or more past week-to-week PSIs of the feature: their median plus `threshold`
   x 1.4826 x their median absolute deviation (the robust sd), as the time-profile band does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats

from audit.types import (
    SUMMARY_CAP,
    AuditSummary,
    DriftConfig,
    EvalSample,
    FeatureSummary,
    FloatArray,
    InputDrift,
    InputDriftAssessment,
    InputVerdict,
)

#: Shares of a PSI bin are floored at this before the log ratio (an empty bin is not infinite).
PSI_EPSILON = 1e-4
#: The common line above which PSI is called a significant shift (0.1-0.25: moderate).
PSI_SHIFT = 0.25
#: Quantile of the PSI of two samples of one distribution that sampling noise alone may reach.
SAMPLING_QUANTILE = 0.999
#: Bins of the PSI: last week's deciles.
PSI_BINS = 10
MAD_TO_SD = 1.4826


# --------------------------------------------------------------------------- summaries


def summarize_inputs(sample: EvalSample) -> tuple[FeatureSummary, ...]:
    """One `FeatureSummary` per feature of `sample`, in feature order.

    Parameters
    ----------
    sample : EvalSample
        X of shape (n_samples, n_features), or (n_samples, n_steps, n_features) for sequences, of
        which each window's last step is summarised (one value per time point).

    Returns
    -------
    tuple of FeatureSummary
        Every value when there are at most `SUMMARY_CAP`, else `SUMMARY_CAP` quantiles.
    """
    X = np.asarray(sample.X, dtype=np.float64)
    points = X[:, -1, :] if X.ndim == 3 else X
    if points.shape[0] == 0:
        return ()
    return tuple(summarize_values(name, points[:, j]) for j, name in enumerate(sample.feature_names))


def summarize_values(feature: str, values: FloatArray) -> FeatureSummary:
    """The summary of one feature's finite `values` (see `FeatureSummary`)."""
    finite = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    if finite.size == 0:
        raise ValueError(f"{feature}: no finite value to summarise")
    exact = finite.size <= SUMMARY_CAP
    kept = finite if exact else sketch(finite, SUMMARY_CAP)
    return FeatureSummary(
        feature=feature,
        n=int(finite.size),
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        values=kept,
        exact=exact,
    )


def sketch(sorted_values: FloatArray, k: int) -> FloatArray:
    """`k` quantiles of `sorted_values` at probabilities (i + 0.5) / k, by the inverted CDF.

    With F the sample's empirical CDF and G that of the k quantiles, |G(x) - F(x)| <= 0.5 / k for
    every x: quantile i is <= x exactly when (i + 0.5) / k <= F(x).
    """
    probabilities = (np.arange(k) + 0.5) / k
    return np.quantile(sorted_values, probabilities, method="inverted_cdf")


# --------------------------------------------------------------------------- statistics


def psi(current: FeatureSummary, previous: FeatureSummary) -> float:
    """Population stability index of `current` against `previous`, over `previous`'s deciles."""
    edges = decile_edges(previous.values)
    p = np.maximum(bin_shares(current.values, edges), PSI_EPSILON)
    q = np.maximum(bin_shares(previous.values, edges), PSI_EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def decile_edges(values: FloatArray) -> FloatArray:
    """The distinct inner cut points at the 10%, 20%, ..., 90% quantiles (inverted CDF) of `values`."""
    probabilities = np.arange(1, PSI_BINS) / PSI_BINS
    return np.unique(np.quantile(values, probabilities, method="inverted_cdf"))


def bin_shares(values: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of `values` in each bin (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return counts / max(values.size, 1)


def ks_test(current: FeatureSummary, previous: FeatureSummary) -> tuple[float, float]:
    """The two-sample KS statistic and p-value; scipy's exactly when both summaries are exact."""
    if current.exact and previous.exact:
        result = stats.ks_2samp(current.values, previous.values)
        return float(result.statistic), float(result.pvalue)
    statistic = float(stats.ks_2samp(current.values, previous.values, method="asymp").statistic)
    m, n = sorted((float(current.n), float(previous.n)), reverse=True)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(m * n / (m + n))), 0.0, 1.0))
    return statistic, pvalue


def wasserstein_in_sd(current: FeatureSummary, previous: FeatureSummary) -> float | None:
    """Wasserstein-1 distance between the two weeks' values, in units of last week's sd."""
    if not previous.std > 0:
        return None
    return float(stats.wasserstein_distance(current.values, previous.values)) / previous.std


# --------------------------------------------------------------------------- the band and the call


def psi_limit(
    current: FeatureSummary, previous: FeatureSummary, history: Sequence[float], config: DriftConfig
) -> tuple[float, str]:
    """The PSI above which this feature's shift is called, and what set it (see the module docstring)."""
    n_bins = decile_edges(previous.values).size + 1
    sampling = float(stats.chi2.ppf(SAMPLING_QUANTILE, max(n_bins - 1, 1))) * (1 / current.n + 1 / previous.n)
    limit, source = PSI_SHIFT, "default"
    if sampling > limit:
        limit, source = sampling, "sampling"
    if len(history) >= config.min_history:
        past = np.asarray(history, dtype=np.float64)
        spread = MAD_TO_SD * float(np.median(np.abs(past - np.median(past))))
        seasonal = float(np.median(past)) + config.threshold * spread
        if seasonal > limit:
            limit, source = seasonal, "history"
    return limit, source


def feature_input_drift(
    current: FeatureSummary, previous: FeatureSummary, history: Sequence[float], config: DriftConfig
) -> InputDrift:
    """PSI, KS, Wasserstein and the verdict of one feature (`history`: its past week-to-week PSIs)."""
    value = psi(current, previous)
    statistic, pvalue = ks_test(current, previous)
    limit, source = psi_limit(current, previous, history, config)
    return InputDrift(
        feature=current.feature,
        psi=value,
        ks_statistic=statistic,
        ks_pvalue=pvalue,
        wasserstein=wasserstein_in_sd(current, previous),
        psi_limit=limit,
        limit_source=source,
        n_history=len(history),
        verdict=InputVerdict.SHIFTED if value > limit else InputVerdict.STABLE,
        exact=current.exact and previous.exact,
        n=current.n,
        previous_n=previous.n,
    )


def assess_input_drift(
    current: AuditSummary,
    previous: AuditSummary,
    history: Sequence[AuditSummary] = (),
    config: DriftConfig | None = None,
) -> InputDriftAssessment | None:
    """Input drift of every feature both drops summarised; None when either has no summaries.

    `history` holds the audits before `previous`, oldest first: the past week-to-week PSIs of
    ``(*history, previous)`` (the last `history_weeks`) set each feature's band.
    """
    config = config or DriftConfig()
    if not current.input_summaries or not previous.input_summaries:
        return None
    past = [*history, previous][-(config.history_weeks + 1) :]
    past_psi: dict[str, list[float]] = {}
    for older, newer in itertools.pairwise(past):
        before = {s.feature: s for s in older.input_summaries}
        for summary in newer.input_summaries:
            if summary.feature in before:
                past_psi.setdefault(summary.feature, []).append(psi(summary, before[summary.feature]))
    before = {s.feature: s for s in previous.input_summaries}
    drifts = tuple(
        feature_input_drift(summary, before[summary.feature], past_psi.get(summary.feature, ()), config)
        for summary in current.input_summaries
        if summary.feature in before
    )
    return InputDriftAssessment(
        drifts=drifts,
        n_history=len(past) - 1,
        sequences=len(current.model.input_shape) == 3,
    )


def describe_shift(drift: InputDrift) -> str:
    """E.g. "PSI 0.41, KS 0.22, moved 0.9 sd" (for reasons and tables)."""
    moved = "" if drift.wasserstein is None else f", moved {drift.wasserstein:.1f} sd"
    return f"PSI {drift.psi:.2f}, KS {drift.ks_statistic:.2f}{moved}"
