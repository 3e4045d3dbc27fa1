"""Gather each section of the weekly report from stored results: what to show, in which order.

The sections of `reports.context.build_context`, one builder each. They choose the features and
figures to show and hand them to `reports.section_charts`, which draws each chart once; the
dataclasses they fill are declared in `reports.context_types`. Values stay raw numbers here; the
registered Jinja filters of `reports.render` format them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np

from audit.types import (
    CLARIFY_METHOD,
    CLARIFY_NDCG_THRESHOLD,
    AuditSummary,
    DriftAssessment,
    FeatureAssessment,
    FeatureChange,
    FeatureDrift,
    FeatureVerdict,
    FloatArray,
    Importance,
    ImportanceHistory,
    MethodComparison,
    MethodOutcome,
    MethodStatus,
)
from reports.context_types import (
    AdditivityCheck,
    AgreementRow,
    Chart,
    ClarifyCheck,
    ComparisonLine,
    FeatureRow,
    FrozenRow,
    FrozenSection,
    HistorySection,
    IntegratedGradientsCheck,
    MethodNotice,
    MethodSection,
    MoverRow,
    ProfileSection,
    RankChange,
    Timing,
    VerdictRow,
)
from reports.section_charts import (
    ChartNumbers,
    heatmap_chart,
    history_chart,
    importance_chart,
    lag_chart,
    slope_chart,
)

#: Slope chart: this week's and last week's top features (their union is drawn).
SLOPE_FEATURES = 12
#: Heat maps: rows (this week's most important features); lag profiles: panels.
HEATMAP_FEATURES = 20
#: ...plus up to this many of last week's top features that fell out of this week's.
HEATMAP_EXTRA = 5
LAG_FEATURES = 6
#: History small multiples: panels (features), and the weeks shown by default.
HISTORY_FEATURES = 8
HISTORY_WEEKS = 12
#: Frozen-set table: rows per method.
FROZEN_ROWS = 8
#: Method whose parameters carry the completeness check shown in the model facts.
IG_METHOD = "integrated_gradients"
#: Method whose parameters carry the additivity check shown in the model facts.
SHAP_METHOD = "gradient_shap"


def method_sections(
    current: AuditSummary,
    previous: AuditSummary | None,
    comparisons: Sequence[MethodComparison],
    assessment: DriftAssessment | None,
    numbers: ChartNumbers,
    *,
    top_n: int,
    movers: int,
) -> tuple[MethodSection, ...]:
    """One section per method with per-feature figures this week, in the order the methods ran."""
    by_method = {comparison.method: comparison for comparison in comparisons}
    return tuple(
        _method_section(
            importance,
            previous,
            by_method.get(importance.method),
            assessment,
            numbers,
            current_week=current.week,
            top_n=top_n,
            movers=movers,
        )
        for importance in _results(current)
    )


def history_sections(
    histories: Sequence[ImportanceHistory], numbers: ChartNumbers, *, history_weeks: int
) -> tuple[HistorySection, ...]:
    """One section per method with a history to draw, in the order of `histories`."""
    return tuple(
        section
        for entry in histories
        if (section := _history_section(entry, numbers, history_weeks=history_weeks)) is not None
    )


def comparison_lines(comparisons: Sequence[MethodComparison]) -> tuple[ComparisonLine, ...]:
    return tuple(_comparison_line(c) for c in comparisons)


def method_notices(summary: AuditSummary) -> tuple[MethodNotice, ...]:
    """The methods that were skipped or failed (no result to show), and why."""
    return tuple(
        MethodNotice(
            method=outcome.method,
            status=str(outcome.status),
            reason=outcome.reason or "no reason was recorded",
        )
        for outcome in summary.outcomes
        if not _has_result(outcome)
    )


def method_timings(summary: AuditSummary) -> tuple[Timing, ...]:
    return tuple(Timing(method=o.method, status=str(o.status), seconds=o.seconds) for o in summary.outcomes)


def integrated_gradients_check(summary: AuditSummary) -> IntegratedGradientsCheck | None:
    """The completeness figures integrated gradients stores in its parameters, if it ran."""
    return _ig_check(summary.importance(IG_METHOD))


def gradient_shap_check(summary: AuditSummary) -> AdditivityCheck | None:
    """The additivity gap GradientSHAP stores in its parameters, if it ran."""
    importance = summary.importance(SHAP_METHOD)
    if importance is None:
        return None
    number = _parameter_reader(importance)
    check = AdditivityCheck(
        median_relative_gap=number("additivity_median_rel_gap"),
        max_relative_gap=number("additivity_max_rel_gap"),
        n_draws=_whole(number("n_draws")),
        background_size=_whole(number("background_size")),
    )
    return None if check.median_relative_gap is None else check


def clarify_check(comparisons: Sequence[MethodComparison]) -> ClarifyCheck | None:
    """SageMaker Clarify's rule on this drop: the nDCG of GradientSHAP, when it was compared."""
    for comparison in comparisons:
        if comparison.method == CLARIFY_METHOD and comparison.comparable:
            return ClarifyCheck(ndcg=comparison.ndcg, threshold=CLARIFY_NDCG_THRESHOLD)
    return None


def _parameter_reader(importance: Importance) -> Callable[[str], float | None]:
    parameters = importance.parameters

    def number(key: str) -> float | None:
        value = parameters.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return number


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def rank_changes(
    current: Importance,
    previous: Importance,
    *,
    top: int,
    beyond_noise: frozenset[str] = frozenset(),
) -> tuple[RankChange, ...]:
    """The features in this week's or last week's top `top`, with both ranks, this week's order first.

    A feature missing from one week has None there. `beyond_noise` names the features the drift
    call flagged; they are marked (the slope chart highlights them).
    """
    if top < 1:
        raise ValueError(f"top must be at least 1 (features per slope chart), got {top}")
    now = _rank_by_name(current)
    before = _rank_by_name(previous)
    chosen = [name for name, rank in now.items() if rank <= top]
    chosen += [name for name, rank in before.items() if rank <= top and name not in chosen]

    def order(name: str) -> tuple[int, int]:
        rank = now.get(name)
        return (0, rank) if rank is not None else (1, before[name])

    return tuple(
        RankChange(name, before.get(name), now.get(name), name in beyond_noise)
        for name in sorted(chosen, key=order)
    )


def eval_note(summary: AuditSummary) -> str | None:
    """Why fewer rows were audited than the eval file holds (dropped NaN/inf rows, a capped sample)."""
    notes = []
    if summary.n_eval_rows_dropped:
        notes.append(f"{summary.n_eval_rows_dropped} rows with NaN/inf dropped")
    if summary.eval_sampling_seed is not None:
        seed = summary.eval_sampling_seed
        notes.append(f"sampled from {summary.n_eval_rows_in_file} rows (max_eval_samples, seed {seed})")
    return "; ".join(notes) or None


def _has_result(outcome: MethodOutcome) -> bool:
    return outcome.status == MethodStatus.OK and outcome.importance is not None


def _results(summary: AuditSummary) -> list[Importance]:
    """The per-feature importances of the methods that succeeded, in the order they ran.

    Profile-only results (Grad-CAM) have no per-feature values to chart here.
    """
    return [
        o.importance
        for o in summary.outcomes
        if _has_result(o) and o.importance is not None and o.importance.has_values
    ]


def _comparison_line(comparison: MethodComparison) -> ComparisonLine:
    """Headline figures; the stored top-k overlap is a share of k, shown as a count."""
    overlap = comparison.top_k_overlap
    return ComparisonLine(
        method=comparison.method,
        spearman=comparison.spearman,
        top_k=comparison.top_k,
        top_k_shared=None if overlap is None else round(overlap * comparison.top_k),
        kendall=comparison.kendall,
        ndcg=comparison.ndcg,
        profile_distance=comparison.profile_distance,
        method_version=comparison.method_version,
        previous_method_version=comparison.previous_method_version,
        clarify=comparison.method == CLARIFY_METHOD,
    )


def agreement_rows(assessment: DriftAssessment) -> tuple[AgreementRow, ...]:
    """Pairs of methods, least agreeing first (a long table is cut in the email: keep the news)."""
    rows = [AgreementRow(a.method, a.other_method, a.spearman) for a in assessment.agreement]
    return tuple(sorted(rows, key=lambda row: math.inf if row.spearman is None else row.spearman))


def verdict_rows(assessment: DriftAssessment) -> tuple[VerdictRow, ...]:
    """Features that changed, were added or removed, then those flagged by one method only."""
    rows = []
    for feature in assessment.features:
        weak = feature.verdict is FeatureVerdict.STABLE and bool(feature.methods_flagged)
        if feature.verdict is FeatureVerdict.STABLE and not weak:
            continue
        strongest = (
            assessment.drift(feature.methods_flagged[0], feature.feature) if feature.methods_flagged else None
        )
        rows.append(_verdict_row(feature, strongest, "weak" if weak else feature.verdict.value))
    return tuple(rows)


def _verdict_row(feature: FeatureAssessment, drift: FeatureDrift | None, verdict: str) -> VerdictRow:
    value_moved = drift is not None and drift.value_changed
    return VerdictRow(
        feature=feature.feature,
        verdict=verdict,
        agreement=feature.agreement,
        n_methods=feature.n_methods,
        method=None if drift is None else drift.method,
        relative_change=_own_change(drift) if drift is not None and value_moved else None,
        band=_band_text(drift) if drift is not None and value_moved else None,
        profile_distance=None if drift is None or value_moved else drift.profile_distance,
        profile_band=None if drift is None or value_moved else drift.profile_band,
        cause=None if feature.cause is None else feature.cause.value,
        reason=feature.reason,
    )


def _flagged(assessment: DriftAssessment | None, method: str) -> frozenset[str]:
    """Features this method's drift call marks "changed" (beyond noise, in value or time profile)."""
    if assessment is None:
        return frozenset()
    return frozenset(
        d.feature for d in assessment.drifts if d.method == method and d.verdict is FeatureVerdict.CHANGED
    )


def _method_section(
    importance: Importance,
    previous: AuditSummary | None,
    comparison: MethodComparison | None,
    assessment: DriftAssessment | None,
    numbers: ChartNumbers,
    *,
    current_week: dt.date,
    top_n: int,
    movers: int,
) -> MethodSection:
    previous_importance = None if previous is None else previous.importance(importance.method)
    if previous_importance is not None and not previous_importance.has_values:
        previous_importance = None
    previous_note = None
    if previous_importance is not None and previous_importance.method_version != importance.method_version:
        previous_note = _version_note(importance, previous_importance)
        previous_importance = None
    if comparison is not None and not comparison.comparable:
        comparison = None
    signs = _signs(importance)
    previous_week = None if previous is None or previous_importance is None else previous.week
    ranks = importance.ranks
    order = sorted(range(len(importance.feature_names)), key=lambda i: int(ranks[i]))
    previous_ranks = _rank_by_name(previous_importance)
    n_features = len(order)
    n_charted = min(top_n, n_features)
    current_names = set(importance.feature_names)
    chart = importance_chart(
        numbers,
        importance,
        previous_importance,
        top_n=top_n,
        charted_names=[importance.feature_names[i] for i in order[:n_charted]],
        current_week=current_week,
        previous_week=previous_week,
    )
    slope, n_beyond = None, 0
    if previous_importance is not None and previous_week is not None:
        slope, n_beyond = _slope_chart(importance, previous_importance, assessment, numbers, previous_week)
    return MethodSection(
        method=importance.method,
        chart=chart,
        n_features=n_features,
        n_charted=n_charted,
        n_more=n_features - n_charted,
        has_previous=previous_importance is not None,
        compared=comparison is not None,
        movers=()
        if comparison is None
        else tuple(
            dataclasses.replace(
                _mover_row(c, None if assessment is None else assessment.drift(importance.method, c.feature)),
                sign=signs.get(c.feature),
            )
            for c in comparison.biggest_movers[:movers]
        ),
        rest=tuple(
            FeatureRow(
                feature=importance.feature_names[i],
                rank=int(ranks[i]),
                value=float(importance.values[i]),
                previous_rank=previous_ranks.get(importance.feature_names[i]),
                sign=signs.get(importance.feature_names[i]),
            )
            for i in order[n_charted:]
        ),
        added=()
        if previous_importance is None
        else tuple(name for name in importance.feature_names if name not in previous_ranks),
        removed=tuple(name for name in previous_ranks if name not in current_names),
        slope=slope,
        n_slope_beyond=n_beyond,
        previous_note=previous_note,
        has_direction=bool(signs),
    )


def _version_note(importance: Importance, previous: Importance) -> str:
    return (
        f"last week's {importance.method} figures are of method version {previous.method_version} "
        f"and this week's of version {importance.method_version} (its definition changed): they are "
        "not comparable, and only this week is drawn"
    )


def _signs(importance: Importance) -> dict[str, str]:
    """ "+" or "−" per feature from the method's direction (saliency's signed mean gradient)."""
    if importance.direction is None:
        return {}
    return {
        name: ("+" if value > 0 else "−" if value < 0 else "0")
        for name, value in zip(importance.feature_names, importance.direction, strict=True)
        if math.isfinite(value)
    }


def _slope_chart(
    importance: Importance,
    previous: Importance,
    assessment: DriftAssessment | None,
    numbers: ChartNumbers,
    previous_week: dt.date,
) -> tuple[Chart, int]:
    """The slope chart of the method's top features, and how many of them moved beyond noise."""
    changes = rank_changes(
        importance, previous, top=SLOPE_FEATURES, beyond_noise=_flagged(assessment, importance.method)
    )
    chart = slope_chart(numbers, importance.method, changes, top=SLOPE_FEATURES, previous_week=previous_week)
    return chart, sum(1 for c in changes if c.beyond_noise)


def profile_sections(
    current: AuditSummary, previous: AuditSummary | None, numbers: ChartNumbers
) -> tuple[ProfileSection, ...]:
    """Every successful method with a time profile (sequence models), in the order they ran."""
    sections = []
    for outcome in current.outcomes:
        importance = outcome.importance
        if not _has_result(outcome) or importance is None or importance.profile is None:
            continue
        before = None if previous is None else previous.importance(importance.method)
        previous_profile, note = None, None
        if before is not None and before.method_version != importance.method_version:
            note = _version_note(importance, before)
        elif before is not None and before.profile is not None:
            if before.profile.shape[0] == importance.profile.shape[0]:
                previous_profile = before
            else:
                note = (
                    f"last week's profile has {before.profile.shape[0]} steps and this week's "
                    f"{importance.profile.shape[0]}: only this week is drawn"
                )
        sections.append(_profile_section(importance, previous_profile, numbers, previous_note=note))

    return tuple(sections)


def _profile_section(
    importance: Importance, previous: Importance | None, numbers: ChartNumbers, *, previous_note: str | None
) -> ProfileSection:
    if importance.profile is None:
        raise ValueError(f"{importance.method}: no time profile to draw")
    labels = _profile_order(importance)
    n_extra = 0
    if previous is not None:
        # last week's top features too: a feature that collapsed this week is the one to see
        top = labels[:HEATMAP_FEATURES]
        extra = [
            name for name in _profile_order(previous)[:HEATMAP_FEATURES] if name in labels and name not in top
        ][:HEATMAP_EXTRA]
        n_extra = len(extra)
        labels = top + extra + [name for name in labels if name not in top and name not in extra]
    n_steps = int(importance.profile.shape[0])
    method = importance.method
    heatmap = None
    if len(importance.profile_labels) > 1:
        shown = labels[: HEATMAP_FEATURES + n_extra]
        heatmap = heatmap_chart(
            numbers,
            method,
            shown,
            _profile_columns(importance, shown),
            None if previous is None else _profile_columns(previous, shown),
        )
    lagged = labels[:LAG_FEATURES]
    lags = lag_chart(
        numbers,
        method,
        lagged,
        _profile_columns(importance, lagged),
        None if previous is None else _profile_columns(previous, lagged),
        whole_input=importance.profile_features is not None,
    )
    return ProfileSection(
        method=method,
        n_steps=n_steps,
        n_shown=min(HEATMAP_FEATURES + n_extra, len(labels)),
        n_features=len(labels),
        heatmap=heatmap,
        lags=lags,
        has_previous=previous is not None,
        previous_note=previous_note,
    )


def _profile_order(importance: Importance) -> list[str]:
    """Profile columns, most important first: by the method's values, else by the profile's mass."""
    labels = list(importance.profile_labels)
    if importance.profile_features is None and importance.has_values:
        ranks = importance.ranks
        return [labels[i] for i in np.argsort(ranks, kind="stable")]
    if importance.profile is None:
        return labels
    mass = np.nansum(np.abs(importance.profile), axis=0)
    return [labels[i] for i in np.argsort(-mass, kind="stable")]


def _profile_columns(importance: Importance, labels: Sequence[str]) -> FloatArray:
    """(n_steps, len(labels)) columns of the profile in the order of `labels`; NaN where missing."""
    if importance.profile is None:
        raise ValueError(f"{importance.method}: no time profile")
    index = {label: j for j, label in enumerate(importance.profile_labels)}
    columns = np.full((importance.profile.shape[0], len(labels)), np.nan)
    for j, label in enumerate(labels):
        if label in index:
            columns[:, j] = importance.profile[:, index[label]]
    return columns


def _history_section(
    history: ImportanceHistory, numbers: ChartNumbers, *, history_weeks: int
) -> HistorySection | None:
    """The last `history_weeks` weeks of the features with the largest latest figure (in magnitude)."""
    weeks = history.weeks[-history_weeks:]
    values = history.values[-history_weeks:, :]
    if not weeks or not history.feature_names:
        return None
    latest = np.full(values.shape[1], -np.inf)
    for j in range(values.shape[1]):
        finite = values[np.isfinite(values[:, j]), j]
        if finite.size:
            latest[j] = abs(finite[-1])  # signed methods (saliency) rank by magnitude
    keep = [int(j) for j in np.argsort(-latest, kind="stable")[:HISTORY_FEATURES] if np.isfinite(latest[j])]
    if not keep:
        return None
    names = [history.feature_names[j] for j in keep]
    shown = values[:, keep]
    chart = history_chart(numbers, history.method, names, weeks, shown)
    return HistorySection(
        method=history.method,
        chart=chart,
        n_weeks=len(weeks),
        first_week=weeks[0],
        last_week=weeks[-1],
        n_features=len(names),
        n_gaps=int(np.sum(~np.isfinite(shown).any(axis=1))),
    )


def frozen_sections(
    current: AuditSummary, previous: AuditSummary | None, assessment: DriftAssessment | None
) -> tuple[FrozenSection, ...]:
    """The previous model on the previous data, on this week's data, and this model on this data.

    One table per verdict method (every method with a frozen figure when there is no assessment);
    changed features first, then this week's most important, `FROZEN_ROWS` rows at most.
    """
    if current.frozen is None or previous is None:
        return ()
    methods = (
        list(assessment.verdict_methods)
        if assessment is not None
        else [importance.method for importance in current.frozen.importances]
    )
    sections = []
    for method in methods:
        now, before, frozen = (
            current.importance(method),
            previous.importance(method),
            current.frozen.importance(method),
        )
        if now is None or before is None or frozen is None or not now.has_values:
            continue
        if len({now.method_version, before.method_version, frozen.method_version}) > 1:
            continue  # figures of two definitions of the method are never set side by side
        causes = {}
        if assessment is not None:
            causes = {
                d.feature: d
                for d in assessment.drifts
                if d.method == method and d.verdict is FeatureVerdict.CHANGED
            }
        by_rank = [now.feature_names[i] for i in np.argsort(now.ranks, kind="stable")]
        chosen = [name for name in by_rank if name in causes]
        chosen += [name for name in by_rank if name not in causes]
        values_before, values_frozen, values_now = _values(before), _values(frozen), _values(now)
        rows = tuple(
            FrozenRow(
                feature=name,
                previous_model_previous_data=values_before.get(name),
                previous_model_this_data=values_frozen.get(name),
                this_model_this_data=values_now.get(name),
                cause=None if name not in causes or causes[name].cause is None else str(causes[name].cause),
                changed=name in causes,
            )
            for name in chosen[:FROZEN_ROWS]
        )
        sections.append(FrozenSection(method=method, rows=rows, n_features=len(by_rank)))
    return tuple(sections)


def _values(importance: Importance) -> dict[str, float]:
    return {name: float(v) for name, v in zip(importance.feature_names, importance.values, strict=True)}


def _ig_check(importance: Importance | None) -> IntegratedGradientsCheck | None:
    """The completeness figures integrated gradients stores in its parameters, if it ran."""
    if importance is None:
        return None
    parameters = importance.parameters

    def number(key: str) -> float | None:
        value = parameters.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def whole(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    check = IntegratedGradientsCheck(
        median_relative_delta=number("completeness_median_rel_delta"),
        max_relative_delta=number("completeness_max_rel_delta"),
        steps=whole("steps"),
        steps_requested=whole("steps_requested"),
    )
    return None if check.median_relative_delta is None and check.steps is None else check


def _rank_by_name(importance: Importance | None) -> dict[str, int]:
    if importance is None:
        return {}
    return {name: int(rank) for name, rank in zip(importance.feature_names, importance.ranks, strict=True)}


def _mover_row(change: FeatureChange, drift: FeatureDrift | None) -> MoverRow:
    rank_change = change.rank_change
    if rank_change is None:
        direction = ""
    elif rank_change > 0:
        direction = "up"
    elif rank_change < 0:
        direction = "down"
    else:
        direction = "same"
    return MoverRow(
        feature=change.feature,
        previous_value=change.previous_value,
        value=change.value,
        delta=change.delta,
        # the feature's own change; its band (with a drift call) is said on the same change
        relative_change=_own_change(drift) if drift is not None else change.relative_change,
        previous_rank=change.previous_rank,
        rank=change.rank,
        rank_change=rank_change,
        direction=direction,
        band=None if drift is None else _band_text(drift),
        beyond_noise=drift is not None and drift.value_changed,
    )


def _own_change(drift: FeatureDrift) -> float | None:
    """The feature's own change (value / previous - 1), or the centred one where that is unknown."""
    return drift.plain_change if drift.plain_change is not None else drift.relative


def _band_text(drift: FeatureDrift) -> str | None:
    """The noise band said on the feature's own change ("-30% to +35%": the method's median change
    this week folded in); the centred band where the feature has no plain band."""
    if drift.plain_band is not None and drift.plain_change is not None:
        return drift.plain_band.describe()
    return None if drift.band is None or drift.plain_change is not None else drift.band.describe()
