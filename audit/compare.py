"""Compare one drop's importances with the previous drop's, method by method.

Features are aligned by name, so added, removed and reordered features are handled: a feature
present on one side only gets a `FeatureChange` with the other side empty. Rank statistics use the
features both drops share.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from audit.types import AuditSummary, FeatureChange, Importance, MethodComparison

DEFAULT_TOP_K = 5


def compare_importances(
    current: Importance, previous: Importance, *, top_k: int = DEFAULT_TOP_K
) -> MethodComparison:
    """Per-feature change, rank change, Spearman rank correlation and top-k overlap.

    Spearman's rho is computed on the values of the features present in both drops (None with
    fewer than 3 shared features or a constant side). Top-k overlap is the share of this drop's k
    highest-ranked features that were also among the previous drop's k highest.
    """
    if current.method != previous.method:
        raise ValueError(f"cannot compare {current.method} with {previous.method}")
    now = _by_name(current)
    before = _by_name(previous)
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
    return MethodComparison(
        method=current.method,
        spearman=_spearman([now[n][0] for n in shared], [before[n][0] for n in shared]),
        top_k=k,
        top_k_overlap=_top_k_overlap(current, previous, k),
        changes=changes,
    )


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


def _by_name(importance: Importance) -> dict[str, tuple[float, int]]:
    ranks = importance.ranks
    return {
        name: (float(importance.values[i]), int(ranks[i])) for i, name in enumerate(importance.feature_names)
    }


def _union_in_order(first: tuple[str, ...], second: tuple[str, ...]) -> list[str]:
    seen = dict.fromkeys(first)
    seen.update(dict.fromkeys(second))
    return list(seen)


def _spearman(current: list[float], previous: list[float]) -> float | None:
    if len(current) < 3 or np.ptp(current) == 0 or np.ptp(previous) == 0:
        return None
    rho = float(stats.spearmanr(current, previous).statistic)
    return None if math.isnan(rho) else rho


def _top_k_overlap(current: Importance, previous: Importance, k: int) -> float | None:
    if k == 0:
        return None
    top_now = {current.feature_names[i] for i in np.argsort(current.ranks)[:k]}
    top_before = {previous.feature_names[i] for i in np.argsort(previous.ranks)[:k]}
    return len(top_now & top_before) / k
