"""Compare one drop's importances with the previous drop's, method by method.

Features are aligned by name, so added, removed and reordered features are handled: a feature
present on one side only gets a `FeatureChange` with the other side empty. Rank statistics use the
features both drops share.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from audit.types import AuditSummary, FeatureChange, FloatArray, Importance, MethodComparison

DEFAULT_TOP_K = 5


def compare_importances(
    current: Importance, previous: Importance, *, top_k: int = DEFAULT_TOP_K
) -> MethodComparison:
    """Per-feature change, rank change, rank correlations, top-k overlap, nDCG, profile distance.

    Spearman's rho and Kendall's tau-b are computed on the values of the features present in both
    drops (None with fewer than 3 shared features or a constant side); signed methods are ranked by
    magnitude, as their ranks are. Top-k overlap is the share of this drop's k highest-ranked
    features that were also among the previous drop's k highest. nDCG is SageMaker Clarify's
    attribution-drift score (`ndcg`); the profile distance is the mean over shared features of
    `profile_emd` (None unless both drops have time profiles over the same steps). Two figures of
    different method versions (`Importance.method_version`) are not compared: the result holds both
    versions and nothing else (`not_comparable`).
    """
    if current.method != previous.method:
        raise ValueError(f"cannot compare {current.method} with {previous.method}")
    if current.method_version != previous.method_version:
        return not_comparable(current, previous)
    now = values_and_ranks(current)
    before = values_and_ranks(previous)
    changes = tuple(
        FeatureChange(
            feature=name,
            value=now[name][0] if name in now else None,
            previous_value=before[name][0] if name in before else None,
            rank=now[name][1] if name in now else None,
            previous_rank=before[name][1] if name in before else None,
        )
        for name in _union_in_order(current.feature_names, previous.feature_names)
    )
    shared = [name for name in current.feature_names if name in before]
    k = min(top_k, len(current.feature_names), len(previous.feature_names))
    magnitude_now = [abs(now[n][0]) if current.signed else now[n][0] for n in shared]
    magnitude_before = [abs(before[n][0]) if previous.signed else before[n][0] for n in shared]
    distances = profile_distances(current, previous)
    return MethodComparison(
        method=current.method,
        spearman=spearman(magnitude_now, magnitude_before),
        top_k=k,
        top_k_overlap=_top_k_overlap(current, previous, k),
        changes=changes,
        kendall=_kendall(magnitude_now, magnitude_before),
        ndcg=ndcg(np.array(magnitude_now), np.array(magnitude_before)),
        profile_distance=float(np.mean(list(distances.values()))) if distances else None,
        method_version=current.method_version,
        previous_method_version=previous.method_version,
    )


def newer_versions(current: AuditSummary, previous: AuditSummary) -> tuple[str, ...]:
    """Methods whose figure in `current` is of a newer version of their definition than in
    `previous` (`Importance.method_version`): the previous drop must be re-scored to compare them."""
    stale = []
    for outcome in current.outcomes:
        before = previous.importance(outcome.method)
        now = outcome.importance
        if now is not None and before is not None and now.method_version > before.method_version:
            stale.append(outcome.method)
    return tuple(stale)


def not_comparable(current: Importance, previous: Importance) -> MethodComparison:
    """The comparison of two figures of different versions of a method: no statistics, no changes,
    and both versions, so the report and the SQL say "not comparable" (`MethodComparison.comparable`)."""
    return MethodComparison(
        method=current.method,
        spearman=None,
        top_k=0,
        top_k_overlap=None,
        changes=(),
        method_version=current.method_version,
        previous_method_version=previous.method_version,
    )


def ndcg(current: FloatArray, previous: FloatArray) -> float | None:
    """nDCG of this drop's ranking, with the previous drop's attributions as relevance.

    As SageMaker Clarify's feature-attribution drift monitor computes it (it alerts below
    `audit.types.CLARIFY_NDCG_THRESHOLD`, 0.90; on `gradient_shap` it is the figure Clarify users
    know, `audit.types.CLARIFY_METHOD`): with F the features sorted by the previous (baseline)
    attribution a(f) and F' sorted by this drop's, nDCG = DCG / iDCG, DCG = sum_i a(F'_i) /
    log2(i + 1), iDCG = sum_i a(F_i) / log2(i + 1) (i = 1 for the top feature). Both sides are
    clipped at 0 (a negative permutation importance is no relevance, and no importance), which makes
    ties common: features tied in this drop's ranking share their positions' discounts equally
    (each gets the mean relevance of the tie), as scikit-learn's ``ndcg_score`` does by default
    (McSherry & Najork 2008), so the figure does not depend on the features' order in the input.
    None with fewer than 2 features or no positive relevance.
    """
    if current.shape[0] < 2:
        return None
    relevance = np.clip(np.asarray(previous, np.float64), 0.0, None)
    scores = np.clip(np.asarray(current, np.float64), 0.0, None)
    discount = 1.0 / np.log2(np.arange(2, current.shape[0] + 2))
    ideal = float(np.sum(np.sort(relevance)[::-1] * discount))
    if ideal <= 0.0:
        return None
    return _tie_averaged_dcg(relevance, scores, discount) / ideal


def _tie_averaged_dcg(relevance: FloatArray, scores: FloatArray, discount: FloatArray) -> float:
    """DCG of the ranking by `scores` (largest first) where each group of tied scores gets its mean
    relevance at each of the positions it spans (scikit-learn's ``_tie_averaged_dcg``)."""
    _, group, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    mean_relevance = np.zeros(len(counts))
    np.add.at(mean_relevance, group.reshape(-1), relevance)
    mean_relevance /= counts
    ends = np.cumsum(counts)
    cumulative = np.concatenate([[0.0], np.cumsum(discount)])
    group_discounts = cumulative[ends] - cumulative[ends - counts]
    return float(np.sum(mean_relevance * group_discounts))


def profile_emd(current: FloatArray, previous: FloatArray) -> float | None:
    """Earth mover's distance, in steps, between two time profiles of one feature.

    Each profile's magnitudes are normalised to sum to 1 over the steps (where along the input
    window the feature matters, not how much); the distance is how far, in steps, that mass must
    move: sum over steps of |CDF_now - CDF_before|. 0 = same lags; a profile shifted by 3 steps
    without changing shape is 3. None when either profile is all zero.
    """
    a, b = np.abs(np.asarray(current, np.float64)), np.abs(np.asarray(previous, np.float64))
    total_a, total_b = float(a.sum()), float(b.sum())
    if total_a <= 0.0 or total_b <= 0.0 or not (math.isfinite(total_a) and math.isfinite(total_b)):
        return None
    return float(np.sum(np.abs(np.cumsum(a / total_a) - np.cumsum(b / total_b))))


def profile_distances(current: Importance, previous: Importance) -> dict[str, float]:
    """`profile_emd` per profile column present in both drops (same number of steps), by name."""
    if current.profile is None or previous.profile is None:
        return {}
    if current.profile.shape[0] != previous.profile.shape[0]:
        return {}
    before = {name: i for i, name in enumerate(previous.profile_labels)}
    distances = {}
    for i, name in enumerate(current.profile_labels):
        if name in before:
            distance = profile_emd(current.profile[:, i], previous.profile[:, before[name]])
            if distance is not None:
                distances[name] = distance
    return distances


def compare_audits(
    current: AuditSummary, previous: AuditSummary, *, top_k: int = DEFAULT_TOP_K
) -> tuple[MethodComparison, ...]:
    """Comparisons for every method with per-feature values in both drops, in this drop's order."""
    comparisons = []
    for outcome in current.outcomes:
        now, before = outcome.importance, previous.importance(outcome.method)
        if now is not None and before is not None and now.has_values and before.has_values:
            comparisons.append(compare_importances(now, before, top_k=top_k))
    return tuple(comparisons)


def values_and_ranks(importance: Importance) -> dict[str, tuple[float, int]]:
    """(value, rank) of every feature, by name."""
    ranks = importance.ranks
    return {
        name: (float(importance.values[i]), int(ranks[i])) for i, name in enumerate(importance.feature_names)
    }


def _union_in_order(first: tuple[str, ...], second: tuple[str, ...]) -> list[str]:
    seen = dict.fromkeys(first)
    seen.update(dict.fromkeys(second))
    return list(seen)


def spearman(current: list[float], previous: list[float]) -> float | None:
    """Spearman's rho of two aligned lists; None with fewer than 3 values or a constant side."""
    if len(current) < 3 or np.ptp(current) == 0 or np.ptp(previous) == 0:
        return None
    rho = float(stats.spearmanr(current, previous).statistic)
    return None if math.isnan(rho) else rho


def _kendall(current: list[float], previous: list[float]) -> float | None:
    if len(current) < 3 or np.ptp(current) == 0 or np.ptp(previous) == 0:
        return None
    tau = float(stats.kendalltau(current, previous).statistic)
    return None if math.isnan(tau) else tau


def _top_k_overlap(current: Importance, previous: Importance, k: int) -> float | None:
    if k == 0:
        return None
    top_now = {current.feature_names[i] for i in np.argsort(current.ranks)[:k]}
    top_before = {previous.feature_names[i] for i in np.argsort(previous.ranks)[:k]}
    return len(top_now & top_before) / k
